# shellcheck shell=bash
# What the base-image build scripts (images/*/build.sh) share: the common flags, checksum-verified
# downloads, the registry release, bundling haproxy/keepalived, and assembling the build context.
# Sourced, not run: `. "$here/../lib/common.sh"` after `set -euo pipefail`.

registry_version=2.8.3
arch=$(uname -m); case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
base=https://github.com
tag=""
extra_bin=""
with_lb=1  # workers run the node-local API balancer by default (runtime/lb.py)
with_vip=0
sealer=${SEALER:-sealer}
consumed=0

die() { echo "build.sh: $*" >&2; exit 1; }

# common_arg "$@": take one flag every build.sh knows; sets $consumed to the words it used.
common_arg() {
  case "$1" in
    --registry-version) registry_version=$2; consumed=2 ;;
    --arch) arch=$2; consumed=2 ;;
    --mirror) base=${2%/}; consumed=2 ;;
    --tag) tag=$2; consumed=2 ;;
    --extra-bin) extra_bin=$2; consumed=2 ;;
    --lb) with_lb=1; consumed=1 ;;
    --no-lb) with_lb=0; consumed=1 ;;
    --vip) with_vip=1; consumed=1 ;;
    --sealer) sealer=$2; consumed=2 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
}

# new_context NAME: checks the tools and the arch, makes $ctx (removed on exit) with its layout.
new_context() {
  case "$arch" in amd64|arm64) ;; *) die "unsupported --arch $arch (amd64 or arm64)" ;; esac
  command -v curl >/dev/null || die "curl is needed"
  command -v sha256sum >/dev/null || die "sha256sum is needed"
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/sealer-$1-build.XXXXXX")
  # shellcheck disable=SC2064  # $ctx is expanded now on purpose
  trap "rm -rf '$ctx'" EXIT
  mkdir -p "$ctx/bin" "$ctx/lib" "$ctx/manifests" "$ctx/dl"
}

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

# image_list FILE: the air-gap list without comments and blank lines, as manifests/imageList.
image_list() {
  grep -v '^[[:space:]]*\(#\|$\)' "$1" > "$ctx/manifests/imageList" || true
}

# fetch_registry: the registry (CNCF distribution) that serves registry/ on master0, into bin/.
fetch_registry() {
  local url tgz
  url="$base/distribution/distribution/releases/download/v$registry_version"
  tgz="registry_${registry_version}_linux_${arch}.tar.gz"
  fetch "$url/$tgz" "$ctx/dl/$tgz"
  fetch "$url/registry_${registry_version}_checksums.txt" "$ctx/dl/checksums.txt"
  verify "$ctx/dl/$tgz" "$tgz" "$ctx/dl/checksums.txt"
  tar -xzf "$ctx/dl/$tgz" -C "$ctx/dl" registry || die "$tgz has no registry binary"
  install -m 0755 "$ctx/dl/registry" "$ctx/bin/registry"
}

# bundle_tool NAME: this machine's NAME (haproxy for the node-local API balancer, keepalived for
# the API VIP) into bin/, and the shared libraries it needs beyond glibc into lib/NAME/, so hosts
# without the package run it (sealer's units set LD_LIBRARY_PATH). Build machine and hosts must
# share a libc generation (e.g. both Debian 12): glibc is not bundled.
bundle_tool() {
  local name=$1 bin lib
  bin=$(PATH=$PATH:/usr/sbin:/sbin command -v "$name" || true)
  [ -n "$bin" ] && [ -x "$bin" ] || die "no $name on this machine to bundle (apt-get install $name)$([ "$name" = haproxy ] && echo "; or --no-lb: then the cluster needs APIServerLB=none or haproxy on its hosts")"
  mkdir -p "$ctx/bin" "$ctx/lib/$name"
  install -m 0755 "$bin" "$ctx/bin/$name"
  for lib in $(ldd "$bin" | awk '/=> \// {print $3}'); do
    case "$(basename "$lib")" in
      libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libresolv.so.*|ld-linux*) ;;
      *) install -m 0644 "$(readlink -f "$lib")" "$ctx/lib/$name/$(basename "$lib")" ;;
    esac
  done
  echo "build.sh: bundled $name ($bin) with $(find "$ctx/lib/$name" -type f | wc -l) libraries" >&2
}

# finish_context DIR: the optional tools, --extra-bin, the image's Kubefile and etc/ from DIR;
# drops the downloads.
finish_context() {
  local f
  if [ "$with_lb" = 1 ]; then bundle_tool haproxy; fi
  if [ "$with_vip" = 1 ]; then bundle_tool keepalived; fi
  if [ -n "$extra_bin" ]; then
    for f in "$extra_bin"/*; do if [ -f "$f" ]; then install -m 0755 "$f" "$ctx/bin/"; fi; done
  fi
  cp "$1/Kubefile" "$ctx/Kubefile"
  cp -r "$1/etc" "$ctx/etc"
  touch "$ctx/lib/.keep"
  rm -rf "$ctx/dl"
}
