#!/usr/bin/env bash
# Verify cost of chains and token trees (1-128 nodes after 512-4,096 cached tokens) and
# prefill speed, on CUDA, with randomly initialised Qwen2.5-Coder 0.5B and 1.5B models.
# Needs only python3 with torch and transformers (no network, no pygls): for a GPU machine
# that gets this repository and nothing else. Under 8 minutes on one GPU.
#   bash scripts/gpu-profile.sh [--out FILE] [--device cpu --quick]   (then:
#   speclsp bench project --costs FILE --report bench-out/engine.json)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
exec timeout 480 "$PY" -m speclsp.tools.gpu_profile "$@"
