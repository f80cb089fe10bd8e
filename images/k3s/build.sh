#!/usr/bin/env bash
# Build the k3s base ClusterImage on a connected machine:
#   images/k3s/build.sh [--version v1.30.6+k3s1] [--registry-version 2.8.3] [--arch amd64|arm64]
#                       [--mirror URL] [--tag NAME] [--extra-bin DIR] [--no-lb] [--vip] [--sealer CMD] [-- BUILD-FLAGS...]
# Fetches the official k3s release files (binary, sha256sum-<arch>.txt, k3s-images.txt air-gap list)
# and the distribution registry release (tarball + checksums), verifies every checksum, then runs
# `sealer build`, which also pulls every image of the air-gap list into the image's registry/.
# --mirror URL replaces https://github.com for both downloads (same paths below it).
# --extra-bin DIR adds the executables in DIR to bin/ (e.g. a containerd for k3s builds without one).
# haproxy from this machine (apt-get install haproxy) is bundled with the shared libraries it needs
#      beyond glibc into bin/ and lib/haproxy/: the node-local API balancer every worker runs by
#      default; --no-lb leaves it out (clusters then need APIServerLB=none or haproxy on the hosts).
# --vip bundles this machine's keepalived the same way: the API VIP (Clusterfile env APIServerVIP).
# Flags after -- go to `sealer build` (e.g. -- --insecure for a plain-HTTP registry in the image list).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"

version=v1.30.6+k3s1
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) common_arg "$@"; shift "$consumed" ;;
  esac
done
[ -n "$tag" ] || tag="sealerio/k3s:${version//+/-}"
new_context k3s

# k3s: the release tag's '+' must be escaped in URLs
k3s_url="$base/k3s-io/k3s/releases/download/${version//+/%2B}"
k3s_name=k3s; [ "$arch" = amd64 ] || k3s_name="k3s-$arch"
fetch "$k3s_url/$k3s_name" "$ctx/dl/$k3s_name"
fetch "$k3s_url/sha256sum-$arch.txt" "$ctx/dl/sha256sum-$arch.txt"
verify "$ctx/dl/$k3s_name" "$k3s_name" "$ctx/dl/sha256sum-$arch.txt"
install -m 0755 "$ctx/dl/$k3s_name" "$ctx/bin/k3s"
images_name=k3s-images.txt
fetch "$k3s_url/$images_name" "$ctx/dl/$images_name"
verify "$ctx/dl/$images_name" "$images_name" "$ctx/dl/sha256sum-$arch.txt"
image_list "$ctx/dl/$images_name"

fetch_registry
finish_context "$here"

"$sealer" build -t "$tag" --platform "linux/$arch" \
  --build-arg "K3S_VERSION=$version" --build-arg "REGISTRY_VERSION=$registry_version" "$@" "$ctx"
echo "build.sh: built $tag (k3s $version, registry $registry_version, linux/$arch)"
