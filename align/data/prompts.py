"""Prompt sets: the prompts a policy is sampled on, from any supported container.

A prompt becomes a conversation in the canonical message format (`[{"role", "content"}]`) ending with
a user turn, so the model's chat template formats it exactly as training does. Records are read
with `align.data.records.read_records` (JSONL(.gz), JSON, Parquet, CSV/TSV, TXT, a `datasets`
directory, a run directory); what a record holds is decided by its fields, never by the file name:

- a JSON string or a line of a .txt file: the prompt itself;
- an object with `messages` (a conversation; a trailing assistant turn is dropped), or with the
  configured prompt field (default: the first of `prompt`, `goal`) as a string or messages;
- an object with `turns` (a list of user turns, as MT-bench and Vicuna bench questions): the first
  turn, since later turns need the model's reply to the first.

Each prompt keeps a stable `prompt_id` (the record's id field when it has one, else a hash of the
text) and its `source` (`file:line`), so errors and annotators can point back at the line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from align.core.errors import AlignError
from align.data.preferences import as_messages
from align.data.records import read_records

Messages = list[dict[str, str]]

# Prompt fields tried in order when none is configured (CSV columns included: `goal` is AdvBench's).
PROMPT_FIELDS = ("prompt", "goal")
# Id fields tried in order; without one, the id is a hash of the prompt.
ID_FIELDS = ("prompt_id", "id", "question_id", "uid", "key")


@dataclass
class Prompt:
    messages: Messages
    prompt_id: str
    source: str


def load_prompts(path: str, field: str | None = None, limit: int | None = None) -> list[Prompt]:
    """Read up to `limit` prompts from `path` in file order. An empty set is an AlignError."""
    if limit is not None and limit < 1:
        raise AlignError(f"'max_prompts' must be >= 1 or unset, got {limit}")
    prompts: list[Prompt] = []
    for where, record in read_records(path, run_output="prompts"):
        prompts.append(parse_prompt(record, where, field))
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise AlignError(f"{path}: no prompts (the prompt set is empty); give a file with one prompt per record")
    return prompts


def parse_prompt(record: Any, where: str, field: str | None = None) -> Prompt:
    messages = _messages(record, where, field)
    if not messages or not any(m["content"].strip() for m in messages):
        raise AlignError(f"{where}: empty prompt")
    if messages[-1]["role"] == "assistant":
        # A conversation that ends with a reply: the prompt is everything before that reply.
        messages = messages[:-1]
    if not messages or messages[-1]["role"] != "user":
        raise AlignError(f"{where}: a prompt must end with a user turn (got roles {[m['role'] for m in messages]})")
    return Prompt(messages, _prompt_id(record, messages), where)


def _messages(record: Any, where: str, field: str | None) -> Messages:
    if isinstance(record, str):
        return as_messages(record, where, "prompt", default_role="user")
    if not isinstance(record, dict):
        raise AlignError(f"{where}: a prompt must be a string or an object, got {type(record).__name__}")
    if field is not None:
        if field not in record:
            raise AlignError(f"{where}: no field '{field}' (fields: {', '.join(map(str, record))}); set `prompt_field`")
        return _from_value(record[field], where, field)
    if "messages" in record:
        return _from_value(record["messages"], where, "messages")
    for name in PROMPT_FIELDS:
        if name in record:
            return _from_value(record[name], where, name)
    if "turns" in record:
        return _first_turn(record["turns"], where)
    raise AlignError(
        f"{where}: cannot find the prompt in fields {sorted(map(str, record))}; expected one of "
        f"{', '.join(PROMPT_FIELDS + ('messages', 'turns'))}, or set `prompt_field` to the column that holds it"
    )


def _from_value(value: Any, where: str, name: str) -> Messages:
    if value is None:
        raise AlignError(f"{where}: field '{name}' is empty")
    return as_messages(value, where, name, default_role="user")


def _first_turn(turns: Any, where: str) -> Messages:
    if not isinstance(turns, list) or not turns:
        raise AlignError(f"{where}: field 'turns' must be a non-empty list")
    first = turns[0]
    if isinstance(first, dict) and "content" in first:  # [{"content": ...}] turns
        first = first["content"]
    if not isinstance(first, str):
        raise AlignError(f"{where}: turns[0] must be a string, got {type(first).__name__}")
    return [{"role": "user", "content": first}] if first.strip() else []


def _prompt_id(record: Any, messages: Messages) -> str:
    if isinstance(record, dict):
        for name in ID_FIELDS:
            if record.get(name) not in (None, ""):
                return str(record[name])
    payload = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
