"""One round, several kinds of prompt: the loop's `mix` (e.g. brand-voice customer prompts and safety prompts).

A team that aligns a support assistant to its voice wants the voice and no step back on safety, from one
policy and one annotation queue. With `mix`, each round's candidates are drawn from several prompt files in
fixed shares, and every record keeps its kind:

    mix:
      prompts_per_round: 40
      kinds:
        - {kind: brand, prompts: recipes/brand_voice/prompts_train.jsonl, share: 0.7}
        - kind: safety
          prompts: recipes/safety/prompts_rounds.jsonl
          share: 0.3
          simulate: {judge: safety, harmful: {paths: [...], match: {label: unsafe}}, safe: {...}}

Round n writes `round-<n>/prompts` (a `loop prompts` run): round(share x prompts_per_round) prompts of each
kind (largest remainders, so the counts add up), drawn without replacement with a seed of the round and the
kind, so each round asks new prompts where the file has them. `align generate` answers that file; the pairs
go to ONE Argilla dataset; simulated annotators answer each kind's records with that kind's judge (one
`align annotate simulate` run per kind, `only` naming the kind's records, the loop's `simulate` section plus
the kind's `simulate` overrides); people see one queue. The labels run counts, per round and kind, the
records, usable pairs, votes and ties each kind contributed, and the report shows them.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.annotate.judges import prompt_key
from align.core import runs
from align.core.errors import AlignError

STAGE = "loop prompts"
PROMPTS = "prompts.jsonl"


@dataclass
class MixKind:
    """One kind of prompt in every round's candidates."""

    kind: str = ""
    """Short name (letters, digits, '_'), shown in the report's labels table."""
    prompts: str = ""
    """The kind's training prompts (any file `align generate` reads); never the evaluation's prompts."""
    share: float = 0.0
    """Fraction of each round's prompts drawn from this kind (the shares add up to 1)."""
    simulate: dict[str, Any] = field(default_factory=dict)
    """With simulated annotators: overrides of the loop's `simulate` section for this kind's records (e.g. judge:
    safety with its harmful/safe sets); {} judges them with the section as it is."""

    def __post_init__(self):
        if not self.kind or not self.kind.replace("_", "").isalnum():
            raise AlignError(f"mix kind {self.kind!r}: 'kind' must be a short name of letters, digits or '_'")
        if not self.prompts:
            raise AlignError(f"mix kind '{self.kind}': 'prompts' is required (the kind's training prompt file)")
        if not 0 < self.share <= 1:
            raise AlignError(f"mix kind '{self.kind}': 'share' must be in (0, 1], got {self.share}")


@dataclass
class MixSettings:
    """Candidates drawn from several prompt files in fixed shares; empty = `generate.prompts` alone, one judge."""

    prompts_per_round: int = 0
    """Prompts each round answers, over all kinds (each answered `generate.sampling.n` times)."""
    kinds: list[MixKind] = field(default_factory=list)
    """The kinds, each with its prompts, its share and its simulated annotators' judge."""
    seed: int = 0
    """Seed of the draws (with the round and the kind)."""

    def __post_init__(self):
        if not self.kinds:
            if self.prompts_per_round:
                raise AlignError("'mix.prompts_per_round' is set but 'mix.kinds' is empty; list the kinds or drop mix")
            return
        names = [k.kind for k in self.kinds]
        if len(set(names)) != len(names):
            raise AlignError(f"'mix.kinds' names a kind twice: {names}")
        if abs(sum(k.share for k in self.kinds) - 1) > 1e-6:
            raise AlignError(
                f"'mix.kinds' shares add up to {sum(k.share for k in self.kinds):g}, not 1: "
                + ", ".join(f"{k.kind} {k.share:g}" for k in self.kinds)
            )
        if self.prompts_per_round < len(self.kinds):
            raise AlignError(
                f"'mix.prompts_per_round' must be at least one per kind ({len(self.kinds)}), "
                f"got {self.prompts_per_round}"
            )

    @property
    def on(self) -> bool:
        return bool(self.kinds)


