"""Push flagged and thumbs-down replies to Argilla for review: `align feedback review FEEDBACK_RUN dataset=NAME`.

Reads a feedback run's `review` output (flagged or rated-down rows without a correction; already redacted
and hashed by `align feedback import`) and creates the dataset from the review template
(align/annotate/templates/review.yaml: the conversation, the reply, what users said; questions `verdict` and
`better_reply`) with the annotation machinery of this package (template settings, dataset creation, the template check of
an existing dataset, idempotent upserts by content id). `align feedback reviewed dataset=NAME` brings the
better replies back as preference pairs. Writes a run with `records.jsonl` (record id, feedback source).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from align.annotate import template as templates
from align.annotate.connection import UPSERT_BATCH, ArgillaConfig, connect, sdk
from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError

log = logging.getLogger(__name__)

STAGE = "feedback review"
RECORDS = "records.jsonl"
TEMPLATE = templates.TEMPLATES_DIR / "review.yaml"
GUIDELINES = templates.GUIDELINES_DIR / "feedback_review.md"


@dataclass
class Config(runs.RunOutput):
    """Config of `align feedback review`."""

    feedback: str = ""
    """A feedback run (`align feedback import`): its flagged and thumbs-down rows without a correction."""
    dataset: str = ""
    """Argilla dataset to create (or add to)."""
    guidelines: str = ""
    """Guidelines shown to reviewers (a Markdown path); default align/annotate/guidelines/feedback_review.md."""
    annotators_per_record: int = 1
    """Submitted reviews needed before a record counts as complete."""
    max_records: int | None = None
    """Push at most this many rows (the first ones)."""
    argilla: ArgillaConfig = field(default_factory=ArgillaConfig)
    """Connection to Argilla."""


def review_template() -> templates.Template:
    """The review template (not a pairwise one, so not through `load_template`, which checks that contract)."""
    data = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    return templates.Template("review", TEMPLATE, data["fields"], data["questions"], data["metadata"])


def review_record_id(row: dict[str, Any]) -> str:
    """Content id of a review record: the same conversation, reply and policy run give the same record."""
    payload = json.dumps(
        ["review-v1", row["prompt"], row["reply"], row.get("policy_run")], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def to_record(row: dict[str, Any]) -> dict[str, Any]:
    said = []
    if row.get("rating"):
        said.append(f"rating: {row['rating']}")
    if row.get("flag"):
        said.append(f"flagged: {row['flag']['reason']}")
    return {
        "id": review_record_id(row),
        "fields": {"prompt": row["prompt"], "reply": row["reply"], "feedback": "; ".join(said) or "-"},
        "metadata": {"policy_run": str(row.get("policy_run") or "unknown"), "source": str(row.get("source", ""))},
    }


def run(cfg: Config) -> dict[str, Any]:
    if not cfg.feedback or not cfg.dataset:
        raise AlignError("give the feedback run and the dataset: `align feedback review FEEDBACK_RUN dataset=NAME`")
    manifest = runs.read_manifest(cfg.feedback)
    if manifest.get("stage") != "feedback import":
        raise AlignError(f"{cfg.feedback} is a '{manifest.get('stage')}' run, not a 'feedback import' run")
    with open(runs.output_path(cfg.feedback, manifest, "review"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][: cfg.max_records]
    if not rows:
        raise AlignError(f"{cfg.feedback}: no flagged or thumbs-down replies without a correction to review")
    records = list({r["id"]: r for r in map(to_record, rows)}.values())
    tpl = review_template()
    guidelines = (Path(cfg.guidelines) if cfg.guidelines else GUIDELINES).read_text(encoding="utf-8").strip()

    with connect(cfg.argilla) as conn:
        ds = conn.find_dataset(cfg.dataset, cfg.argilla.workspace)
        if ds is None or ds._model.status == "draft":
            ds = templates.create_dataset(
                conn, cfg.dataset, cfg.argilla.workspace, tpl, guidelines, cfg.annotators_per_record
            )
        else:
            templates.check_dataset(ds, tpl)
        dataset_id = str(ds.id)
        existing = {r["external_id"] for r in conn.records(dataset_id, responses=False)}
        new = [r for r in records if r["id"] not in existing]
        if new:
            rg = sdk()
            owner_id = conn.call("GET /api/v1/me", lambda: conn.client.me.id)
            for i in range(0, len(new), UPSERT_BATCH):
                batch = [
                    rg.Record(id=r["id"], fields=r["fields"], metadata=r["metadata"]) for r in new[i : i + UPSERT_BATCH]
                ]
                conn.call(
                    f"PUT records of '{cfg.dataset}'",
                    lambda: ds.records.log(batch, user_id=owner_id, batch_size=len(batch)),
                )
        api_url = conn.api_url

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_:
        run_.add_input("feedback", cfg.feedback)
        with open(run_.path / RECORDS, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps({"record_id": r["id"], "source": r["metadata"]["source"]}) + "\n")
        run_.add_output("records", RECORDS)
        run_.notes.update(
            api_url=api_url,
            workspace=cfg.argilla.workspace,
            dataset=cfg.dataset,
            dataset_id=dataset_id,
            template=str(TEMPLATE),
            guidelines_sha256=templates.text_hash(guidelines),
        )
        run_.metrics.update(records=len(records), records_new=len(new), records_already_there=len(records) - len(new))
        result = runs.finish(run_)
    print(
        f"pushed {len(new)} new records to '{cfg.dataset}' for review ({len(records) - len(new)} were already there); "
        f"reviewers open {api_url}/dataset/{dataset_id}/annotation-mode"
    )
    return result
