#!/usr/bin/env bash
# Install everything (scripts/install.sh), then generate text with `bitnet run` from the demo
# model bundled with bitnet (a small BitNet b1.58 trained on Jane Austen: docs/demo-model.md).
#
#   scripts/demo.sh ["your prompt"]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh"
VENV="${BITNET_VENV:-$ROOT/.venv}"
PROMPT="${1:-It is a truth universally acknowledged}"

"$VENV/bin/bitnet" devices
exec "$VENV/bin/bitnet" run --prompt "$PROMPT" -n 48 --seed 1
