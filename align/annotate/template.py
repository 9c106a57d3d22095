"""Dataset templates: the fields, questions and metadata annotators see, from annotation/templates/.

A template is YAML data (see annotation/templates/pairwise.yaml). `load_template` validates it;
`create_dataset` turns it into the REST calls that create and publish an Argilla dataset;
`check_dataset` compares an existing dataset with it, so pushing into (or pulling from) a dataset
built for another task fails with a clear message instead of a crash halfway through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from align.core.errors import AlignError, nearest

log = logging.getLogger(__name__)

ANNOTATION_DIR = Path(__file__).resolve().parents[2] / "annotation"
TEMPLATES_DIR = ANNOTATION_DIR / "templates"
GUIDELINES_DIR = ANNOTATION_DIR / "guidelines"

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
    """A file given as a path, or by name in `folder` (annotation/templates, annotation/guidelines)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    for suffix in ("",) + suffixes:
        candidate = folder / f"{ref}{suffix}"
        if candidate.is_file():
            return candidate
    names = sorted(p.stem for p in folder.glob("*")) if folder.is_dir() else []
    raise AlignError(f"{what} '{ref}' not found: give a file path or one of {', '.join(names) or 'none'}{nearest(ref, names)}")


def load_template(ref: str) -> Template:
    path = find_file(ref, TEMPLATES_DIR, (".yaml", ".yml"), "template")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise AlignError(f"{path}: invalid YAML ({exc})") from None
    unknown = set(data) - {"fields", "questions", "metadata"}
    if unknown:
        raise AlignError(f"{path}: unknown template key(s) {sorted(unknown)}; a template has fields, questions, metadata")
    tpl = Template(path.stem, path, list(data.get("fields") or []), list(data.get("questions") or []),
                   list(data.get("metadata") or []))
    _validate(tpl)
    return tpl


def _validate(tpl: Template) -> None:
    where = str(tpl.path)
    for kind, items, types in (("field", tpl.fields, FIELD_TYPES), ("question", tpl.questions, set(QUESTION_TYPES)),
                               ("metadata", tpl.metadata, METADATA_TYPES)):
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
        raise AlignError(f"{where}: a pairwise template needs question '{PREFERENCE}' of type label with labels "
                         f"{', '.join(PREFERENCE_LABELS)} (in that order)")
    for q in tpl.questions:
        if q["type"] == "rating" and not q.get("values"):
            raise AlignError(f"{where}: rating question '{q['name']}' needs `values`, e.g. [1, 2, 3, 4, 5]")
        if q["type"] == "label" and not q.get("labels"):
            raise AlignError(f"{where}: label question '{q['name']}' needs `labels`")


def guidelines_text(ref: str) -> str:
    return find_file(ref, GUIDELINES_DIR, (".md", ".txt"), "guidelines").read_text(encoding="utf-8")


# -- REST payloads ---------------------------------------------------------------------------------

def field_payload(f: dict[str, Any]) -> dict[str, Any]:
    settings = {"type": f["type"], "use_markdown": bool(f.get("markdown", f["type"] == "chat"))}
    return {"name": f["name"], "title": f.get("title", f["name"]), "required": bool(f.get("required", True)),
            "settings": settings}


def question_payload(q: dict[str, Any]) -> dict[str, Any]:
    kind = QUESTION_TYPES[q["type"]]
    if kind == "label_selection":
        labels = q["labels"]
        options = [{"value": str(v), "text": str(t)} for v, t in (labels.items() if isinstance(labels, dict) else
                                                                    ((x, x) for x in labels))]
        settings: dict[str, Any] = {"type": kind, "options": options}
    elif kind == "rating":
        settings = {"type": kind, "options": [{"value": int(v)} for v in q["values"]]}
    else:
        settings = {"type": kind, "use_markdown": bool(q.get("markdown", False))}
    payload = {"name": q["name"], "title": q.get("title", q["name"]), "required": bool(q.get("required", False)),
               "settings": settings}
    if q.get("description"):
        payload["description"] = q["description"]
    return payload


def metadata_payload(m: dict[str, Any]) -> dict[str, Any]:
    return {"name": m["name"], "title": m.get("title", m["name"]), "settings": {"type": m["type"]},
            "visible_for_annotators": bool(m.get("visible", True))}


def create_dataset(conn, name: str, workspace: str, tpl: Template, guidelines: str, min_submitted: int) -> dict[str, Any]:
    """Create and publish a dataset from a template. A draft left by an interrupted create is replaced."""
    existing = conn.find_dataset(name, workspace)
    if existing is not None:
        if existing["status"] != "draft":
            return existing
        log.info("dataset '%s' was left as a draft by an interrupted push; recreating it", name)
        conn.request("DELETE", f"/api/v1/datasets/{existing['id']}")
    ws_id = conn.workspace_id(workspace, create=True)
    ds = conn.request("POST", "/api/v1/datasets", json={
        "name": name, "workspace_id": ws_id, "guidelines": guidelines, "allow_extra_metadata": True,
        "distribution": {"strategy": "overlap", "min_submitted": min_submitted},
    })
    base = f"/api/v1/datasets/{ds['id']}"
    for f in tpl.fields:
        conn.request("POST", f"{base}/fields", json=field_payload(f))
    for q in tpl.questions:
        conn.request("POST", f"{base}/questions", json=question_payload(q))
    for m in tpl.metadata:
        conn.request("POST", f"{base}/metadata-properties", json=metadata_payload(m))
    return conn.request("PUT", f"{base}/publish")


def check_dataset(conn, ds: dict[str, Any], tpl: Template) -> None:
    """Raise an AlignError if dataset `ds` does not have the template's fields and questions."""
    base = f"/api/v1/datasets/{ds['id']}"
    have_fields = {f["name"]: f["settings"]["type"] for f in conn.get(f"{base}/fields")["items"]}
    have_questions = {q["name"]: q["settings"] for q in conn.get(f"{base}/questions")["items"]}
    problems = []
    for f in tpl.fields:
        if have_fields.get(f["name"]) != f["type"]:
            problems.append(f"field '{f['name']}' ({f['type']}) is "
                            + ("missing" if f["name"] not in have_fields else f"of type {have_fields[f['name']]}"))
    for q in tpl.questions:
        want = question_payload(q)["settings"]
        have = have_questions.get(q["name"])
        if have is None:
            problems.append(f"question '{q['name']}' is missing")
        elif have["type"] != want["type"]:
            problems.append(f"question '{q['name']}' is of type {have['type']}, the template has {want['type']}")
        elif want["type"] in ("label_selection", "rating"):
            have_values = [str(o["value"]) for o in have.get("options", [])]
            want_values = [str(o["value"]) for o in want["options"]]
            if have_values != want_values:
                problems.append(f"question '{q['name']}' has options {have_values}, the template has {want_values}")
    extra = sorted(set(have_questions) - {q["name"] for q in tpl.questions})
    if extra:
        problems.append(f"questions not in the template: {', '.join(extra)}")
    if problems:
        raise AlignError(
            f"Argilla dataset '{ds['name']}' does not match template '{tpl.name}' ({tpl.path}): "
            + "; ".join(problems)
            + ". Use another dataset name, or the template the dataset was created with"
        )
