#!/usr/bin/env bash
# Build the kubernetes (kubeadm) base ClusterImage on a connected machine:
#   images/kubernetes/build.sh [--version v1.31.2] [--containerd-version 1.7.22] [--runc-version 1.1.14]
#       [--registry-version 2.8.3] [--etcd-version 3.5.15] [--arch amd64|arm64] [--mirror URL]
#       [--k8s-mirror URL] [--tag NAME] [--images FILE] [--extra-bin DIR] [--no-lb] [--vip] [--sealer CMD]
#       [-- BUILD-FLAGS...]
# Fetches kubeadm/kubelet/kubectl from dl.k8s.io (each with its .sha256), containerd and runc from
# their GitHub releases, etcdctl/etcdutl from the etcd release (`sealer etcd backup|restore`), the
# distribution registry release; verifies every checksum; lists the
# control-plane images with `kubeadm config images list` (or takes --images FILE), then runs
# `sealer build`, which pulls every listed image into the image's registry/.
# --mirror URL replaces https://github.com, --k8s-mirror URL replaces https://dl.k8s.io.
# haproxy from this machine is bundled with its libraries (the node-local API balancer every worker
#   runs by default); --no-lb leaves it out (clusters then need APIServerLB=none or hosts with haproxy).
# --vip bundles this machine's keepalived the same way: the API VIP (Clusterfile env APIServerVIP).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"

version=v1.31.2
containerd_version=1.7.22
runc_version=1.1.14
etcd_version=3.5.15  # the etcd kubeadm v1.31 runs; its etcdctl/etcdutl back up and restore it
k8s_base=https://dl.k8s.io
images=""
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --containerd-version) containerd_version=$2; shift 2 ;;
    --runc-version) runc_version=$2; shift 2 ;;
    --etcd-version) etcd_version=${2#v}; shift 2 ;;
    --k8s-mirror) k8s_base=${2%/}; shift 2 ;;
    --images) images=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) common_arg "$@"; shift "$consumed" ;;
  esac
done
[ -n "$tag" ] || tag="sealerio/kubernetes:$version"
new_context kubernetes

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

# etcdctl and etcdutl (sealer etcd backup / restore of the stacked etcd), from etcd's release
etcd_dir="etcd-v$etcd_version-linux-$arch"
etcd_url="$base/etcd-io/etcd/releases/download/v$etcd_version"
fetch "$etcd_url/$etcd_dir.tar.gz" "$ctx/dl/$etcd_dir.tar.gz"
fetch "$etcd_url/SHA256SUMS" "$ctx/dl/etcd-SHA256SUMS"
verify "$ctx/dl/$etcd_dir.tar.gz" "$etcd_dir.tar.gz" "$ctx/dl/etcd-SHA256SUMS"
tar -xzf "$ctx/dl/$etcd_dir.tar.gz" -C "$ctx/dl" "$etcd_dir/etcdctl" "$etcd_dir/etcdutl" \
  || die "$etcd_dir.tar.gz lacks etcdctl or etcdutl"
install -m 0755 "$ctx/dl/$etcd_dir/etcdctl" "$ctx/dl/$etcd_dir/etcdutl" "$ctx/bin/"

# the control-plane images kubeadm will ask the private registry for
if [ -n "$images" ]; then
  image_list "$images"
else
  "$ctx/bin/kubeadm" config images list --kubernetes-version "$version" > "$ctx/manifests/imageList" \
    || die "kubeadm config images list failed (give --images FILE, or build on a $arch machine)"
fi

fetch_registry
finish_context "$here"

"$sealer" build -t "$tag" --platform "linux/$arch" --build-arg "KUBE_VERSION=$version" \
  --build-arg "CONTAINERD_VERSION=$containerd_version" --build-arg "REGISTRY_VERSION=$registry_version" \
  --build-arg "ETCD_VERSION=$etcd_version" \
  "$@" "$ctx"
echo "build.sh: built $tag (kubernetes $version, containerd $containerd_version, etcd tools $etcd_version, linux/$arch)"
