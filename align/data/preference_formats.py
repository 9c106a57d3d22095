"""Readers of each preference format: one record in, canonical rows out (see align/data/preferences.py).

Every TRL preference dataset format reads unchanged (TRL's "Dataset formats" guide), plus three
community formats:

| `format:`        | a record                                                                  | rows                 |
|------------------|---------------------------------------------------------------------------|----------------------|
| `conversational` | `{prompt, chosen, rejected}`: message lists or strings (TRL's explicit prompt) | a pair            |
| `implicit`       | `{chosen, rejected}`, the prompt repeated at the start of both (TRL's implicit prompt) | a pair    |
| `unpaired`       | `{prompt, completion, label}`, label true = desirable (TRL's unpaired preference) | one example  |
| `hh-rlhf`        | `{chosen, rejected}` as `"\\n\\nHuman: ...\\n\\nAssistant: ..."` dialogues       | a pair         |
| `oasst`          | an OpenAssistant message tree with human ranks                             | a pair per ranked sibling pair |
| `pairwise-label` | two outputs and a label 1/2 (0 = tie), e.g. `input, output_1, output_2, label` | a pair (ties counted) |

`detect_format` tells them apart from the first record's fields.

Implicit prompt: the prompt is the longest common prefix of chosen and rejected, as TRL's
`extract_prompt` takes it. Message lists share it whole messages at a time, exactly as TRL. Plain
strings depart from TRL in two ways, because align turns the prompt into a user message and each
reply into an assistant message (TRL's standard format concatenates them as raw text instead):
- the cut is moved back to the last whitespace, so no word is split between prompt and reply
  (TRL cuts "The sky is bl|ue." / "The sky is bl|ack."; align "The sky is|blue." / "The sky is|black.");
  TRL moves only a single space before the cut into the reply;
- the whitespace at the cut is stripped from both messages.
Where TRL would quietly produce something that is no preference pair, align refuses with file:line:
chosen and rejected sharing no prefix, one conversation being the start of the other, a
conversation not ending with the assistant's reply, or the two first differing at a user turn.
Like TRL's `maybe_extract_prompt`, a row with a string `prompt` whose chosen/rejected are whole
conversations (opening with a user or system turn) is read as implicit: its `prompt` field is not
used (counted as `implicit_prompt_field_unused`). TRL also does this for a message-list prompt with
string replies, or message replies that open with the assistant; align reads those as explicit
pairs, its own mixed form (`{"prompt": [messages], "chosen": "text", ...}`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from align.core.errors import AlignError

Format = Literal["auto", "conversational", "implicit", "unpaired", "hh-rlhf", "oasst", "pairwise-label"]
FORMATS = ("conversational", "implicit", "unpaired", "hh-rlhf", "oasst", "pairwise-label")
UNPAIRED = "unpaired"
ROLES = ("system", "user", "assistant")
DEFAULT_COLUMNS = {"prompt": "input", "response_a": "output_1", "response_b": "output_2", "label": "label"}


def detect_format(rec: Any, where: str) -> str:
    """The format of a dataset from its first record."""
    if not isinstance(rec, dict):
        raise AlignError(f"{where}: a preference record must be a JSON object, got {type(rec).__name__}")
    keys = set(rec)
    if "message_tree_id" in keys or (
        "prompt" in keys and isinstance(rec.get("prompt"), dict) and "replies" in rec["prompt"]
    ):
        return "oasst"
    if {"prompt", "completion", "label"} <= keys and not keys & {"chosen", "rejected"}:
        return "unpaired"
    if "prompt" in keys and keys & {"chosen", "rejected"}:
        if _prompt_is_implicit(rec):
            return "implicit"
        return "conversational"  # a missing chosen/rejected is reported by the converter, with file:line
    if {"chosen", "rejected"} <= keys:
        if isinstance(rec["chosen"], str) and "\n\nHuman:" in rec["chosen"] and "\n\nAssistant:" in rec["chosen"]:
            return "hh-rlhf"
        return "implicit"
    if {"output_1", "output_2"} <= keys or {"response_a", "response_b"} & keys:
        return "pairwise-label"
    if {"prompt", "completion"} <= keys:
        raise AlignError(
            f"{where}: prompt/completion rows without a 'label' are supervised data (`align sft`), not preferences; "
            "for `align kto` give each row a boolean 'label' (true = desirable)"
        )
    raise AlignError(
        f"{where}: cannot tell the preference format from fields {sorted(keys)}; expected prompt/chosen/rejected, "
        "chosen/rejected (implicit prompt) or prompt/completion/label (or set data.format to one of "
        f"{', '.join(FORMATS)})"
    )


def converter(fmt: str):
    """The reader of one record of `fmt`: (record, where, columns, report) -> rows."""
    return {
        "conversational": from_conversational,
        "implicit": from_implicit,
        "unpaired": from_unpaired,
        "hh-rlhf": from_hh_rlhf,
        "oasst": from_oasst,
        "pairwise-label": from_pairwise_label,
    }[fmt]


# -- TRL's formats --------------------------------------------------------------------------------


def from_conversational(rec: Any, where: str, cols, report) -> Iterable[dict[str, Any]]:
    if not isinstance(rec, dict):
        raise AlignError(f"{where}: a preference record must be a JSON object")
    for name in ("prompt", "chosen", "rejected"):
        if name not in rec:
            hint = " (without 'prompt', set data.format=implicit)" if name == "prompt" else ""
            raise AlignError(f"{where}: missing field '{name}' (a pair needs prompt, chosen and rejected){hint}")
    if _prompt_is_implicit(rec):  # TRL's maybe_extract_prompt: the prompt is inside chosen/rejected
        yield from from_implicit(rec, where, cols, report)
        return
    prompt = as_messages(rec["prompt"], where, "prompt", default_role="user")
    if not prompt:
        raise AlignError(f"{where}: field 'prompt' is empty")
    row = dict(rec)
    row["prompt"] = prompt
    for name in ("chosen", "rejected"):
        # `null` marks a tie or no majority in pulled annotations: counted by the caller.
        row[name] = None if rec[name] is None else as_messages(rec[name], where, name, default_role="assistant")
        if row[name] is not None and not row[name]:
            raise AlignError(f"{where}: field '{name}' is empty")
    yield row


def from_implicit(rec: Any, where: str, cols, report) -> Iterable[dict[str, Any]]:
    if not isinstance(rec, dict):
        raise AlignError(f"{where}: a preference record must be a JSON object")
    for name in ("chosen", "rejected"):
        if name not in rec:
            raise AlignError(f"{where}: missing field '{name}' (an implicit-prompt pair has chosen and rejected)")
    if "prompt" in rec:  # beside whole conversations (see `_prompt_is_implicit`): taken from them instead
        report["implicit_prompt_field_unused"] = report.get("implicit_prompt_field_unused", 0) + 1
    chosen, rejected = rec["chosen"], rec["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        prompt_text, chosen_text, rejected_text = split_shared_text(chosen, rejected, where)
        prompt = [{"role": "user", "content": prompt_text}]
        pair = [{"role": "assistant", "content": chosen_text}], [{"role": "assistant", "content": rejected_text}]
    elif isinstance(chosen, str) or isinstance(rejected, str):
        raise AlignError(f"{where}: 'chosen' and 'rejected' must both be strings or both message lists")
    else:
        prompt, *pair = split_shared_messages(
            as_messages(chosen, where, "chosen", "assistant"),
            as_messages(rejected, where, "rejected", "assistant"),
            where,
        )
    row = dict(rec)
    row.update(prompt=prompt, chosen=pair[0], rejected=pair[1])
    yield row


def split_shared_messages(chosen: list[dict], rejected: list[dict], where: str) -> tuple[list, list, list]:
    """(prompt, chosen reply, rejected reply): the longest run of equal leading messages is the prompt."""
    for name, convo in (("chosen", chosen), ("rejected", rejected)):
        if not convo or convo[-1]["role"] != "assistant":
            last = convo[-1]["role"] if convo else "no"
            raise AlignError(
                f"{where}: '{name}' ends with {last} message, not the assistant's reply; an implicit-prompt "
                "pair is two conversations that end with different assistant replies"
            )
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if chosen == rejected:
        shared -= 1  # the same conversation twice: counted as identical by the caller, like any pair
    if shared == 0:
        raise AlignError(
            f"{where}: 'chosen' and 'rejected' share no opening message, so there is no prompt to take "
            "from them; give the prompt in a 'prompt' field (data.format=conversational)"
        )
    if shared in (len(chosen), len(rejected)):
        short = "chosen" if shared == len(chosen) else "rejected"
        raise AlignError(
            f"{where}: '{short}' is the start of the other conversation, so it has no reply of its own to compare"
        )
    if chosen[shared]["role"] != "assistant" or rejected[shared]["role"] != "assistant":
        raise AlignError(
            f"{where}: 'chosen' and 'rejected' first differ at message {shared + 1}, which is not an "
            "assistant turn: they do not answer the same prompt"
        )
    return chosen[:shared], chosen[shared:], rejected[shared:]


def split_shared_text(chosen: str, rejected: str, where: str) -> tuple[str, str, str]:
    """(prompt, chosen reply, rejected reply) of two texts that repeat the prompt: TRL's `extract_prompt`
    cut, moved back to a word boundary and stripped (see the module docstring)."""
    if chosen.strip() == rejected.strip():
        chosen = rejected = chosen.strip()  # the last word becomes both replies: counted as identical by the caller
    cut = 0
    while cut < min(len(chosen), len(rejected)) and chosen[cut] == rejected[cut]:
        cut += 1
    while cut > 0 and not chosen[cut - 1].isspace():
        cut -= 1  # back to the start of the word the texts differ in (TRL would cut inside it)
    prompt, chosen_reply, rejected_reply = chosen[:cut].strip(), chosen[cut:].strip(), rejected[cut:].strip()
    if not prompt:
        raise AlignError(
            f"{where}: 'chosen' and 'rejected' share no opening words, so there is no prompt to take from "
            f"them ({chosen[:30]!r} vs {rejected[:30]!r}); give the prompt in a 'prompt' field"
        )
    for name, reply in (("chosen", chosen_reply), ("rejected", rejected_reply)):
        if not reply:
            raise AlignError(
                f"{where}: '{name}' is the start of the other text, so it has no reply of its own to compare"
            )
    return prompt, chosen_reply, rejected_reply


def from_unpaired(rec: Any, where: str, cols, report) -> Iterable[dict[str, Any]]:
    if not isinstance(rec, dict):
        raise AlignError(f"{where}: an unpaired preference record must be a JSON object")
    for name in ("prompt", "completion", "label"):
        if name not in rec:
            raise AlignError(
                f"{where}: missing field '{name}' (an unpaired example needs prompt, completion and label)"
            )
    prompt = as_messages(rec["prompt"], where, "prompt", default_role="user")
    completion = as_messages(rec["completion"], where, "completion", default_role="assistant")
    for name, messages in (("prompt", prompt), ("completion", completion)):
        if not messages:
            raise AlignError(f"{where}: field '{name}' is empty")
    if completion[-1]["role"] != "assistant":
        raise AlignError(
            f"{where}: 'completion' ends with a {completion[-1]['role']} message, not the assistant's reply"
        )
    row = dict(rec)
    row.update(prompt=prompt, completion=completion, label=read_label(rec["label"], where))
    yield row


def read_label(value: Any, where: str) -> bool:
    """An unpaired example's label: a boolean (TRL), or 1/0 and true/false as CSV and TSV files hold it."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise AlignError(f"{where}: label {value!r} is not true (a desirable completion) or false (an undesirable one)")


