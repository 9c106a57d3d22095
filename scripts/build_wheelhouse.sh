#!/usr/bin/env bash
# bash scripts/build_wheelhouse.sh        (here, where pip reaches PyPI; then see scripts/gpu_check.sh)
#
# Wheels for the GPU machine (one H100, Python 3.12, torch 2.11+cu130, transformers 5.17, accelerate 1.15,
# pyarrow, pandas, fsspec, xxhash, tensorboard, pytest installed; no network: /work/.library/device/KINDS.md).
# Only what `import align` and the stages gpu_check.sh runs need and that image lacks, found from align's
# imports and pyproject.toml against the image's package list:
#   trl, datasets                 TRL trainers and their data (pyproject: trl 1.16.x, datasets 5.2.x)
#   dill, multiprocess            datasets' own dependencies, at the versions datasets 5.2 accepts
#   phonenumbers, python-stdnum   align/privacy/redact.py (imported by the data readers)
#   gguf                          the embedded model's loader (pyproject; not used by the check itself)
#   peft                          on the image, but at an unchecked version; pinned to pyproject's 0.21.x
# plus align's own wheel (`pip wheel --no-deps .`). Edge extras (vllm, argilla, lm-eval, bitsandbytes) are
# not carried: the check uses the hf engine and no QLoRA. Output: artifacts/wheelhouse (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=artifacts/wheelhouse
LIMIT_MB=50
PACKAGES=(
  "trl>=1.16,<1.17"
  "datasets>=5.2,<5.3"
  "dill>=0.3.0,<0.4.2"
  "multiprocess<0.70.20"
  "phonenumbers>=8.13"
  "python-stdnum>=1.20"
  "gguf>=0.17,<0.20"
  "peft>=0.21,<0.22"
)
PLATFORM=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)

rm -rf "$OUT"
mkdir -p "$OUT"
"$PY" -m pip download -q --no-deps --only-binary=:all: "${PLATFORM[@]}" -d "$OUT" "${PACKAGES[@]}"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" .

# What each wheel asks for, so a requirement the image cannot meet is seen here rather than there.
"$PY" - "$OUT" <<'PY'
import sys, zipfile, pathlib
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        needs = [l.split(":", 1)[1].strip() for l in z.read(meta).decode().splitlines()
                 if l.startswith("Requires-Dist:") and "extra ==" not in l]
    print(f"{wheel.name}: {'; '.join(needs) or '-'}")
PY
total=$(du -cm "$OUT"/*.whl | tail -1 | cut -f1)
ls -1 "$OUT"
echo "wheelhouse: $(ls "$OUT"/*.whl | wc -l) wheels, ${total} MB in $OUT"
if [ "$total" -gt "$LIMIT_MB" ]; then
  echo "FAIL wheelhouse: ${total} MB is over the ${LIMIT_MB} MB budget of a device call" >&2
  exit 1
fi
