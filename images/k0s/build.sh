#!/usr/bin/env bash
# Build the k0s base ClusterImage on a connected machine:
#   images/k0s/build.sh [--version v1.30.5+k0s.0] [--registry-version 2.8.3] [--arch amd64|arm64]
#                       [--mirror URL] [--tag NAME] [--extra-bin DIR] [--lb] [--vip] [--sealer CMD] [-- BUILD-FLAGS...]
# Fetches the official k0s release files (binary, sha256sums.txt, airgap-images-list.txt) and the
# distribution registry release (tarball + checksums), verifies every checksum, then runs
# `sealer build`, which also pulls every image of the air-gap list into the image's registry/.
# --mirror URL replaces https://github.com for both downloads (same paths below it).
# --extra-bin DIR adds the executables in DIR to bin/ (e.g. containerd for a stand-in k0s).
# --lb bundles this machine's haproxy (apt-get install haproxy) with the shared libraries it needs
#      beyond glibc into bin/ and lib/haproxy/: the node-local API load balancer of HA clusters.
# --vip bundles this machine's keepalived the same way: the API VIP (Clusterfile env APIServerVIP).
# Flags after -- go to `sealer build` (e.g. -- --insecure for a plain-HTTP registry in the image list).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

version=v1.30.5+k0s.0
registry_version=2.8.3
arch=$(uname -m); case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
base=https://github.com
tag=""
extra_bin=""
with_lb=0
with_vip=0
sealer=${SEALER:-sealer}

die() { echo "build.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --registry-version) registry_version=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --mirror) base=${2%/}; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --extra-bin) extra_bin=$2; shift 2 ;;
    --lb) with_lb=1; shift ;;
    --vip) with_vip=1; shift ;;
    --sealer) sealer=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
case "$arch" in amd64|arm64) ;; *) die "unsupported --arch $arch (amd64 or arm64)" ;; esac
[ -n "$tag" ] || tag="sealerio/k0s:${version//+/-}"
command -v curl >/dev/null || die "curl is needed"
command -v sha256sum >/dev/null || die "sha256sum is needed"

ctx=$(mktemp -d "${TMPDIR:-/tmp}/sealer-k0s-build.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin" "$ctx/lib" "$ctx/manifests" "$ctx/dl"

fetch() {  # fetch URL FILE
  echo "build.sh: fetching $1" >&2
  curl -fsSL --retry 3 -o "$2" "$1" || die "download failed: $1"
}
verify() {  # verify FILE NAME-IN-SUMS SUMS-FILE
  local want got
  want=$(awk -v n="$2" '$2 == n || $2 == "*" n {print $1; exit}' "$3")
  [ -n "$want" ] || die "$2 is not listed in $(basename "$3")"
  got=$(sha256sum "$1" | awk '{print $1}')
  [ "$want" = "$got" ] || die "checksum mismatch for $2: expected $want, got $got"
  echo "build.sh: $2 sha256 ok" >&2
}

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
grep -v '^[[:space:]]*\(#\|$\)' "$ctx/dl/$images_name" > "$ctx/manifests/imageList" || true

# the registry (CNCF distribution) that serves registry/ on master0
reg_url="$base/distribution/distribution/releases/download/v$registry_version"
reg_tgz="registry_${registry_version}_linux_${arch}.tar.gz"
fetch "$reg_url/$reg_tgz" "$ctx/dl/$reg_tgz"
fetch "$reg_url/registry_${registry_version}_checksums.txt" "$ctx/dl/checksums.txt"
verify "$ctx/dl/$reg_tgz" "$reg_tgz" "$ctx/dl/checksums.txt"
tar -xzf "$ctx/dl/$reg_tgz" -C "$ctx/dl" registry || die "$reg_tgz has no registry binary"
install -m 0755 "$ctx/dl/registry" "$ctx/bin/registry"

if [ "$with_lb" = 1 ]; then
  "$here/bundle-tool.sh" "$ctx" haproxy || die "could not bundle haproxy"
fi
if [ "$with_vip" = 1 ]; then
  "$here/bundle-tool.sh" "$ctx" keepalived || die "could not bundle keepalived"
fi
if [ -n "$extra_bin" ]; then
  for f in "$extra_bin"/*; do [ -f "$f" ] && install -m 0755 "$f" "$ctx/bin/"; done
fi
cp "$here/Kubefile" "$ctx/Kubefile"
cp -r "$here/etc" "$ctx/etc"
touch "$ctx/lib/.keep"
rm -rf "$ctx/dl"

"$sealer" build -t "$tag" --platform "linux/$arch" \
  --build-arg "K0S_VERSION=$version" --build-arg "REGISTRY_VERSION=$registry_version" "$@" "$ctx"
echo "build.sh: built $tag (k0s $version, registry $registry_version, linux/$arch)"
