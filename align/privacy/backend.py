"""Which redactor runs: `backend: auto | presidio | rules` (see redact.py for the rules and
presidio_backend.py for Presidio). Kept apart from both so neither imports the other's chooser."""

from __future__ import annotations

import logging

from align.core.errors import AlignError
from align.privacy import presidio_backend
from align.privacy.presidio_backend import DEFAULT_SPACY_MODEL
from align.privacy.redact import Redactor

log = logging.getLogger(__name__)

BACKENDS = ("auto", "presidio", "rules")
__all__ = ["BACKENDS", "DEFAULT_SPACY_MODEL", "check_backend", "make_redactor"]


def make_redactor(
    backend: str = "auto",
    phone_region: str = "US",
    patterns: dict[str, str] | None = None,
    spacy_model: str = DEFAULT_SPACY_MODEL,
):
    """The redactor for `backend`: `rules`, `presidio` (an error saying how to install what is missing),
    or `auto` (presidio when it and its spaCy model are installed, else the rules, with a warning that
    names and places are then not found). Both have `find`, `redact` and `describe`."""
    check_backend(backend)
    if backend == "rules":
        return Redactor(phone_region, patterns)
    if backend == "auto":
        missing = presidio_backend.missing(spacy_model)
        if missing:
            log.warning(
                "redaction backend auto: %s, so the rules backend runs (no personal names or places are "
                "found); set backend=rules to silence this",
                missing,
            )
            return Redactor(phone_region, patterns)
    return presidio_backend.PresidioRedactor(phone_region, patterns, spacy_model)


def check_backend(backend: str, key: str = "backend") -> None:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise AlignError(f"'{key}' must be one of {', '.join(BACKENDS)}, got '{backend}'")
