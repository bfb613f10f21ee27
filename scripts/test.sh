#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs, then runs bun test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bun test --timeout=60000 "$@"
