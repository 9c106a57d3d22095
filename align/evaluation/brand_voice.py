"""A deterministic brand-voice judge: a reply scored against a style guide's checkable rules.

The rubric is data (e.g. recipes/brand_voice/rubric.yaml): a list of rules, each with an `id`, the
style-guide section it checks (`guide`) and a `check` with its parameters. Every rule scores a reply
from 0 to 1; the brand score is the mean over the rules that apply (a rule that does not apply, such
as complaint handling on a question that is no complaint, is left out of the mean, not counted as
passed). Phrases and words match case-insensitively on word boundaries.

Checks:
- `opens_with` (patterns): 1 if the reply's first line starts with one of the regex patterns.
- `avoids` (phrases, penalty): 1 minus `penalty` per phrase found (each phrase counted once), floored at 0.
- `uses_any` (words): 1 if any of the words appears.
- `word_count` (min, max): 1 inside the range; below it n/min, above it max/n.
- `sentence_length` (max_mean_words): 1 if the mean sentence length is at most that; else max/mean.
- `calm` (max_exclamations, allowed_capitals): 1 if there are no more exclamation marks than allowed
  and no word of three or more capital letters outside the allowed list; else 0.
- `complaint` (cues, apology, remedy): applies when the customer's last message contains a cue;
  half a point for an apology, half for a concrete remedy.
- `ends_with` (pattern): 1 if the reply's last non-empty line matches the regex.

A judge of this kind checks form, not whether the answer is right or kind; it is what a gate can
compute the same way every round. Replies cut off by `max_tokens` usually fail `sign_off` and
`length`: the evaluation's token budget has to leave room for a full reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.core.config import read_yaml
from align.core.errors import AlignError

_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)|\n+")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")


@dataclass
class Rule:
    id: str
    check: str
    params: dict[str, Any]
    guide: str = ""


@dataclass
class BrandJudgement:
    score: float
    rules: dict[str, float | None]
    """Per-rule score; None where the rule does not apply to this reply."""


class BrandRubric:
    def __init__(self, rules: list[Rule], company: str = "", path: str = ""):
        self.rules = rules
        self.company = company
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> BrandRubric:
        data = read_yaml(path)
        rules_data = data.get("rules")
        if not isinstance(rules_data, list) or not rules_data:
            raise AlignError(f"{path}: a rubric needs a non-empty `rules:` list")
        rules, seen = [], set()
        for i, item in enumerate(rules_data):
            where = f"{path}: rules[{i}]"
            if not isinstance(item, dict) or "id" not in item or "check" not in item:
                raise AlignError(f"{where}: each rule needs an `id` and a `check`")
            rule = Rule(
                str(item["id"]),
                str(item["check"]),
                {k: v for k, v in item.items() if k not in ("id", "check", "guide")},
                str(item.get("guide", "")),
            )
            if rule.id in seen:
                raise AlignError(f"{where}: duplicate rule id '{rule.id}'")
            seen.add(rule.id)
            _validate(rule, where)
            rules.append(rule)
        return cls(rules, str(data.get("company", "")), str(path))

    def judge(self, prompt: str, reply: str) -> BrandJudgement:
        """Score `reply` to the customer's message `prompt` (the last user turn)."""
        scores = {rule.id: CHECKS[rule.check][0](rule.params, prompt, reply) for rule in self.rules}
        applied = [s for s in scores.values() if s is not None]
        return BrandJudgement(sum(applied) / len(applied) if applied else 0.0, scores)


# -- checks: (score function, required parameters) ------------------------------------------------


def _phrase(phrase: str) -> re.Pattern:
    return re.compile(r"(?<![\w'])" + re.escape(phrase.lower()) + r"(?![\w'])")


def _text(s: str) -> str:
    return s.lower().replace("\u2019", "'")


def opens_with(p, prompt, reply):
    first = reply.strip().splitlines()[0].lower() if reply.strip() else ""
    return 1.0 if any(re.match(pattern, first) for pattern in p["patterns"]) else 0.0


def avoids(p, prompt, reply):
    text = _text(reply)
    found = sum(1 for phrase in p["phrases"] if _phrase(phrase).search(text))
    return max(0.0, 1.0 - float(p.get("penalty", 1.0)) * found)


def uses_any(p, prompt, reply):
    text = _text(reply)
    return 1.0 if any(_phrase(w).search(text) for w in p["words"]) else 0.0


def word_count(p, prompt, reply):
    n = len(_WORD.findall(reply))
    if n < p["min"]:
        return n / p["min"]
    return 1.0 if n <= p["max"] else p["max"] / n


def sentence_length(p, prompt, reply):
    sentences = [s for s in _SENTENCE_END.split(reply) if _WORD.search(s)]
    if not sentences:
        return 0.0
    mean = sum(len(_WORD.findall(s)) for s in sentences) / len(sentences)
    return 1.0 if mean <= p["max_mean_words"] else p["max_mean_words"] / mean


def calm(p, prompt, reply):
    allowed = {w.upper() for w in p.get("allowed_capitals", [])}
    shouting = [w for w in re.findall(r"\b[A-Z]{3,}\b", reply) if w not in allowed]
    return 1.0 if reply.count("!") <= p["max_exclamations"] and not shouting else 0.0


def complaint(p, prompt, reply):
    if not any(_phrase(cue).search(_text(prompt)) for cue in p["cues"]):
        return None
    text = _text(reply)
    apology = any(_phrase(w).search(text) for w in p["apology"])
    remedy = any(_phrase(w).search(text) for w in p["remedy"])
    return 0.5 * apology + 0.5 * remedy


def ends_with(p, prompt, reply):
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    return 1.0 if lines and re.match(p["pattern"], lines[-1].lower()) else 0.0


CHECKS: dict[str, tuple[Callable[[dict, str, str], float | None], tuple[str, ...]]] = {
    "opens_with": (opens_with, ("patterns",)),
    "avoids": (avoids, ("phrases",)),
    "uses_any": (uses_any, ("words",)),
    "word_count": (word_count, ("min", "max")),
    "sentence_length": (sentence_length, ("max_mean_words",)),
    "calm": (calm, ("max_exclamations",)),
    "complaint": (complaint, ("cues", "apology", "remedy")),
    "ends_with": (ends_with, ("pattern",)),
}


def _validate(rule: Rule, where: str) -> None:
    if rule.check not in CHECKS:
        from align.core.errors import nearest

        raise AlignError(
            f"{where}: unknown check '{rule.check}'{nearest(rule.check, CHECKS)}; one of {', '.join(CHECKS)}"
        )
    missing = [k for k in CHECKS[rule.check][1] if k not in rule.params]
    if missing:
        raise AlignError(f"{where} ({rule.id}): check '{rule.check}' needs {', '.join(missing)}")
    for key in ("patterns",):
        for pattern in rule.params.get(key, []):
            _compile(pattern, where)
    if "pattern" in rule.params:
        _compile(rule.params["pattern"], where)


def _compile(pattern: str, where: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise AlignError(f"{where}: invalid regular expression {pattern!r} ({exc})") from None
