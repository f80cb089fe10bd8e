#!/usr/bin/env bash
# bundle-tool.sh CONTEXT NAME: put this machine's NAME (haproxy for the node-local API balancer,
# keepalived for the API VIP) into CONTEXT/bin/ and the shared libraries it needs beyond glibc into
# CONTEXT/lib/NAME/, so hosts without the package run it (sealer's units set LD_LIBRARY_PATH).
# Build machine and hosts must share a libc generation (e.g. both Debian 12): glibc is not bundled.
set -euo pipefail
ctx=$1
name=$2
bin=$(PATH=$PATH:/usr/sbin:/sbin command -v "$name" || true)
[ -n "$bin" ] && [ -x "$bin" ] || { echo "bundle-tool.sh: no $name here (apt-get install $name)" >&2; exit 1; }
mkdir -p "$ctx/bin" "$ctx/lib/$name"
install -m 0755 "$bin" "$ctx/bin/$name"
ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libresolv.so.*|ld-linux*) ;;
    *) install -m 0644 "$(readlink -f "$lib")" "$ctx/lib/$name/$(basename "$lib")" ;;
  esac
done
echo "bundle-tool.sh: $name ($bin) with $(ls "$ctx/lib/$name" | wc -l) libraries" >&2
