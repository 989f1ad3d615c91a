#!/usr/bin/env bash
# Install the named Debian/Ubuntu packages that are missing (needs root or sudo; idempotent).
#
#   scripts/system_packages.sh PKG...          install.sh passes what running needs,
#                                              test.sh what only the tests need
#   BITNET_SKIP_APT=1 scripts/system_packages.sh ...   do nothing
set -euo pipefail

log() { printf '[system] %s\n' "$*" >&2; }

if [[ "${BITNET_SKIP_APT:-0}" == "1" ]]; then
    log "BITNET_SKIP_APT=1: skipping system packages ($*)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "no apt-get: install these yourself if needed: $*"
    exit 0
fi
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    log "system packages already installed"
    exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        log "not root and no sudo: cannot install ${missing[*]}; continuing without them"
        exit 0
    fi
fi
log "installing system packages: ${missing[*]}"
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
