#!/usr/bin/env bash
# qbun's main job on a fresh machine: installs what it needs, then runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bun cli/main.ts demo "$@"
