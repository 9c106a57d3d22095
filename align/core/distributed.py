"""The processes of a multi-process launch (`accelerate launch`, `torchrun`): who is the main
process, and the few collectives run directories need (agree on a name, wait, share a result).

Everything here is a no-op in a single process and imports accelerate only when there are several.
"""

from __future__ import annotations

import os
from typing import Any


def world_size() -> int:
    """How many processes the launcher started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of the launch, or the only process: the one that writes run directories and prints.

    Read from the launcher's environment (RANK; LOCAL_RANK where only that is set), so asking does not
    start a process group.
    """
    rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or "0"
    return int(rank) == 0


def agree(value: Any, world: int) -> Any:
    """Rank 0's `value` on every rank (a no-op in a single process)."""
    if world <= 1:
        return value
    values = [value]
    broadcast(values)
    return values[0]


def broadcast(values: list[Any]) -> None:
    """Rank 0's `values` on every rank, in place."""
    from accelerate.utils import broadcast_object_list

    _process_group()
    broadcast_object_list(values, from_process=0)


def barrier(world: int) -> None:
    if world > 1:
        _process_group().wait_for_everyone()


def _process_group():
    """accelerate's state for the process group the launcher described.

    On a machine without a GPU, `PartialState()` alone reports a single process (it sets up gloo only
    when told the run is on CPU) and every collective becomes a silent no-op: the ranks would each pick
    their own run name. So CPU is asked for explicitly there, as the trainer does (`use_cpu`).
    """
    from accelerate import PartialState

    return PartialState(cpu=not accelerator_available())


def accelerator_available() -> bool:
    """A GPU (or other torch accelerator) this process can train on."""
    import torch

    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()
