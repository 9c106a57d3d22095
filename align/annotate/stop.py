"""Stop the local Argilla started by `align annotate serve` (server, worker, Redis, by recorded pid).

The database and credentials stay in the home folder; `align annotate serve` starts it again with
everything annotators did so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.annotate import local
from align.annotate.serve import read_state, stop_processes


@dataclass
class Config:
    home: str = ""
    """Server folder (default $ALIGN_ARGILLA_HOME or ~/.cache/align/argilla-server)."""


def run(cfg: Config) -> dict[str, Any]:
    home = Path(cfg.home).expanduser() if cfg.home else local.default_home()
    state = read_state(home)
    if not state:
        print(f"no local Argilla is running from {home}")
        return {"home": str(home), "stopped": []}
    stopped = stop_processes(home, state)
    print(f"stopped {', '.join(stopped) or 'nothing (already gone)'}; data kept in {home}")
    return {"home": str(home), "stopped": stopped}
