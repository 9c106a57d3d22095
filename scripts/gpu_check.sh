#!/usr/bin/env bash
# bash scripts/gpu_check.sh [--cpu]
#
# One call on a GPU machine checks that every stage runs there on the GPU in bfloat16: sft -> reward ->
# dpo -> ppo (hf rollouts) -> generate (hf engine) -> evaluate policy, each `python -m align <stage>` on
# a tiny random Llama with a tokenizer built on the spot (scripts/gpu_check.py), each stage's manifest
# checked for notes.device.type == cuda and notes.device.dtype == bfloat16. Writes $OUT/gpu_check.json
# when $OUT is set, else artifacts/gpu_check.json, and each stage's output as <stage>.log beside it
# (artifacts/gpu_check_logs/ without $OUT): per stage wall time, device, dtype, peak GPU memory,
# tokens/s; torch/transformers/trl versions and the GPU name. Seconds per stage expected on an H100;
# the whole run is capped at 8 minutes there.
#
# The next session lent a GPU (one device call):
#   here:    bash scripts/build_wheelhouse.sh            (trl, datasets, ... and align's wheel: ~7 MB)
#   device:  run(command="bash scripts/gpu_check.sh", carry=["artifacts/wheelhouse"], timeout_s=600)
# The GPU machine has no network; its python3 (/opt/torch/.venv) holds torch, transformers, accelerate.
#
# --cpu: the same pipeline here with the repository's .venv, expecting cpu/float32 (CI keeps the script
# honest with it: tests/test_gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=cuda
case "${1:-}" in
  --cpu) MODE=cpu ;;
  "") ;;
  *) echo "usage: bash scripts/gpu_check.sh [--cpu]" >&2; exit 2 ;;
esac
JSON=${OUT:+$OUT/gpu_check.json}
JSON=${JSON:-$ROOT/artifacts/gpu_check.json}
LOGS=${OUT:-$ROOT/artifacts/gpu_check_logs}  # one <stage>.log each: with the JSON, 7 files come back from $OUT
WORK=$(mktemp -d -t align-gpu-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL $1: $2" >&2; exit 1; }

if [ "$MODE" = cpu ]; then
  PY=${PYTHON:-$ROOT/.venv/bin/python}
  [ -x "$PY" ] || fail setup "no interpreter at $PY (make setup, or PYTHON=...)"
else
  PY=${PYTHON:-python3}
  WHEELS=$ROOT/artifacts/wheelhouse
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || fail setup "no wheels in $WHEELS: run bash scripts/build_wheelhouse.sh where pip reaches PyPI and carry artifacts/wheelhouse"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl \
    || fail setup "pip could not install the wheelhouse into $WORK/site"
  # The checked-out tree first, so the code under test is this tree's even if the align wheel is older.
  export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || fail setup "torch in $PY sees no CUDA device (nvidia-smi: $(nvidia-smi -L 2>&1 | head -1))"
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
export HF_HOME="$WORK/hf" ALIGN_CACHE="$WORK/align-cache" PYTHONUNBUFFERED=1
echo "gpu_check: $MODE mode, $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])'), work dir $WORK"
[ "$MODE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# 8 minutes for the whole pipeline on a GPU: seconds per stage are expected on an H100; a hang is a
# failure. On a CPU (--cpu) every stage costs a minute or more on 2 shared cores: 30 minutes.
LIMIT=480
[ "$MODE" = cpu ] && LIMIT=${GPU_CHECK_CPU_LIMIT_S:-1800}
status=0
timeout "$LIMIT" "$PY" scripts/gpu_check.py --expect "$MODE" --json "$JSON" --work "$WORK" --logs "$LOGS" || status=$?
if [ "$status" -eq 124 ]; then
  fail pipeline "did not finish within $LIMIT s (partial results in $JSON if any stage finished)"
elif [ "$status" -ne 0 ]; then
  [ -f "$JSON" ] || fail pipeline "scripts/gpu_check.py exited $status before writing $JSON"
  exit "$status"  # its FAIL line names the stage and the reason
fi
echo "gpu_check: PASS ($MODE) -> $JSON"
