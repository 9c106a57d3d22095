"""Pull reviewed replies back as preference pairs: `align feedback reviewed dataset=NAME`.

Reads the review dataset `align feedback review` pushed: each submitted review with verdict `rewrite` and a
better reply gives a pair {prompt, chosen: the better reply, rejected: the reply users saw} in the run's
`preferences.jsonl`, which `align dpo data.train=RUN` trains on (and the loop's `feedback:` source with
mode pairs). Verdicts `fine` and `unsure`, `rewrite` without a reply, discards and drafts are counted, not
paired. Better replies go through `align redact`'s detectors too (reviewers may paste personal data).
The run holds reviewers' usernames, so its files are written 0600, like the annotation journals.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from align.annotate.connection import ArgillaConfig, connect
from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError

log = logging.getLogger(__name__)

STAGE = "feedback reviewed"
PREFERENCES = "preferences.jsonl"


@dataclass
class Config(runs.RunOutput):
    """Config of `align feedback reviewed`."""

    dataset: str = ""
    """The review dataset (`align feedback review dataset=NAME`)."""
    phone_region: str = "US"
    """Region whose national phone formats the redaction of better replies recognises."""
    redaction_backend: str = "auto"
    """Who finds personal data in better replies: presidio, rules, or auto (presidio when installed), as push."""
    argilla: ArgillaConfig = field(default_factory=ArgillaConfig)
    """Connection to Argilla."""


def run(cfg: Config) -> dict[str, Any]:
    from align.annotate import template as templates
    from align.annotate.review import review_template
    from align.privacy import redact as privacy

    if not cfg.dataset:
        raise AlignError("'dataset' is required: the review dataset `align feedback review` pushed")
    from align.privacy.backend import make_redactor

    redactor = make_redactor(cfg.redaction_backend, cfg.phone_region, {})
    counts: Counter = Counter()
    findings: Counter = Counter()
    pairs = []
    with connect(cfg.argilla) as conn:
        ds = conn.dataset(cfg.dataset, cfg.argilla.workspace)
        templates.check_dataset(ds, review_template())
        for record in conn.records(str(ds.id), responses=True):
            counts["records"] += 1
            for response in record.get("responses") or []:
                status = response.get("status")
                if status != "submitted":
                    counts[f"responses_{status}"] += 1
                    continue
                values = response.get("values") or {}
                verdict = (values.get("verdict") or {}).get("value")
                better = ((values.get("better_reply") or {}).get("value") or "").strip()
                counts[f"verdict_{verdict}"] += 1
                if verdict != "rewrite":
                    continue
                if not better or better == record["fields"]["reply"].strip():
                    counts["rewrite_without_a_new_reply"] += 1
                    continue
                better = privacy.redact_value(redactor, better, findings)
                pairs.append(
                    {
                        "prompt": record["fields"]["prompt"],
                        "chosen": [{"role": "assistant", "content": better}],
                        "rejected": [{"role": "assistant", "content": record["fields"]["reply"]}],
                        "policy_run": (record.get("metadata") or {}).get("policy_run"),
                        "source": (record.get("metadata") or {}).get("source"),
                        "record_id": record["external_id"],
                        "reviewer": conn.username(str(response.get("user_id"))),
                        "origin": "review",
                    }
                )
        api_url = conn.api_url
    if not pairs:
        raise AlignError(f"dataset '{cfg.dataset}': no submitted review with a better reply yet ({dict(counts)})")

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_:
        fd = os.open(run_.path / PREFERENCES, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
        run_.add_output("preferences", PREFERENCES, rows=len(pairs))
        run_.notes.update(
            api_url=api_url,
            dataset=cfg.dataset,
            redaction_findings=dict(findings),
            redaction_detectors=redactor.describe(),
        )
        run_.metrics.update(pairs=len(pairs), reviewers=len({p["reviewer"] for p in pairs}), **dict(counts))
        return runs.finish(run_)