def counts(mix: MixSettings) -> dict[str, int]:
    """Prompts per kind: share x prompts_per_round, rounded by largest remainder so they add up exactly."""
    exact = {k.kind: k.share * mix.prompts_per_round for k in mix.kinds}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], k))[: mix.prompts_per_round - sum(out.values())]:
        out[k] += 1
    return out


def load_kinds(mix: MixSettings, field_: str | None = None) -> dict[str, list]:
    """Every kind's prompts, checked: a file that cannot fill its share, or a prompt in two kinds, is an error."""
    from align.data.prompts import load_prompts

    want = counts(mix)
    loaded, seen = {}, {}
    for k in mix.kinds:
        prompts = load_prompts(k.prompts, field_)
        if len(prompts) < want[k.kind]:
            raise AlignError(
                f"mix kind '{k.kind}': {k.prompts} has {len(prompts)} prompts, fewer than its share of "
                f"a round ({want[k.kind]} of {mix.prompts_per_round}); lower its share or prompts_per_round"
            )
        for p in prompts:
            key = prompt_key(p.messages)
            if seen.setdefault(key, k.kind) != k.kind:
                raise AlignError(
                    f"mix: prompt {p.source} is in kind '{k.kind}' and in kind '{seen[key]}'; a record "
                    "must have one kind (one judge): remove it from one file"
                )
        loaded[k.kind] = prompts
    return loaded


def write_round_prompts(
    mix: MixSettings, n: int, runs_dir: str | Path, name: str = "prompts", field_: str | None = None
) -> dict[str, Any]:
    """Round n's prompts (a run with prompts.jsonl: prompt_id, kind, messages, from); returns its manifest."""
    loaded = load_kinds(mix, field_)
    want = counts(mix)
    rows = []
    for k in mix.kinds:
        seed = int.from_bytes(hashlib.sha256(f"{mix.seed}:{n}:{k.kind}".encode()).digest()[:8], "big")
        prompts = loaded[k.kind]
        picked = sorted(random.Random(seed).sample(range(len(prompts)), want[k.kind]))
        rows += [
            {
                "prompt_id": f"{k.kind}:{prompts[i].prompt_id}",
                "kind": k.kind,
                "messages": prompts[i].messages,
                "from": prompts[i].source,
            }
            for i in picked
        ]
    with runs.new_run(STAGE, {"round": n, "mix": _plain(mix)}, runs_dir, name) as run:
        for k in mix.kinds:
            run.add_input(f"{k.kind}.prompts", k.prompts)
        with open(run.path / PROMPTS, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        run.add_output("prompts", PROMPTS, rows=len(rows))
        run.metrics.update(prompts=len(rows), per_kind=want)
        return runs.finish(run)


def kinds_of(prompts_run: str | Path) -> dict[str, str]:
    """prompt key (the last user message, whitespace and case folded) -> kind, for a round's prompts run."""
    manifest = runs.read_manifest(prompts_run)
    with open(runs.output_path(prompts_run, manifest, "prompts"), encoding="utf-8") as f:
        return {prompt_key(r["messages"]): r["kind"] for r in map(json.loads, f)}


def kind_counts(rows: list[dict[str, Any]], kinds: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per kind, what a pull's rows contributed: records, usable pairs, votes, ties (unknown prompts: 'other')."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        c = out.setdefault(
            kinds.get(prompt_key(r["prompt"]), "other"), {"records": 0, "usable_pairs": 0, "votes": 0, "ties": 0}
        )
        c["records"] += 1
        c["usable_pairs"] += r.get("chosen") is not None and r.get("rejected") is not None
        c["votes"] += len(r.get("votes", []))
        c["ties"] += r.get("majority") == "tie"
    return out


def _plain(mix: MixSettings) -> dict[str, Any]:
    from align.core.config import to_dict

    return to_dict(mix)
