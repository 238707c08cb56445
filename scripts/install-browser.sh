#!/usr/bin/env bash
# Install headless Chromium (Debian's package) for the report's browser test, if missing.
set -uo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    chromium) >/dev/null 2>&1 || echo "install-browser: could not install chromium" >&2
command -v chromium >/dev/null 2>&1
