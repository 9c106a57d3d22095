"""Pull submitted labels into a preference run: `align annotate pull dataset=NAME`.

Order of work: (1) page through the dataset's records with their responses and journal every change
since the last pull (new or changed submitted/discarded responses, each record's content once, and a
`withdrawn` line for a journaled response that is back to draft or deleted on the server), fsynced per
batch, before anything else; (2) build one row per record from the journal's current state, which
after (1) is the server's current state; (3) write the run. If Argilla stops answering in (1), the
pull fails with a ServiceError after the retry window, the journal keeps what was read, and no run is
written; the next pull reads on from there. `offline=true` skips (1): the run is built from the
journal's latest state (e.g. after the dataset was deleted). The journal is kept per server and
dataset id (see journal.py).

Rows of `preferences.jsonl` (the canonical preference row plus the annotation):

    prompt, chosen, rejected     chosen/rejected: the majority candidate (label_model=dawid_skene: the more
                                 probable one); null for a tie or no majority
    p_chosen, label_model        P(chosen is better): the chosen's share of the a/b votes, or its posterior
                                 (align/annotate/reliability.py); null for a tie
    response_a, response_b       the two candidates as pushed (the A/B display swap undone)
    votes                        every submitted vote: annotator, choice (a|b|tie), strength, ratings, reason,
                                 simulated (true for `align annotate simulate`'s users, by user id)
    counts, majority             votes per choice; a | b | tie | null (no choice has more than half)
    agreement                    share of votes for the most common choice, in [0, 1]
    strength                     mean strength (1-3) given by the majority's voters, or null
    n_votes, discards            submitted votes; discards of this record
    record_id, round, policy, source, sampling

Gold records (known-answer pairs push mixed in, known from the journal's push lines) never become
rows: their votes go to `gold.jsonl` (record, expected candidate, each vote and whether it matched)
and are counted apart (`gold_records`, `gold_votes`). Every annotator's quality numbers
(align/annotate/quality.py: gold accuracy, alpha without them, position bias, median seconds, flags
against `quality`) go into `metrics.annotator_quality`. The A/B order of each record is read from the
journal (push writes it there, never to the server); datasets pushed before that keep it in their
records' metadata, which is read instead.

Only `submitted` responses are votes; `discarded` ones are counted; drafts are ignored. Records with
no submitted vote yet are left out (counted as `records_without_votes`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from align.annotate import template as templates
from align.annotate.connection import ArgillaConfig, connect, resolve_url
from align.annotate.journal import Journal, find_journals, journal_path
from align.annotate.local import cache_root
from align.annotate.quality import QualityBars, annotator_report, journal_judgements
from align.annotate.reliability import LabelModel, label_rows
from align.annotate.simulate import simulated_users
from align.annotate.votes import aggregate, krippendorff_alpha, pairwise_agreement, vote_from_answers
from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError

log = logging.getLogger(__name__)

PREFERENCES = "preferences.jsonl"
GOLD = "gold.jsonl"
JOURNAL_BATCH = 500  # journal lines per append + fsync


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
    dataset_id: str = ""
    """offline=true only: which journal, when a dataset of this name was deleted and created again."""
    argilla: ArgillaConfig = field(default_factory=ArgillaConfig)
    """Connection to Argilla."""
    push_runs: list[str] = field(default_factory=list)
    """`annotate push` runs to read the A/B order and gold answers from when this journal lacks them (a pull on
    another machine or with another journal_dir than the push's); they are added to the journal."""
    quality: QualityBars = field(default_factory=QualityBars)
    """When an annotator is flagged in `metrics.annotator_quality` (gold accuracy, position bias, ...)."""
    label_model: LabelModel = "majority"
    """How chosen/rejected and `p_chosen` are set: majority (the majority vote; p_chosen its share of the a/b votes)
    | dawid_skene (each annotator's reliability estimated from the votes by EM; chosen the more probable candidate,
    p_chosen its posterior); see align/annotate/reliability.py. Either way the manifest records the reliabilities."""


def run(cfg: Config) -> dict[str, Any]:
    if not cfg.dataset:
        raise AlignError("'dataset' is required: the Argilla dataset to pull labels from")
    api_url = resolve_url(cfg.argilla)
    if not api_url:
        raise AlignError(
            "no Argilla URL: set ARGILLA_API_URL, argilla.api_url=URL or argilla.credentials=FILE "
            "(the journal is kept per server, so even offline=true needs to know which one)"
        )
    notes: dict[str, Any] = {"dataset": cfg.dataset, "workspace": cfg.argilla.workspace, "api_url": api_url}
    fetched: dict[str, Any] = {}
    if cfg.offline:
        journal = Journal(offline_journal(cfg, api_url))
    else:
        journal, fetched = fetch_into_journal(cfg, notes)
    notes["journal"] = str(journal.path)
    fetched["orders_from_push_runs"] = import_push_runs(journal, cfg.push_runs)
    notes.setdefault("dataset_id", journal.path.parent.name[len(cfg.dataset) + 1 :])
    simulated = simulated_users(cfg.journal_dir, api_url)
    rows, counts = build_rows(journal, simulated)
    notes["simulated_annotators"] = counts.pop("simulated_annotators")
    gold_rows = counts.pop("gold")
    quality = annotator_report(journal_judgements(journal), cfg.quality)
    gold = {name: (q["gold"]["k"], q["gold"]["n"]) for name, q in quality["annotators"].items() if q["gold"]["n"]}
    notes["label_model"] = label_rows(rows, cfg.label_model, gold)
    counts.update(
        pairs=sum(r["chosen"] is not None for r in rows),
        no_majority=sum(r["chosen"] is None and r["majority"] != "tie" for r in rows),
    )
    if not rows:
        raise AlignError(
            f"dataset '{cfg.dataset}': no submitted labels yet ({fetched.get('records_read', len(journal.records))} "
            f"record(s), {counts['discards']} discard(s)); `align annotate status dataset={cfg.dataset}` shows progress"
        )

    with runs.new_run("annotate pull", to_dict(cfg), cfg.runs_dir, cfg.name) as run_:
        # Votes name their annotators and hold their reasons: owner-only like the journal (0600 from
        # the start, never briefly readable by others).
        fd = os.open(run_.path / PREFERENCES, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        run_.add_output("preferences", PREFERENCES)
        if gold_rows:
            fd = os.open(run_.path / GOLD, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in gold_rows)
            run_.add_output("gold", GOLD)
        run_.notes.update(notes)
        run_.metrics.update({**counts, **fetched, "annotator_quality": quality})
        manifest = runs.finish(run_)
    return manifest


def import_push_runs(journal: Journal, push_runs: list[str]) -> int:
    """Journal the A/B order and gold answer of every record the push runs sent that the journal lacks."""
    lines: dict[str, dict[str, Any]] = {}
    for path in push_runs:
        manifest = runs.read_manifest(path)
        if manifest.get("stage") != "annotate push":
            raise AlignError(f"push_runs: {path} is a '{manifest.get('stage')}' run, not an 'annotate push' run")
        dataset_id = manifest.get("notes", {}).get("dataset_id", "")
        if not dataset_id or not journal.path.parent.name.endswith(dataset_id):
            raise AlignError(
                f"push_runs: {path} pushed to dataset id {dataset_id or '?'}, not to the one of journal {journal.path}"
            )
        with open(runs.output_path(path, manifest, "records"), encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                if r.get("shown_as_a") and r["record_id"] not in journal.pushed:
                    lines[r["record_id"]] = {
                        "kind": "push",
                        "record_id": r["record_id"],
                        "shown_as_a": r["shown_as_a"],
                        "gold": r.get("gold"),
                        "round": r.get("round"),
                        "from_run": str(path),
                    }
    journal.append(list(lines.values()))
    return len(lines)


def _journal_dir(cfg: Config) -> Path:
    return Path(cfg.journal_dir).expanduser() if cfg.journal_dir else cache_root() / "annotate"


def offline_journal(cfg: Config, api_url: str) -> Path:
    """The journal of `cfg.dataset` on this server, without asking the server which dataset id it is."""
    found = find_journals(_journal_dir(cfg), api_url, cfg.argilla.workspace, cfg.dataset)
    if cfg.dataset_id:
        found = [p for p in found if p.parent.name.endswith(cfg.dataset_id)]
    where = f"{_journal_dir(cfg)} for dataset '{cfg.dataset}' of workspace '{cfg.argilla.workspace}' at {api_url}"
    legacy = _journal_dir(cfg) / cfg.argilla.workspace / cfg.dataset / "journal.jsonl"
    if not found and not cfg.dataset_id and legacy.exists():  # kept by align before journals were per server
        log.warning(
            "offline pull: using %s, a journal from before journals were kept per server and dataset id", legacy
        )
        return legacy
    if not found:
        raise AlignError(
            f"offline pull: no journal in {where}"
            + (f" with dataset_id={cfg.dataset_id}" if cfg.dataset_id else "")
            + "; pull once with the server up first"
        )
    if len(found) > 1:
        ids = ", ".join(p.parent.name[len(cfg.dataset) + 1 :] for p in found)
        raise AlignError(
            f"offline pull: {len(found)} journals in {where} (the dataset was deleted and created "
            f"again); choose one with dataset_id= one of {ids}"
        )
    return found[0]


def fetch_into_journal(cfg: Config, notes: dict[str, Any]) -> tuple[Journal, dict[str, Any]]:
    """Journal every change of the dataset's responses since the last pull, a batch at a time.

    New or changed submitted/discarded responses are appended; a journaled response that is now a
    draft or gone from the server (or whose record is gone) gets a `withdrawn` line, so the run
    reflects the server's current state while the journal keeps the history.
    """
    tpl = templates.load_template(cfg.template)
    start = time.time()
    seen = appended = drafts = withdrawn = 0
    with connect(cfg.argilla) as conn:
        ds = conn.find_dataset(cfg.dataset, cfg.argilla.workspace)
        if ds is None:
            if find_journals(_journal_dir(cfg), conn.api_url, cfg.argilla.workspace, cfg.dataset):
                raise AlignError(
                    f"no dataset '{cfg.dataset}' in workspace '{cfg.argilla.workspace}' at {conn.api_url}; the labels "
                    f"pulled so far are kept in {_journal_dir(cfg)}: `align annotate pull dataset={cfg.dataset} "
                    "offline=true` builds a run from them"
                )
            conn.dataset(cfg.dataset, cfg.argilla.workspace)  # raises, listing the datasets there are
        templates.check_dataset(ds, tpl)
        dataset_id = str(ds.id)
        journal = Journal(journal_path(_journal_dir(cfg), conn.api_url, cfg.argilla.workspace, cfg.dataset, dataset_id))
        notes.update({"api_url": conn.api_url, "dataset_id": dataset_id})
        active: dict[str, dict[str, dict[str, Any]]] = {}
        for (rid, user), resp in journal.active().items():
            active.setdefault(rid, {})[user] = resp
        page: list[dict[str, Any]] = []
        page_records: set[str] = set()
        seen_records: set[str] = set()
        bar = tqdm(desc=f"pulling '{cfg.dataset}'", unit="record", mininterval=1.0)
        try:
            for record in conn.records(dataset_id, responses=True, bar=bar):
                seen += 1
                bar.update(1)
                rid = record.get("external_id") or record["id"]
                seen_records.add(rid)
                journaled = active.get(rid, {})
                on_server = set()
                for resp in record.get("responses") or []:
                    on_server.add(resp["user_id"])
                    if resp["status"] == "draft":
                        drafts += 1
                        if resp["user_id"] in journaled:
                            page.append(_withdrawn(journaled[resp["user_id"]], "back to draft", resp["updated_at"]))
                            withdrawn += 1
                        continue
                    entry = {
                        "kind": "response",
                        "record_id": rid,
                        "user_id": resp["user_id"],
                        "username": conn.username(resp["user_id"]),
                        "status": resp["status"],
                        "values": resp.get("values") or {},
                        "updated_at": resp["updated_at"],
                    }
                    if not journal.is_new_response(entry):
                        continue
                    if rid not in journal.records and rid not in page_records:
                        page_records.add(rid)
                        page.append(
                            {
                                "kind": "record",
                                "record_id": rid,
                                "argilla_id": record["id"],
                                "fields": record["fields"],
                                "metadata": record.get("metadata") or {},
                            }
                        )
                    page.append(entry)
                    appended += 1
                for user, resp in journaled.items():
                    if user not in on_server:
                        page.append(_withdrawn(resp, "response deleted", None))
                        withdrawn += 1
                if len(page) >= JOURNAL_BATCH:
                    journal.append(page)
                    page, page_records = [], set()
            # Only after a complete pass: a record missing from it was deleted from the dataset.
            for rid in sorted(set(active) - seen_records):
                for resp in active[rid].values():
                    page.append(_withdrawn(resp, "record deleted", None))
                    withdrawn += 1
        finally:  # what was read before a failure is kept
            bar.close()
            journal.append(page)
    seconds = time.time() - start
    log.info(
        "pulled '%s': %d records read, %d new or changed response(s), %d withdrawn, %d draft(s) ignored; journal %s",
        cfg.dataset,
        seen,
        appended,
        withdrawn,
        drafts,
        journal.path,
    )
    return journal, {
        "records_read": seen,
        "responses_journaled": appended,
        "responses_withdrawn": withdrawn,
        "drafts_ignored": drafts,
        "pull_records_per_s": round(seen / seconds, 1) if seconds > 0 else None,
    }


def _withdrawn(resp: dict[str, Any], why: str, updated_at: str | None) -> dict[str, Any]:
    """The journal line ending a response that no longer counts (the old line stays as history)."""
    return {
        "kind": "response",
        "record_id": resp["record_id"],
        "user_id": resp["user_id"],
        "username": resp["username"],
        "status": "withdrawn",
        "values": {},
        "updated_at": updated_at,
        "was": resp["status"],
        "why": why,
        "withdrawn_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def build_rows(
    journal: Journal, simulated: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One preference row per journaled record with at least one submitted vote, plus counts.

    `simulated` maps the user ids of simulated annotators to their names (see simulate.py); their
    votes are marked and counted apart from people's.
    """
    simulated = simulated or {}
    by_record: dict[str, list[dict[str, Any]]] = {}
    for (rid, _user), resp in journal.active().items():
        by_record.setdefault(rid, []).append(resp)
    rows = []
    counts = {
        "records": 0,
        "records_without_votes": 0,
        "votes": 0,
        "discards": 0,
        "pairs": 0,
        "ties": 0,
        "no_majority": 0,
        "simulated_votes": 0,
        "human_votes": 0,
        "gold_records": 0,
        "gold_votes": 0,
    }
    gold_rows = []
    unknown = [rid for rid in journal.records if rid in by_record and journal.shown_as_a(rid) is None]
    if unknown:
        raise AlignError(
            f"{journal.path}: {len(unknown)} record(s) with votes have no A/B order (e.g. {unknown[0]}): push keeps it "
            "in the journal of its journal_dir, not on the server; pull with the journal_dir the push used, or give "
            "push_runs=[PUSH_RUN] (the push run's records.jsonl has the order)"
        )
    simulated_seen: set[str] = set()
    units = []
    for rid, record in journal.records.items():
        meta = record["metadata"]
        shown_a = journal.shown_as_a(rid) or "a"  # None only for records nobody voted on (checked above)
        fields = record["fields"]
        response_a, response_b = (
            (fields["response_a"], fields["response_b"])
            if shown_a == "a"
            else (fields["response_b"], fields["response_a"])
        )
        votes, discards = [], 0
        for resp in sorted(by_record.get(rid, []), key=lambda r: r["username"]):
            is_simulated = resp["user_id"] in simulated
            if is_simulated:
                simulated_seen.add(resp["username"])
            if resp["status"] == "discarded":
                discards += 1
                continue
            vote = vote_from_answers(resp["values"], shown_a)
            if vote is not None:
                votes.append({"annotator": resp["username"], **vote, "simulated": is_simulated})
        if journal.gold(rid) is not None:  # a known-answer check: never a training pair
            if votes:
                expected = journal.gold(rid)
                gold_rows.append(
                    {
                        "record_id": rid,
                        "prompt": fields["prompt"],
                        "response_a": response_a,
                        "response_b": response_b,
                        "expected": expected,
                        "votes": [
                            {
                                "annotator": v["annotator"],
                                "choice": v["choice"],
                                "correct": v["choice"] == expected,
                                "simulated": v["simulated"],
                            }
                            for v in votes
                        ],
                    }
                )
                counts["gold_records"] += 1
                counts["gold_votes"] += len(votes)
            continue
        counts["discards"] += discards
        if not votes:
            counts["records_without_votes"] += 1
            continue
        agg = aggregate(votes)
        majority = agg["majority"]
        winner = {"a": response_a, "b": response_b}.get(majority)
        loser = {"a": response_b, "b": response_a}.get(majority)
        rows.append(
            {
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
            }
        )
        units.append([v["choice"] for v in votes])
        counts["records"] += 1
        counts["votes"] += len(votes)
        counts["simulated_votes"] += sum(v["simulated"] for v in votes)
        counts["human_votes"] += sum(not v["simulated"] for v in votes)
        counts["pairs"] += winner is not None
        counts["ties"] += majority == "tie"
        counts["no_majority"] += majority is None
    counts["pairwise_agreement"] = pairwise_agreement(units)
    counts["krippendorff_alpha"] = krippendorff_alpha(units)
    counts["simulated_annotators"] = sorted(simulated_seen)
    counts["gold"] = gold_rows
    return rows, counts
