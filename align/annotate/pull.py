"""Pull submitted labels into a preference run: `align annotate pull dataset=NAME`.

Order of work: (1) page through the dataset's records with their responses and append every new
submitted or discarded response (and each record's content, once) to the local journal, fsynced per
page, before anything else; (2) build one row per record from the whole journal, so labels pulled
earlier count even if the dataset has since been deleted (`offline=true` skips step 1); (3) write the
run. If Argilla stops answering in (1), the pull fails with a ServiceError after the retry window,
the journal keeps what was read, and no run is written; the next pull reads on from there.

Rows of `preferences.jsonl` (the canonical preference row plus the annotation):

    prompt, chosen, rejected     chosen/rejected: the majority candidate; null for a tie or no majority
    response_a, response_b       the two candidates as pushed (the A/B display swap undone)
    votes                        every submitted vote: annotator, choice (a|b|tie), strength, ratings, reason
    counts, majority             votes per choice; a | b | tie | null (no choice has more than half)
    agreement                    share of votes for the most common choice, in [0, 1]
    strength                     mean strength (1-3) given by the majority's voters, or null
    n_votes, discards            submitted votes; discards of this record
    record_id, round, policy, source, sampling

Only `submitted` responses are votes; `discarded` ones are counted; drafts are ignored. Records with
no submitted vote yet are left out (counted as `records_without_votes`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.annotate import template as templates
from align.annotate.connection import ArgillaConfig, connect
from align.annotate.journal import Journal, journal_path
from align.annotate.local import cache_root
from align.annotate.votes import aggregate, krippendorff_alpha, pairwise_agreement, vote_from_answers
from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError

log = logging.getLogger(__name__)

PREFERENCES = "preferences.jsonl"


@dataclass
class Config(runs.RunOutput):
    dataset: str = ""
    """Argilla dataset to pull from."""
    template: str = "pairwise"
    """Template the dataset was created with (checked before reading)."""
    journal_dir: str = ""
    """Folder of the local journals (default: <align cache>/annotate, i.e. ~/.cache/align/annotate)."""
    offline: bool = False
    """Build the run from the journal alone, without contacting Argilla (e.g. after the dataset was deleted)."""
    argilla: ArgillaConfig = field(default_factory=ArgillaConfig)
    """Connection to Argilla."""


def run(cfg: Config) -> dict[str, Any]:
    if not cfg.dataset:
        raise AlignError("'dataset' is required: the Argilla dataset to pull labels from")
    journal = Journal(journal_path(_journal_dir(cfg), cfg.argilla.workspace, cfg.dataset))
    notes: dict[str, Any] = {"journal": str(journal.path), "dataset": cfg.dataset, "workspace": cfg.argilla.workspace}
    fetched: dict[str, Any] = {}
    if cfg.offline:
        if not journal.path.exists():
            raise AlignError(f"offline pull: no journal at {journal.path}; pull once with the server up first")
    else:
        fetched = fetch_into_journal(cfg, journal, notes)
    rows, counts = build_rows(journal)
    if not rows:
        raise AlignError(
            f"dataset '{cfg.dataset}': no submitted labels yet ({fetched.get('records_read', len(journal.records))} "
            f"record(s), {counts['discards']} discard(s)); `align annotate status dataset={cfg.dataset}` shows progress"
        )

    with runs.new_run("annotate pull", to_dict(cfg), cfg.runs_dir, cfg.name) as run_:
        with open(run_.path / PREFERENCES, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        run_.add_output("preferences", PREFERENCES)
        run_.notes.update(notes)
        run_.metrics.update({**counts, **fetched})
        manifest = runs.finish(run_)
    return manifest


def _journal_dir(cfg: Config) -> Path:
    return Path(cfg.journal_dir).expanduser() if cfg.journal_dir else cache_root() / "annotate"


def fetch_into_journal(cfg: Config, journal: Journal, notes: dict[str, Any]) -> dict[str, Any]:
    """Append every new submitted/discarded response of the dataset to the journal, page by page."""
    tpl = templates.load_template(cfg.template)
    start = time.time()
    seen = appended = drafts = 0
    with connect(cfg.argilla) as conn:
        ds = conn.find_dataset(cfg.dataset, cfg.argilla.workspace)
        if ds is None:
            if journal.path.exists():
                raise AlignError(
                    f"no dataset '{cfg.dataset}' in workspace '{cfg.argilla.workspace}' at {conn.api_url}; the labels "
                    f"pulled so far are kept in {journal.path}: `align annotate pull dataset={cfg.dataset} "
                    "offline=true` builds a run from them"
                )
            conn.dataset(cfg.dataset, cfg.argilla.workspace)  # raises, listing the datasets there are
        templates.check_dataset(conn, ds, tpl)
        notes.update({"api_url": conn.api_url, "dataset_id": ds["id"]})
        page: list[dict[str, Any]] = []
        page_records: set[str] = set()
        try:
            for record in conn.records(ds["id"], responses=True):
                seen += 1
                rid = record.get("external_id") or record["id"]
                for resp in record.get("responses") or []:
                    if resp["status"] == "draft":
                        drafts += 1
                        continue
                    entry = {
                        "kind": "response", "record_id": rid, "user_id": resp["user_id"],
                        "username": conn.username(resp["user_id"]), "status": resp["status"],
                        "values": resp.get("values") or {}, "updated_at": resp["updated_at"],
                    }
                    if not journal.is_new_response(entry):
                        continue
                    if rid not in journal.records and rid not in page_records:
                        page_records.add(rid)
                        page.append({"kind": "record", "record_id": rid, "argilla_id": record["id"],
                                     "fields": record["fields"], "metadata": record.get("metadata") or {}})
                    page.append(entry)
                    appended += 1
                if len(page) >= 500:
                    journal.append(page)
                    page, page_records = [], set()
        finally:  # what was read before a failure is kept
            journal.append(page)
    seconds = time.time() - start
    log.info("read %d records from '%s'; %d new response(s) journaled in %s", seen, cfg.dataset, appended, journal.path)
    return {"records_read": seen, "responses_journaled": appended, "drafts_ignored": drafts,
            "pull_records_per_s": round(seen / seconds, 1) if seconds > 0 else None}


def build_rows(journal: Journal) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One preference row per journaled record with at least one submitted vote, plus counts."""
    by_record: dict[str, list[dict[str, Any]]] = {}
    for (rid, _user), resp in journal.responses.items():
        by_record.setdefault(rid, []).append(resp)
    rows = []
    counts = {"records": 0, "records_without_votes": 0, "votes": 0, "discards": 0, "pairs": 0, "ties": 0,
              "no_majority": 0}
    units = []
    for rid, record in journal.records.items():
        meta = record["metadata"]
        shown_a = meta.get("shown_as_a", "a")
        fields = record["fields"]
        response_a, response_b = ((fields["response_a"], fields["response_b"]) if shown_a == "a"
                                  else (fields["response_b"], fields["response_a"]))
        votes, discards = [], 0
        for resp in sorted(by_record.get(rid, []), key=lambda r: r["username"]):
            if resp["status"] == "discarded":
                discards += 1
                continue
            vote = vote_from_answers(resp["values"], shown_a)
            if vote is not None:
                votes.append({"annotator": resp["username"], **vote})
        counts["discards"] += discards
        if not votes:
            counts["records_without_votes"] += 1
            continue
        agg = aggregate(votes)
        majority = agg["majority"]
        winner = {"a": response_a, "b": response_b}.get(majority)
        loser = {"a": response_b, "b": response_a}.get(majority)
        rows.append({
            "prompt": fields["prompt"],
            "chosen": [{"role": "assistant", "content": winner}] if winner is not None else None,
            "rejected": [{"role": "assistant", "content": loser}] if loser is not None else None,
            "response_a": response_a,
            "response_b": response_b,
            "votes": votes,
            **agg,
            "n_votes": len(votes),
            "discards": discards,
            "record_id": rid,
            "round": meta.get("round"),
            "policy": meta.get("policy"),
            "source": meta.get("source"),
            "sampling": json.loads(meta["sampling"]) if meta.get("sampling") else None,
        })
        units.append([v["choice"] for v in votes])
        counts["records"] += 1
        counts["votes"] += len(votes)
        counts["pairs"] += winner is not None
        counts["ties"] += majority == "tie"
        counts["no_majority"] += majority is None
    counts["pairwise_agreement"] = pairwise_agreement(units)
    counts["krippendorff_alpha"] = krippendorff_alpha(units)
    return rows, counts
