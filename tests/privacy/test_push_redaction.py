"""The redaction step of `annotate push`, without a server: what is redacted, dropped or skipped."""

from __future__ import annotations

from align.annotate.push import redact_pairs
from align.privacy.redact import Redactor


def pair(prompt: str, a: str, b: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "response_a": a,
        "response_b": b,
        "policy": "runs/sft",
        "sampling": None,
        "source": "test",
        "where": "pairs.jsonl:1",
    }


PAIRS = [
    pair("Mail me at ann@example.com", "Done.", "No."),
    pair("Which one?", "Write to ann@example.com", "Write to bob@example.org"),  # differ only in the address
    pair("Version?", "2.13.0", "2.12.1"),
]


def test_redact_mode_counts_types_and_skips_pairs_made_identical():
    kept, report = redact_pairs(PAIRS, Redactor(), "redact")
    assert [p["prompt"][0]["content"] for p in kept] == ["Mail me at [EMAIL]", "Version?"]
    assert kept[1] is PAIRS[2]  # untouched pairs pass through as they were
    assert report == {
        "mode": "redact",
        "findings": {"EMAIL": 3},
        "pairs_redacted": 1,
        "pairs_dropped": 0,
        "skipped_identical_after_redaction": 1,
    }
    assert kept[0]["where"] == "pairs.jsonl:1" and kept[0]["policy"] == "runs/sft"


def test_drop_mode_and_off():
    kept, report = redact_pairs(PAIRS, Redactor(), "drop")
    assert kept == [PAIRS[2]] and report["pairs_dropped"] == 2
    kept, report = redact_pairs(PAIRS, None, "off")
    assert kept == PAIRS and report["findings"] == {}
