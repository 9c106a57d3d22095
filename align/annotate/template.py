"""Dataset templates: the fields, questions and metadata annotators see, from align/annotate/templates/.

A template is YAML data (see align/annotate/templates/pairwise.yaml; shipped inside the package, like
the guidelines in align/annotate/guidelines/, so a non-editable install finds them). `load_template`
validates it; `settings` turns it into `rg.Settings` (fields, questions, metadata, guidelines, task
distribution); `create_dataset` creates and publishes a dataset with them; `check_dataset` compares
an existing dataset with the template, so pushing into (or pulling from) a dataset built for another
task fails with a clear message instead of a crash halfway through.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from align.annotate.connection import sdk
from align.core.errors import AlignError, nearest

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
GUIDELINES_DIR = Path(__file__).resolve().parent / "guidelines"

# What push and pull rely on; everything else in a template is free to change.
REQUIRED_FIELDS = {"prompt": "chat", "response_a": "text", "response_b": "text"}
PREFERENCE = "preference"
PREFERENCE_LABELS = ("A", "B", "tie")
FIELD_TYPES = {"text", "chat"}
QUESTION_TYPES = {"label": "label_selection", "rating": "rating", "text": "text"}
METADATA_TYPES = {"terms", "integer", "float"}


@dataclass
class Template:
    name: str
    path: Path
    fields: list[dict[str, Any]]
    questions: list[dict[str, Any]]
    metadata: list[dict[str, Any]]

    def question(self, name: str) -> dict[str, Any] | None:
        return next((q for q in self.questions if q["name"] == name), None)


def find_file(ref: str, folder: Path, suffixes: tuple[str, ...], what: str) -> Path:
    """A file given as a path, or by name in `folder` (the shipped templates or guidelines)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    for suffix in ("",) + suffixes:
        candidate = folder / f"{ref}{suffix}"
        if candidate.is_file():
            return candidate
    names = sorted(p.stem for p in folder.glob("*")) if folder.is_dir() else []
    raise AlignError(
        f"{what} '{ref}' not found: give a file path or one of {', '.join(names) or 'none'}{nearest(ref, names)}"
    )


def load_template(ref: str) -> Template:
    path = find_file(ref, TEMPLATES_DIR, (".yaml", ".yml"), "template")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise AlignError(f"{path}: invalid YAML ({exc})") from None
    unknown = set(data) - {"fields", "questions", "metadata"}
    if unknown:
        raise AlignError(
            f"{path}: unknown template key(s) {sorted(unknown)}; a template has fields, questions, metadata"
        )
    tpl = Template(
        path.stem,
        path,
        list(data.get("fields") or []),
        list(data.get("questions") or []),
        list(data.get("metadata") or []),
    )
    _validate(tpl)
    return tpl


def _validate(tpl: Template) -> None:
    where = str(tpl.path)
    for kind, items, types in (
        ("field", tpl.fields, FIELD_TYPES),
        ("question", tpl.questions, set(QUESTION_TYPES)),
        ("metadata", tpl.metadata, METADATA_TYPES),
    ):
        seen = set()
        for item in items:
            if not isinstance(item, dict) or "name" not in item or "type" not in item:
                raise AlignError(f"{where}: each {kind} needs a name and a type, got {item!r}")
            if item["type"] not in types:
                raise AlignError(f"{where}: {kind} '{item['name']}' has type {item['type']!r}; one of {sorted(types)}")
            if item["name"] in seen:
                raise AlignError(f"{where}: {kind} '{item['name']}' appears twice")
            seen.add(item["name"])
    fields = {f["name"]: f["type"] for f in tpl.fields}
    for name, kind in REQUIRED_FIELDS.items():
        if fields.get(name) != kind:
            raise AlignError(f"{where}: a pairwise template needs field '{name}' of type {kind}")
    pref = tpl.question(PREFERENCE)
    if pref is None or pref["type"] != "label" or tuple(pref.get("labels") or ()) != PREFERENCE_LABELS:
        raise AlignError(
            f"{where}: a pairwise template needs question '{PREFERENCE}' of type label with labels "
            f"{', '.join(PREFERENCE_LABELS)} (in that order)"
        )
    for q in tpl.questions:
        if q["type"] == "rating" and not q.get("values"):
            raise AlignError(f"{where}: rating question '{q['name']}' needs `values`, e.g. [1, 2, 3, 4, 5]")
        if q["type"] == "label" and not q.get("labels"):
            raise AlignError(f"{where}: label question '{q['name']}' needs `labels`")


def guidelines_text(ref: str) -> str:
    """Guidelines as Argilla stores them (it strips surrounding whitespace), so texts compare equal."""
    return find_file(ref, GUIDELINES_DIR, (".md", ".txt"), "guidelines").read_text(encoding="utf-8").strip()