def unpair(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL's `unpair_preference_dataset`: each pair -> a desirable example (its chosen reply) and an
    undesirable one (its rejected reply), other fields copied to both. Each pair's two examples stay
    next to each other (TRL puts a batch's chosen ones first); stages that need an order set it."""
    out = []
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in ("chosen", "rejected")}
        out.append({**extra, "completion": row["chosen"], "label": True})
        out.append({**extra, "completion": row["rejected"], "label": False})
    return out


def _prompt_is_implicit(rec: dict) -> bool:
    """A string `prompt` beside chosen/rejected conversations that open with it (a user or system turn):
    TRL's `maybe_extract_prompt` then takes the prompt from chosen/rejected, and so does align."""
    chosen, rejected = rec.get("chosen"), rec.get("rejected")
    if chosen is None or rejected is None or not isinstance(rec.get("prompt"), str):
        return False
    return _is_messages(chosen) and chosen[0]["role"] != "assistant"


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


# -- community formats ----------------------------------------------------------------------------


def from_hh_rlhf(rec: Any, where: str, cols, report) -> Iterable[dict[str, Any]]:
    for name in ("chosen", "rejected"):
        if not isinstance(rec, dict) or name not in rec:
            raise AlignError(f"{where}: missing field '{name}' (HH-RLHF records have chosen and rejected dialogues)")
    chosen = parse_hh_dialogue(rec["chosen"], where)
    rejected = parse_hh_dialogue(rec["rejected"], where)
    # The two dialogues share everything up to the last Assistant turn.
    if len(chosen) < 2 or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise AlignError(f"{where}: an HH-RLHF dialogue must end with an Assistant turn")
    yield {"prompt": chosen[:-1], "chosen": [chosen[-1]], "rejected": [rejected[-1]]}


def parse_hh_dialogue(text: str, where: str) -> list[dict[str, str]]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{user: a}, {assistant: b}]."""
    if not isinstance(text, str):
        raise AlignError(f"{where}: HH-RLHF dialogues are strings")
    messages: list[dict[str, str]] = []
    for chunk in text.split("\n\nHuman:")[1:] if "\n\nHuman:" in text else []:
        human, *assistants = chunk.split("\n\nAssistant:")
        messages.append({"role": "user", "content": human.strip()})
        for reply in assistants:
            messages.append({"role": "assistant", "content": reply.strip()})
    if not messages:
        raise AlignError(f"{where}: no '\\n\\nHuman:' turn found in an HH-RLHF dialogue")
    return messages


def from_oasst(rec: Any, where: str, cols, report) -> Iterable[dict[str, Any]]:
    root = rec.get("prompt") if isinstance(rec, dict) else None
    if not isinstance(root, dict) or "text" not in root:
        raise AlignError(f"{where}: an OASST tree needs a 'prompt' message with 'text' and 'replies'")
    yield from _oasst_pairs(root, [], where, report)


def _oasst_pairs(node: dict, history: list[dict[str, str]], where: str, report) -> Iterable[dict[str, Any]]:
    role = "user" if node.get("role") == "prompter" else "assistant"
    convo = history + [{"role": role, "content": node["text"]}]
    replies = [r for r in node.get("replies", []) if not r.get("deleted") and r.get("text")]
    if role == "user":
        ranked = [r for r in replies if r.get("rank") is not None and not r.get("synthetic")]
        report["oasst_synthetic_dropped"] = report.get("oasst_synthetic_dropped", 0) + sum(
            1 for r in replies if r.get("synthetic")
        )
        ranked.sort(key=lambda r: r["rank"])
        for i, better in enumerate(ranked):
            for worse in ranked[i + 1 :]:
                if better["rank"] == worse["rank"]:
                    continue
                yield {
                    "prompt": convo,
                    "chosen": [{"role": "assistant", "content": better["text"]}],
                    "rejected": [{"role": "assistant", "content": worse["text"]}],
                    "source": f"{where}#{better.get('message_id', '')}>{worse.get('message_id', '')}",
                }
    for reply in replies:
        if role == "user" and reply.get("synthetic"):
            continue
        yield from _oasst_pairs(reply, convo, where, report)


def from_pairwise_label(rec: Any, where: str, cols, report) -> Iterable[dict[str, Any]]:
    if not isinstance(rec, dict):
        raise AlignError(f"{where}: a pairwise-label record must be an object with columns")
    for key in ("prompt", "response_a", "response_b", "label"):
        if cols[key] not in rec:
            raise AlignError(f"{where}: missing field '{cols[key]}' (set data.columns.{key} if it has another name)")
    label = str(rec[cols["label"]]).strip().lower()
    prompt = as_messages(rec[cols["prompt"]], where, cols["prompt"], default_role="user")
    a = as_messages(rec[cols["response_a"]], where, cols["response_a"], default_role="assistant")
    b = as_messages(rec[cols["response_b"]], where, cols["response_b"], default_role="assistant")
    if label in ("1", "1.0", "a", "output_1"):
        chosen, rejected = a, b
    elif label in ("2", "2.0", "b", "output_2"):
        chosen, rejected = b, a
    elif label in ("0", "0.0", "tie", ""):
        # Kept as a tie (candidates included) for `data.ties`; counted and left out otherwise.
        yield {"prompt": prompt, "chosen": None, "rejected": None, "majority": "tie", "response_a": a, "response_b": b}
        return
    else:
        raise AlignError(f"{where}: label {rec[cols['label']]!r} is not 1, 2 (the better output) or 0 (tie)")
    yield {"prompt": prompt, "chosen": chosen, "rejected": rejected}


# -- helpers --------------------------------------------------------------------------------------


def as_messages(value: Any, where: str, name: str, default_role: str) -> list[dict[str, str]]:
    """A string becomes one message; a list must be {role, content} messages with known roles."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}] if value.strip() else []
    if isinstance(value, dict) and "role" in value:
        value = [value]
    if not isinstance(value, list):
        raise AlignError(f"{where}: field '{name}' must be a string or a list of messages, got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise AlignError(f"{where}: {name}[{i}] must be a message {{role, content}}")
        if m["role"] not in ROLES:
            raise AlignError(f"{where}: {name}[{i}] has role {m['role']!r}; roles are {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise AlignError(f"{where}: {name}[{i}].content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out
