"""The loop's wait for labels: poll the round's Argilla dataset until enough records are complete (align/loop/run.py)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from align.core.errors import AlignError, ServiceError

log = logging.getLogger("align.loop.run")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def wait_for_labels(loop, rnd: dict[str, Any], dataset: str) -> None:
    """Poll Argilla until `wait.min_records` records of the round's dataset are complete, or the deadline."""
    record = rnd["steps"].get("wait")
    if record and record.get("status") == "done":
        return
    from tqdm.auto import tqdm

    wait = loop.cfg.wait
    if not record:
        record = rnd["steps"]["wait"] = {"status": "started", "started": _now(), "since": time.time()}
        loop.state.save()
    since = record["since"]
    deadline = since + wait.deadline_minutes * 60 if wait.deadline_minutes is not None else None
    progress = dataset_progress(loop.cfg.argilla, dataset, rnd["round"])
    target = min(wait.min_records or progress["total"], progress["total"])
    if loop.cfg.annotators == "simulated":
        # The simulated annotators answered in the simulate step and will add nothing: a record one of them
        # discarded stays short of its submissions for good, and waiting for it would never end.
        if progress["completed"] < target:
            log.info(
                "round %d: simulated annotators done; %d of %d records complete (the rest have a discard)",
                rnd["round"],
                progress["completed"],
                progress["total"],
            )
        target = min(target, progress["completed"])
    with tqdm(total=target, desc=f"round {rnd['round']}: records labelled", unit="record") as bar:
        while True:
            bar.n = min(progress["completed"], target)
            bar.refresh()
            if progress["completed"] >= target:
                break
            if deadline is not None and time.time() >= deadline:
                if progress["completed"] == 0:
                    raise AlignError(
                        f"round {rnd['round']}: wait.deadline_minutes={wait.deadline_minutes} passed and "
                        f"no record of '{dataset}' is labelled; the loop state is intact: label, then "
                        "run the same command again (or raise the deadline with --allow-config-change)"
                    )
                log.warning(
                    "round %d: deadline passed with %d of %d records complete; pulling what is labelled",
                    rnd["round"],
                    progress["completed"],
                    target,
                )
                break
            time.sleep(wait.poll_seconds)
            progress = dataset_progress(loop.cfg.argilla, dataset, rnd["round"])
    record.update(
        status="done",
        finished=_now(),
        completed=progress["completed"],
        total=progress["total"],
        wall_time_s=round(time.time() - since, 1),
    )
    loop.state.save()


def dataset_progress(argilla, dataset: str, n: int) -> dict[str, int]:
    """The dataset's progress from Argilla (total, completed, pending); a ServiceError keeps the state."""
    from align.annotate.connection import connect

    try:
        with connect(argilla) as conn:
            ds = conn.dataset(dataset, argilla.workspace)
            progress = conn.call("GET progress", ds.progress)
    except ServiceError as exc:
        raise ServiceError(
            f"round {n}: Argilla did not answer while waiting for labels ({exc}); the loop state is "
            "intact: run the same command again to go on"
        ) from None
    return {
        "total": int(progress.get("total", 0)),
        "completed": int(progress.get("completed", 0)),
        "pending": int(progress.get("pending", 0)),
    }