def text_hash(text: str | None) -> str | None:
    """Short content hash of guidelines, as recorded in push runs."""
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# -- SDK settings ----------------------------------------------------------------------------------


def settings(tpl: Template, guidelines: str, min_submitted: int):
    """`rg.Settings` for a template: fields, questions, metadata (hidden where the template says)."""
    rg = sdk()
    fields = []
    for f in tpl.fields:
        kind = rg.ChatField if f["type"] == "chat" else rg.TextField
        fields.append(
            kind(
                name=f["name"],
                title=f.get("title", f["name"]),
                required=bool(f.get("required", True)),
                use_markdown=bool(f.get("markdown", f["type"] == "chat")),
            )
        )
    questions = []
    for q in tpl.questions:
        common = {
            "name": q["name"],
            "title": q.get("title", q["name"]),
            "description": q.get("description"),
            "required": bool(q.get("required", False)),
        }
        if q["type"] == "label":
            labels = q["labels"]
            labels = (
                {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else [str(x) for x in labels]
            )
            questions.append(rg.LabelQuestion(labels=labels, **common))
        elif q["type"] == "rating":
            questions.append(rg.RatingQuestion(values=[int(v) for v in q["values"]], **common))
        else:
            questions.append(rg.TextQuestion(use_markdown=bool(q.get("markdown", False)), **common))
    kinds = {
        "terms": rg.TermsMetadataProperty,
        "integer": rg.IntegerMetadataProperty,
        "float": rg.FloatMetadataProperty,
    }
    metadata = [
        kinds[m["type"]](
            name=m["name"], title=m.get("title", m["name"]), visible_for_annotators=bool(m.get("visible", True))
        )
        for m in tpl.metadata
    ]
    return rg.Settings(
        fields=fields,
        questions=questions,
        metadata=metadata,
        guidelines=guidelines,
        allow_extra_metadata=True,
        distribution=rg.TaskDistribution(min_submitted=min_submitted),
    )


def create_dataset(conn, name: str, workspace: str, tpl: Template, guidelines: str, min_submitted: int):
    """Create and publish a dataset from a template. A draft left by an interrupted create is replaced."""
    rg = sdk()
    existing = conn.find_dataset(name, workspace)
    if existing is not None:
        if existing._model.status != "draft":
            return existing
        log.info("dataset '%s' was left as a draft by an interrupted push; recreating it", name)
        conn.call(f"DELETE dataset {name}", existing.delete)
    ws = conn.workspace(workspace, create=True)
    ds = rg.Dataset(name=name, workspace=ws, settings=settings(tpl, guidelines, min_submitted), client=conn.client)
    # Not retried once sent: a second create could meet a half-made first one (the next push replaces a draft).
    return conn.call(f"POST dataset {name}", ds.create, idempotent=False)


def update_guidelines(conn, ds, guidelines: str) -> None:
    """Replace the guidelines annotators see (the dataset's other settings are left as they are)."""
    ds.settings.guidelines = guidelines
    conn.call(f"PATCH dataset {ds.name} settings", ds.update)


def _options(question) -> list[str]:
    values = (
        getattr(question, "labels", None) if question.type == "label_selection" else getattr(question, "values", None)
    )
    return [str(v) for v in values or []]


def check_dataset(ds, tpl: Template) -> None:
    """Raise an AlignError if dataset `ds` (an `rg.Dataset`) does not have the template's fields and questions."""
    have_fields = {f.name: f.type for f in ds.settings.fields}
    have_questions = {q.name: q for q in ds.settings.questions}
    problems = []
    for f in tpl.fields:
        if have_fields.get(f["name"]) != f["type"]:
            problems.append(
                f"field '{f['name']}' ({f['type']}) is "
                + ("missing" if f["name"] not in have_fields else f"of type {have_fields[f['name']]}")
            )
    for q in tpl.questions:
        want_type = QUESTION_TYPES[q["type"]]
        have = have_questions.get(q["name"])
        if have is None:
            problems.append(f"question '{q['name']}' is missing")
        elif have.type != want_type:
            problems.append(f"question '{q['name']}' is of type {have.type}, the template has {want_type}")
        elif want_type in ("label_selection", "rating"):
            labels = q.get("labels") or {}
            want = [
                str(v)
                for v in (
                    q["values"] if want_type == "rating" else (labels.keys() if isinstance(labels, dict) else labels)
                )
            ]
            if _options(have) != want:
                problems.append(f"question '{q['name']}' has options {_options(have)}, the template has {want}")
    extra = sorted(set(have_questions) - {q["name"] for q in tpl.questions})
    if extra:
        problems.append(f"questions not in the template: {', '.join(extra)}")
    if problems:
        raise AlignError(
            f"Argilla dataset '{ds.name}' does not match template '{tpl.name}' ({tpl.path}): "
            + "; ".join(problems)
            + ". Use another dataset name, or the template the dataset was created with"
        )
