"""The presidio redaction backend: Microsoft Presidio's analyzer (spaCy NER plus pattern recognizers)
finds personal data, its anonymizer replaces it with the rules backend's placeholders (`[PERSON]`).

Installed by `pip install 'align[privacy]'` plus a spaCy English pipeline with NER, which is not on
the package index: `python -m spacy download en_core_web_lg` (the default `spacy_model`; any
installed pipeline package name or path works, e.g. en_core_web_sm). `spacy_model=blank` runs the
pattern recognizers alone on a blank English tokenizer: no names or places, nothing to download.

What runs, chosen one by one rather than Presidio's full default registry (which adds UK NHS numbers,
US bank and driver's licence numbers, dates and organisations, and flags every 10-digit id as several
of them):
- spaCy NER -> PERSON (PERSON/PER) and LOCATION (GPE, LOC, FAC); other NER labels are ignored
  (dates, organisations and products are what support conversations are about);
- first names the NER misses (a small model misses lone first names: "an agent called Daniel" came
  out as an organisation): a token is a PERSON when it is capitalised, is a first name in Faker's
  person providers (MIT; Latin-script first names listed by two or more of its 80+ locales,
  `first_name_gazetteer`), is
  not part of a date or number entity, and either is tagged a proper noun mid-sentence (and does
  not modify a common noun: "Dell laptop", "Victoria sponge" are brands) or follows a
  word that introduces a person ("Hi", "Thanks", "called", "named", "ask", "tell", "Mr", "it's",
  "this is", a signature dash or "Cheers,"); a capitalised proper noun right after it is taken as the
  surname. Names outside the list ("Olumide") and names at the start of a sentence with no such word
  are left to NER;
- Presidio's CreditCardRecognizer (Luhn), IbanRecognizer and UsSsnRecognizer (scores raised by
  context words such as "ssn");
- every detector of the rules backend (align/privacy/redact.py) as one recognizer: e-mails (plain
  and spelled out), phones, SSNs, US street addresses, cards, IBANs, IPs and the user's `patterns`.
  So this backend finds everything the rules find, and more.

Departures from Presidio's defaults, and why:
- e-mails, phones and IPs come from the rules, not Presidio's EmailRecognizer, PhoneRecognizer and
  IpRecognizer: the e-mail one validates domains with tldextract, which downloads the public suffix
  list on first use (a network call at run time, and an error offline); the phone one takes any bare
  10-digit id that is a valid number for a phone ("Case #4155550123"), and the IP one redacts
  127.0.0.1, which identifies no one (both measured on data/pii_eval.jsonl);
- the spaCy pipeline is loaded here, never by Presidio, whose SpacyNlpEngine downloads a missing model
  by itself; a missing model is an error that says how to install it;
- findings scoring below `SCORE_THRESHOLD` are dropped (Presidio's default keeps every score, down to
  0.01 for a 9-digit number that might be a driver's licence), and overlaps are resolved as in the
  rules (the longer span wins) before the anonymizer replaces them.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from align.core.errors import AlignError
from align.privacy.redact import TYPES, Finding, Redactor, detector_versions, resolve_overlaps

# Presidio's own default model (its SpacyNlpEngine loads en_core_web_lg); the larger model finds more
# names than en_core_web_sm at ~400 MB.
DEFAULT_SPACY_MODEL = "en_core_web_lg"
# Presidio's pattern scores: 0.4 for a phone number without context, 0.5 for an SSN written 3-2-4,
# 0.85 for NER, 1.0 for a Luhn-valid card. Below 0.4 are its "weak" patterns (bare 9 digits).
SCORE_THRESHOLD = 0.4
BLANK = "blank"
# Presidio entity -> the placeholder the rules backend writes for the same thing.
PLACEHOLDER = {
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP",
    "US_SSN": "SSN",
}
_NER_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}
INSTALL = "pip install 'align[privacy]'"


def model_install_hint(spacy_model: str) -> str:
    return f"python -m spacy download {spacy_model}"


def missing(spacy_model: str) -> str | None:
    """Why the presidio backend cannot run here (a short phrase), or None when it can."""
    import importlib.util

    for module in ("presidio_analyzer", "presidio_anonymizer", "spacy", "faker"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({INSTALL})"
    if spacy_model == BLANK:
        return None
    import spacy.util

    if not (spacy.util.is_package(spacy_model) or _is_path(spacy_model)):
        return f"the spaCy model {spacy_model} is not installed (`{model_install_hint(spacy_model)}`)"
    return None


class PresidioRedactor:
    """Presidio analyzer + anonymizer with the recognizers listed in the module docstring."""

    backend = "presidio"

    def __init__(
        self, phone_region: str = "US", patterns: dict[str, str] | None = None, spacy_model: str = DEFAULT_SPACY_MODEL
    ):
        why = missing(spacy_model)
        if why:
            raise AlignError(f"redaction backend presidio: {why}; or use backend=rules (no names or places)")
        # The rules validate phone_region and the user's patterns, and lend their detectors below.
        self.rules = Redactor(phone_region, patterns)
        # Presidio logs a line per analyzed text at INFO ("Fetching all recognizers"): thousands per push.
        logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
        self.spacy_model = spacy_model
        self.nlp = _load_pipeline(spacy_model)
        self.has_ner = "ner" in self.nlp.pipe_names
        self.analyzer = self._analyzer()
        from presidio_anonymizer import AnonymizerEngine

        self.anonymizer = AnonymizerEngine()

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in text order, typed as the rules type them (PHONE, not PHONE_NUMBER)."""
        results = self.analyzer.analyze(text, language="en", score_threshold=SCORE_THRESHOLD)
        return resolve_overlaps(
            [Finding(r.start, r.end, PLACEHOLDER.get(r.entity_type, r.entity_type)) for r in results]
        )

    def redact(self, text: str) -> tuple[str, Counter]:
        """`text` with each finding replaced by `[TYPE]` (by Presidio's anonymizer), and the count per type."""
        from presidio_analyzer import RecognizerResult
        from presidio_anonymizer.entities import OperatorConfig

        findings = self.find(text)
        if not findings:
            return text, Counter()
        results = [RecognizerResult(f.type, f.start, f.end, 1.0) for f in findings]
        operators = {t: OperatorConfig("replace", {"new_value": f"[{t}]"}) for t in {f.type for f in findings}}
        out = self.anonymizer.anonymize(text=text, analyzer_results=results, operators=operators)
        return out.text, Counter(f.type for f in findings)

    def describe(self) -> dict[str, Any]:
        """The backend, its packages' versions and the spaCy pipeline (name, version, NER or not)."""
        from importlib import metadata

        meta = self.nlp.meta
        return {
            "backend": self.backend,
            **{name: metadata.version(name) for name in ("presidio-analyzer", "presidio-anonymizer", "spacy", "faker")},
            "spacy_model": self.spacy_model,
            "spacy_model_name": f"{meta.get('lang', 'en')}_{meta.get('name', 'blank')}",
            "spacy_model_version": meta.get("version", ""),
            "ner": self.has_ner,
            **detector_versions(),
        }

    # -- set-up --------------------------------------------------------------------------------------

    def _analyzer(self):
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            IbanRecognizer,
            SpacyRecognizer,
            UsSsnRecognizer,
        )

        ner_config = NerModelConfiguration(
            model_to_presidio_entity_mapping=_NER_LABELS, labels_to_ignore=_ignored_labels(self.nlp)
        )
        engine = SpacyNlpEngine(
            models=[{"lang_code": "en", "model_name": self.spacy_model}], ner_model_configuration=ner_config
        )
        engine.nlp = {"en": self.nlp}  # loaded by us: SpacyNlpEngine.load() would download a missing model
        registry = RecognizerRegistry(supported_languages=["en"])
        if self.has_ner:
            registry.add_recognizer(SpacyRecognizer(supported_entities=["PERSON", "LOCATION"]))
        for recognizer in (CreditCardRecognizer(), IbanRecognizer(), UsSsnRecognizer()):
            registry.add_recognizer(recognizer)
        registry.add_recognizer(_RulesRecognizer(self.rules))
        if self.has_ner:
            registry.add_recognizer(_FirstNameRecognizer())
        return AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])


