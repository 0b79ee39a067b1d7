#!/usr/bin/env bash
# Run a command as if on another class of CPU, so figures and tests from a machine with
# AMX can be checked against what an ordinary AVX2 CPU (AMD Zen 2/3, Intel client chips)
# gets:
#
#   bash scripts/cpu-profile.sh avx2 -- speclsp bench engine --quick
#   bash scripts/cpu-profile.sh avx2 -- bash scripts/test.sh
#   bash scripts/cpu-profile.sh native -- ...     (no change: this CPU as it is)
#
# avx2 caps the instruction sets torch's own kernels (ATEN_CPU_CAPABILITY), oneDNN
# (ONEDNN_MAX_CPU_ISA: its bf16 matmuls then have no AMX/AVX512-BF16 path, as on Zen 3) and
# MKL (MKL_ENABLE_INSTRUCTIONS) dispatch to. The variables are inherited by every process
# the command starts (the server under test too), and the calibration and precision caches
# are keyed by them, so the two profiles never share measurements. A CPU cannot be made
# faster than it is: on an AVX2-only machine "native" is the avx2 profile.
set -euo pipefail
profile=${1:-}
shift || true
[ "${1:-}" = "--" ] && shift
case "$profile" in
  avx2)
    export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
    ;;
  native) ;;
  *) echo "usage: $0 avx2|native -- COMMAND [ARGS...]" >&2; exit 2 ;;
esac
[ $# -gt 0 ] || { echo "usage: $0 avx2|native -- COMMAND [ARGS...]" >&2; exit 2; }
exec "$@"
