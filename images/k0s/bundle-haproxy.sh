#!/usr/bin/env bash
# bundle-haproxy.sh CONTEXT [HAPROXY]: put haproxy (default: this machine's) into CONTEXT/bin/ and
# the shared libraries it needs beyond glibc into CONTEXT/lib/haproxy/, so hosts without the haproxy
# package run it (sealer's unit sets LD_LIBRARY_PATH). Build machine and hosts must share a libc
# generation (e.g. both Debian 12): glibc itself is not bundled.
set -euo pipefail
ctx=$1
bin=${2:-$(command -v haproxy || true)}
[ -n "$bin" ] && [ -x "$bin" ] || { echo "bundle-haproxy.sh: no haproxy (apt-get install haproxy)" >&2; exit 1; }
mkdir -p "$ctx/bin" "$ctx/lib/haproxy"
install -m 0755 "$bin" "$ctx/bin/haproxy"
ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libresolv.so.*|ld-linux*) ;;
    *) install -m 0644 "$(readlink -f "$lib")" "$ctx/lib/haproxy/$(basename "$lib")" ;;
  esac
done
echo "bundle-haproxy.sh: $("$bin" -v | head -n1) with $(ls "$ctx/lib/haproxy" | wc -l) libraries" >&2