def _RulesRecognizer(rules: Redactor):
    """Every finding of the rules backend, as a Presidio recognizer (entities named as Presidio names them)."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    entity = {placeholder: name for name, placeholder in PLACEHOLDER.items()}

    class RulesRecognizer(EntityRecognizer):
        def load(self) -> None:
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            return [RecognizerResult(entity.get(f.type, f.type), f.start, f.end, 1.0) for f in rules.find(text)]

    supported = sorted({entity.get(t, t) for t in (*TYPES, *rules.patterns)})
    return RulesRecognizer(supported_entities=supported, name="align_rules", supported_language="en")


# Words after which a capitalised first name is a person whatever the tagger says: greetings,
# sign-offs, "called"/"named", verbs that take a person ("ask Ana", "tell Ana"), titles. Two-word
# openers ("it's", "I'm", "this is", "name is") are matched on the two lower-cased tokens.
_PERSON_CUES = frozenset(
    "hi hello hey dear thanks thank cheers regards best love called named ask tell told asked thanked "
    "mr mrs ms miss dr sir madam agent".split()
)
_PERSON_CUE_PAIRS = frozenset({("it", "'s"), ("i", "'m"), ("i", "am"), ("this", "is"), ("name", "is")})
# NER labels that say a capitalised first name is something else: "in May", "on June 3".
_NOT_A_NAME = frozenset({"DATE", "TIME", "MONEY", "QUANTITY", "CARDINAL", "ORDINAL", "PERCENT"})
_NAME_SCORE = 0.6


def first_name_gazetteer() -> frozenset[str]:
    """Capitalised Latin-script first names listed by at least two of Faker's person locales (cached).

    Two, because single lists carry words: Faker's generic `en` list alone has "West", "General",
    "Fed", "Brain", "China" (US baby-name records), and on real dialogues (HH-RLHF) those were most of
    what the gazetteer added beyond NER. The price: names only one locale lists ("Rahul") are left to NER.
    """
    global _FIRST_NAMES
    if _FIRST_NAMES is None:
        import importlib
        import pkgutil
        import re

        import faker.providers.person as person

        locales: Counter = Counter()
        for module in pkgutil.iter_modules(person.__path__):
            provider = importlib.import_module(f"{person.__name__}.{module.name}").Provider
            names: set[str] = set()
            for attr in ("first_names", "first_names_male", "first_names_female"):
                values = provider.__dict__.get(attr)
                if isinstance(values, (dict, list, tuple, set)):
                    names.update(n for n in values if re.fullmatch(r"[A-Z][a-z]+(?:-[A-Z][a-z]+)?", n))
            locales.update(names)
        _FIRST_NAMES = frozenset(name for name, n in locales.items() if n >= 2)
    return _FIRST_NAMES


_FIRST_NAMES: frozenset[str] | None = None


def _FirstNameRecognizer():
    """PERSON for first names NER missed, by the rule in the module docstring (works on spaCy's tokens)."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    class FirstNameRecognizer(EntityRecognizer):
        def load(self) -> None:
            self.names = first_name_gazetteer()

        def analyze(self, text, entities, nlp_artifacts=None):
            doc = nlp_artifacts.tokens if nlp_artifacts is not None else None
            if doc is None:
                return []
            results, i = [], 0
            while i < len(doc):
                token = doc[i]
                if not self._is_name(token):
                    i += 1
                    continue
                end = i + 1
                while end < len(doc) and end - i < 3 and _surname(doc[end]):
                    end += 1
                results.append(RecognizerResult("PERSON", token.idx, doc[end - 1].idx + len(doc[end - 1]), _NAME_SCORE))
                i = end
            return results

        def _is_name(self, token) -> bool:
            if token.text not in self.names or token.ent_type_ in _NOT_A_NAME:
                return False
            if _after_person_cue(token):
                return True
            # "Dell laptop", "Victoria sponge": a name modifying a common noun is a brand or a product.
            brand = token.dep_ == "compound" and token.head.pos_ == "NOUN"
            return token.pos_ == "PROPN" and not token.is_sent_start and not brand

    return FirstNameRecognizer(supported_entities=["PERSON"], name="align_first_names", supported_language="en")


def _after_person_cue(token) -> bool:
    """A cue word among the two words before `token` or a cue pair right before it (punctuation and
    line breaks skipped: "Cheers,\\nAna"), or a signature: the name ends the text after a dash."""
    words = [t for t in token.doc[max(0, token.i - 6) : token.i] if not (t.is_punct or t.is_space)][-2:]
    lower = [t.lower_ for t in words]
    if any(w in _PERSON_CUES for w in lower) or tuple(lower) in _PERSON_CUE_PAIRS:
        return True
    rest = token.doc[token.i + 1 :]
    before = token.doc[token.i - 1] if token.i else None
    return (
        before is not None
        and before.text in ("-", "--", "\u2013", "\u2014")
        and all(t.is_punct or t.is_space for t in rest)
    )


def _surname(token) -> bool:
    return token.is_title and token.is_alpha and token.pos_ == "PROPN" and token.ent_type_ not in _NOT_A_NAME


def _load_pipeline(spacy_model: str):
    import spacy

    if spacy_model == BLANK:
        return spacy.blank("en")
    try:
        return spacy.load(spacy_model)
    except OSError as exc:
        raise AlignError(
            f"spaCy model {spacy_model} could not be loaded ({exc}); install it with "
            f"`{model_install_hint(spacy_model)}`"
        ) from None


def _ignored_labels(nlp) -> list[str]:
    if "ner" not in nlp.pipe_names:
        return []
    return sorted(set(nlp.get_pipe("ner").labels) - set(_NER_LABELS))


def _is_path(name: str) -> bool:
    from pathlib import Path

    return ("/" in name or name.startswith(".")) and Path(name).exists()
