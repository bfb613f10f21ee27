#!/usr/bin/env bash
# qbun's main job on a fresh machine: installs what it needs, then starts
# `qbun serve` and has a real libqb client talk to it over both transports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bun scripts/demo-qb.ts "$@"
