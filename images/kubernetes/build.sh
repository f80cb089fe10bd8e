#!/usr/bin/env bash
# Build the kubernetes (kubeadm) base ClusterImage on a connected machine:
#   images/kubernetes/build.sh [--version v1.31.2] [--containerd-version 1.7.22] [--runc-version 1.1.14]
#       [--registry-version 2.8.3] [--arch amd64|arm64] [--mirror URL] [--k8s-mirror URL] [--tag NAME]
#       [--images FILE] [--extra-bin DIR] [--lb] [--vip] [--sealer CMD] [-- BUILD-FLAGS...]
# Fetches kubeadm/kubelet/kubectl from dl.k8s.io (each with its .sha256), containerd and runc from
# their GitHub releases, the distribution registry release; verifies every checksum; lists the
# control-plane images with `kubeadm config images list` (or takes --images FILE), then runs
# `sealer build`, which pulls every listed image into the image's registry/.
# --mirror URL replaces https://github.com, --k8s-mirror URL replaces https://dl.k8s.io.
# --lb bundles this machine's haproxy (apt-get install haproxy) with its libraries (node-local LB).
# --vip bundles this machine's keepalived the same way: the API VIP (Clusterfile env APIServerVIP).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

version=v1.31.2
containerd_version=1.7.22
runc_version=1.1.14
registry_version=2.8.3
arch=$(uname -m); case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
base=https://github.com
k8s_base=https://dl.k8s.io
tag=""
images=""
extra_bin=""
with_lb=0
with_vip=0
sealer=${SEALER:-sealer}

die() { echo "build.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --containerd-version) containerd_version=$2; shift 2 ;;
    --runc-version) runc_version=$2; shift 2 ;;
    --registry-version) registry_version=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --mirror) base=${2%/}; shift 2 ;;
    --k8s-mirror) k8s_base=${2%/}; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --images) images=$2; shift 2 ;;
    --extra-bin) extra_bin=$2; shift 2 ;;
    --lb) with_lb=1; shift ;;
    --vip) with_vip=1; shift ;;
    --sealer) sealer=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
case "$arch" in amd64|arm64) ;; *) die "unsupported --arch $arch (amd64 or arm64)" ;; esac
[ -n "$tag" ] || tag="sealerio/kubernetes:$version"
command -v curl >/dev/null || die "curl is needed"
command -v sha256sum >/dev/null || die "sha256sum is needed"

ctx=$(mktemp -d "${TMPDIR:-/tmp}/sealer-kubernetes-build.XXXXXX")
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
verify_bare() {  # verify FILE SHA256-FILE (dl.k8s.io's .sha256 holds only the digest)
  local want got
  want=$(awk '{print $1; exit}' "$2")
  got=$(sha256sum "$1" | awk '{print $1}')
  [ "$want" = "$got" ] || die "checksum mismatch for $(basename "$1"): expected $want, got $got"
  echo "build.sh: $(basename "$1") sha256 ok" >&2
}

for b in kubeadm kubelet kubectl; do
  url="$k8s_base/release/$version/bin/linux/$arch/$b"
  fetch "$url" "$ctx/dl/$b"
  fetch "$url.sha256" "$ctx/dl/$b.sha256"
  verify_bare "$ctx/dl/$b" "$ctx/dl/$b.sha256"
  install -m 0755 "$ctx/dl/$b" "$ctx/bin/$b"
done

# containerd (bin/containerd, containerd-shim-runc-v2, ctr) and runc
ctd="containerd-$containerd_version-linux-$arch.tar.gz"
ctd_url="$base/containerd/containerd/releases/download/v$containerd_version"
fetch "$ctd_url/$ctd" "$ctx/dl/$ctd"
fetch "$ctd_url/$ctd.sha256sum" "$ctx/dl/$ctd.sha256sum"
verify "$ctx/dl/$ctd" "$ctd" "$ctx/dl/$ctd.sha256sum"
tar -xzf "$ctx/dl/$ctd" -C "$ctx/dl" bin/containerd bin/containerd-shim-runc-v2 bin/ctr \
  || die "$ctd lacks containerd, containerd-shim-runc-v2 or ctr"
install -m 0755 "$ctx/dl/bin/containerd" "$ctx/dl/bin/containerd-shim-runc-v2" "$ctx/dl/bin/ctr" "$ctx/bin/"
runc_url="$base/opencontainers/runc/releases/download/v$runc_version"
fetch "$runc_url/runc.$arch" "$ctx/dl/runc.$arch"
fetch "$runc_url/runc.sha256sum" "$ctx/dl/runc.sha256sum"
verify "$ctx/dl/runc.$arch" "runc.$arch" "$ctx/dl/runc.sha256sum"
install -m 0755 "$ctx/dl/runc.$arch" "$ctx/bin/runc"

# the control-plane images kubeadm will ask the private registry for
if [ -n "$images" ]; then
  grep -v '^[[:space:]]*\(#\|$\)' "$images" > "$ctx/manifests/imageList" || true
else
  "$ctx/bin/kubeadm" config images list --kubernetes-version "$version" > "$ctx/manifests/imageList" \
    || die "kubeadm config images list failed (give --images FILE, or build on a $arch machine)"
fi

# the registry (CNCF distribution) that serves registry/ on master0
reg_url="$base/distribution/distribution/releases/download/v$registry_version"
reg_tgz="registry_${registry_version}_linux_${arch}.tar.gz"
fetch "$reg_url/$reg_tgz" "$ctx/dl/$reg_tgz"
fetch "$reg_url/registry_${registry_version}_checksums.txt" "$ctx/dl/checksums.txt"
verify "$ctx/dl/$reg_tgz" "$reg_tgz" "$ctx/dl/checksums.txt"
tar -xzf "$ctx/dl/$reg_tgz" -C "$ctx/dl" registry || die "$reg_tgz has no registry binary"
install -m 0755 "$ctx/dl/registry" "$ctx/bin/registry"

if [ "$with_lb" = 1 ]; then
  "$here/../k0s/bundle-tool.sh" "$ctx" haproxy || die "could not bundle haproxy"
fi
if [ "$with_vip" = 1 ]; then
  "$here/../k0s/bundle-tool.sh" "$ctx" keepalived || die "could not bundle keepalived"
fi
if [ -n "$extra_bin" ]; then
  for f in "$extra_bin"/*; do [ -f "$f" ] && install -m 0755 "$f" "$ctx/bin/"; done
fi
cp "$here/Kubefile" "$ctx/Kubefile"
cp -r "$here/etc" "$ctx/etc"
touch "$ctx/lib/.keep"
rm -rf "$ctx/dl"

"$sealer" build -t "$tag" --platform "linux/$arch" --build-arg "KUBE_VERSION=$version" \
  --build-arg "CONTAINERD_VERSION=$containerd_version" --build-arg "REGISTRY_VERSION=$registry_version" \
  "$@" "$ctx"
echo "build.sh: built $tag (kubernetes $version, containerd $containerd_version, linux/$arch)"
