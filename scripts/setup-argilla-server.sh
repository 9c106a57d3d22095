#!/usr/bin/env bash
# Install what the local Argilla server needs (idempotent; seconds when already done):
#   - argilla-server 2.8.0 in its own venv (it pins fastapi/pydantic/typer versions that must not
#     meet the training stack), at $ALIGN_ARGILLA_SERVER_VENV, else <align cache>/argilla-server-venv
#     (~/.cache/align/argilla-server-venv): where `align annotate serve` looks, installed or not;
#   - redis-server from Debian (started by `align annotate serve` on loopback, never as a service).
# Usage: scripts/setup-argilla-server.sh [--with-browser]   (--with-browser adds Debian's chromium
# for the screenshot test)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ALIGN_ARGILLA_SERVER_VENV:-${ALIGN_CACHE:-$HOME/.cache/align}/argilla-server-venv}

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ "${1:-}" = "--with-browser" ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[argilla-server] apt-get install ${need_apt[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

stamp_hash=$(sha1sum scripts/setup-argilla-server.sh | cut -c1-16)
stamp="$VENV/.align-argilla-server-$stamp_hash"
if [ -f "$stamp" ]; then exit 0; fi
echo "[argilla-server] creating $VENV (about 90 s)" >&2
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# click<8.2: with newer click every argilla-server CLI command fails ("Secondary flag is not valid
# for non-boolean flag"). huggingface_hub<1 and datasets<4 are what argilla-server 2.8 was built against.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "argilla-server==2.8.0" "click<8.2" "huggingface_hub<1" "datasets<4"
rm -f "$VENV"/.align-argilla-server-*
touch "$stamp"
echo "[argilla-server] done" >&2
