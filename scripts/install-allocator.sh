#!/usr/bin/env bash
# Install tcmalloc (Debian's libtcmalloc-minimal4), the allocator the backdoorlab command runs
# on where it is installed (docs/memory-and-speed.md), if no tcmalloc or jemalloc is present.
# Optional: without it backdoorlab runs on the system's malloc, with more memory.
set -uo pipefail
ldconfig -p 2>/dev/null | grep -qE "lib(tcmalloc|jemalloc)" && exit 0
command -v apt-get >/dev/null 2>&1 || exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    libtcmalloc-minimal4) >/dev/null 2>&1 || echo "install-allocator: could not install tcmalloc" >&2
exit 0
