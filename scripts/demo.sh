#!/usr/bin/env bash
# Install everything (scripts/install.sh), then generate text with `bitnet run`.
#
#   scripts/demo.sh ["your prompt"]
#
# Uses the demo model bundled with bitnet; if this checkout has none yet, it writes a small
# synthetic BitNet model (random weights: the text is gibberish, the pipeline is real).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh"
VENV="${BITNET_VENV:-$ROOT/.venv}"
PROMPT="${1:-The capital of France is}"

MODEL_ARGS=()
if ! "$VENV/bin/python" -c 'from bitnet.core.api import demo_model_path; demo_model_path()' \
        2>/dev/null; then
    MODEL="$ROOT/.bench/synthetic-demo-i2_s.gguf"
    if [[ ! -f "$MODEL" ]]; then
        echo "[demo] no bundled demo model: writing a synthetic one to $MODEL" >&2
        mkdir -p "$(dirname "$MODEL")"
        "$VENV/bin/python" - "$MODEL" <<'PY'
import sys
from bitnet.core.gguf_write import make_synthetic_model
make_synthetic_model(sys.argv[1], d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=768,
                     n_vocab=512, n_ctx=256, seed=1234)
PY
    fi
    MODEL_ARGS=(--model "$MODEL")
fi

"$VENV/bin/bitnet" devices
exec "$VENV/bin/bitnet" run "${MODEL_ARGS[@]}" --prompt "$PROMPT" -n 32
