#!/usr/bin/env bash
# Build the k0s base ClusterImage on a connected machine:
#   images/k0s/build.sh [--version v1.30.5+k0s.0] [--registry-version 2.8.3] [--arch amd64|arm64]
#                       [--mirror URL] [--tag NAME] [--extra-bin DIR] [--no-lb] [--vip] [--sealer CMD] [-- BUILD-FLAGS...]
# Fetches the official k0s release files (binary, sha256sums.txt, airgap-images-list.txt) and the
# distribution registry release (tarball + checksums), verifies every checksum, then runs
# `sealer build`, which also pulls every image of the air-gap list into the image's registry/.
# --mirror URL replaces https://github.com for both downloads (same paths below it).
# --extra-bin DIR adds the executables in DIR to bin/ (e.g. containerd for a stand-in k0s).
# haproxy from this machine (apt-get install haproxy) is bundled with the shared libraries it needs
#      beyond glibc into bin/ and lib/haproxy/: the node-local API balancer every worker runs by
#      default; --no-lb leaves it out (clusters then need APIServerLB=none or haproxy on the hosts).
# --vip bundles this machine's keepalived the same way: the API VIP (Clusterfile env APIServerVIP).
# Flags after -- go to `sealer build` (e.g. -- --insecure for a plain-HTTP registry in the image list).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"

version=v1.30.5+k0s.0
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) common_arg "$@"; shift "$consumed" ;;
  esac
done
[ -n "$tag" ] || tag="sealerio/k0s:${version//+/-}"
new_context k0s

# k0s: the release tag's '+' must be escaped in URLs
k0s_url="$base/k0sproject/k0s/releases/download/${version//+/%2B}"
k0s_name="k0s-$version-$arch"
fetch "$k0s_url/$k0s_name" "$ctx/dl/$k0s_name"
fetch "$k0s_url/sha256sums.txt" "$ctx/dl/sha256sums.txt"
verify "$ctx/dl/$k0s_name" "$k0s_name" "$ctx/dl/sha256sums.txt"
install -m 0755 "$ctx/dl/$k0s_name" "$ctx/bin/k0s"
images_name=airgap-images-list.txt
fetch "$k0s_url/$images_name" "$ctx/dl/$images_name"
verify "$ctx/dl/$images_name" "$images_name" "$ctx/dl/sha256sums.txt"
image_list "$ctx/dl/$images_name"

fetch_registry
finish_context "$here"

"$sealer" build -t "$tag" --platform "linux/$arch" \
  --build-arg "K0S_VERSION=$version" --build-arg "REGISTRY_VERSION=$registry_version" "$@" "$ctx"
echo "build.sh: built $tag (k0s $version, registry $registry_version, linux/$arch)"
