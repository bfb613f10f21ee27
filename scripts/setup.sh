#!/usr/bin/env bash
# Installs what qbun needs on a fresh Debian machine that has Node.js and npm:
# Bun (pinned, from the npm registry), the project's packages, and the Debian
# packages the helper and the test peers use. Safe to run again: it skips
# what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

BUN_VERSION=1.4.4
DEBIAN_PACKAGES=(gcc libc6-dev python3 util-linux libqb-dev pkg-config corosync)

if [ "$(bun --version 2>/dev/null || true)" != "$BUN_VERSION" ]; then
  echo "setup: installing bun@$BUN_VERSION from the npm registry" >&2
  npm install --global --no-fund --no-audit "bun@$BUN_VERSION" >&2
fi

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

bun install --frozen-lockfile >&2
