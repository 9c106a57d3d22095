"""Add scores to a generation run: `align score GENERATIONS_RUN reward_model=RUN`.

Runs are immutable, so scoring writes a new run whose `generations.jsonl` is the input's rows with
per-response fields added (in response order), one or both of:

- `reward_model=RUN`: `scores`, one float per response. Each response is scored as the reward stage
  trains: the chat template of prompt + reply (align/scoring.py). With a reward ensemble
  (`align reward-ensemble`), each member scores every response (`member_scores`, one list of K per
  response, members loaded one at a time) and `scores` is their mean; `align pairs
  selection=ensemble_disagreement` reads the members.
- `policy=RUN` (and `reference=`, default the policy's base model): `logratios`, log pi(reply | prompt) -
  log pi_ref(reply | prompt) summed over the reply's tokens, for `align pairs selection=dpo_margin`.
  The reply's tokens are its text re-encoded plus the end-of-turn token when it stopped on one
  (align/evaluation/drift.py), batched on the resolved device.

The new run's manifest keeps the policy and sampling settings of the generation run, so `align pairs`
can read either run.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from align.core import device, runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.training import ModelLoading
from align.data.records import write_jsonl
from align.models import (
    base_of,
    load_policy,
    load_reward_model,
    load_tokenizer,
    policy_source,
    resolve_model,
    same_weights,
)
from align.rollout.generations import GENERATIONS, read_generations
from align.scoring import check_reward_model, reward_members, reward_scores

log = logging.getLogger(__name__)


@dataclass
class Config(runs.RunOutput, ModelLoading):
    """Config of `align score`."""

    generations: str = ""
    """A generation run (`align generate`) or an earlier score run."""
    reward_model: str = ""
    """Reward model: a reward run, a reward ensemble run (`align reward-ensemble`), or a Hugging Face
    sequence-classification directory. Unset: no reward scores (give `policy` instead)."""
    policy: str = ""
    """For `dpo_margin` selection: the policy whose log-ratios against `reference` are recorded. Unset: none."""
    reference: str = ""
    """The policy's DPO reference; unset = the policy's base model (DPO's reference with a LoRA adapter)."""
    batch_size: int = 8
    """Conversations per forward pass."""
    max_length: int | None = None
    """Cut longer conversations from the left (keeping the reply); unset keeps them whole (reward scores only)."""

    def __post_init__(self):
        if self.batch_size < 1:
            raise AlignError(f"'batch_size' must be >= 1, got {self.batch_size}")
        if self.reference and not self.policy:
            raise AlignError(f"'reference' ({self.reference}) is the reference of a policy: give 'policy' too")


def check(cfg: Config) -> dict:
    """The inputs read, checked and counted without loading model weights (what `--dry-run` prints)."""
    return prepare(cfg).report


def prepare(cfg: Config) -> SimpleNamespace:
    if not cfg.generations:
        raise AlignError("'generations' is required: a run directory written by `align generate`")
    if not cfg.reward_model and not cfg.policy:
        raise AlignError(
            "give 'reward_model' (a reward run, reward ensemble run or classifier directory) and/or "
            "'policy' (log-ratios against 'reference' for selection=dpo_margin)"
        )
    parent, rows = read_generations(cfg.generations)
    report = {"prompts": len(rows), "responses": sum(len(r["responses"]) for r in rows)}
    members, tokenizer = [], None
    if cfg.reward_model:
        members = reward_members(cfg.reward_model)
        sources = [resolve_model(m, cfg.trust_remote_code) for m in members]
        for source in sources:
            check_reward_model(source)
        tokenizer = load_tokenizer(sources[0], cfg.trust_remote_code)
        report["reward_model"] = sources[0].stable_ref if len(sources) == 1 else str(Path(cfg.reward_model).resolve())
        report["ensemble_members"] = len(sources) if len(sources) > 1 else None
        members = sources
    policy = reference = None
    if cfg.policy:
        policy = policy_source(cfg.policy, "policy", cfg.trust_remote_code)
        reference = policy_source(cfg.reference or base_of(cfg.policy), "reference", cfg.trust_remote_code)
        report.update(policy=policy.stable_ref, reference=reference.stable_ref)
    return SimpleNamespace(
        parent=parent,
        rows=rows,
        members=members,
        tokenizer=tokenizer,
        policy=policy,
        reference=reference,
        report=report,
    )


def run(cfg: Config) -> dict:
    ready = prepare(cfg)
    parent, rows = ready.parent, ready.rows

    with runs.new_run("score", to_dict(cfg), cfg.runs_dir, cfg.name) as run:
        run.add_input("generations", cfg.generations)
        metrics: dict = {}
        model = None
        if ready.members:
            if len(ready.members) > 1:
                run.add_input("reward_model", cfg.reward_model)
            conversations = [
                row["prompt"] + [{"role": "assistant", "content": t}] for row in rows for t in row["responses"]
            ]
            per_member = []
            for k, source in enumerate(ready.members):
                run.add_input_record("reward_model" if len(ready.members) == 1 else f"reward_member_{k}", source.record)
                model = load_reward_model(
                    source,
                    cfg.dtype,
                    cfg.trust_remote_code,
                    pad_token_id=ready.tokenizer.pad_token_id,
                    attn_implementation=cfg.attn_implementation,
                    place=True,
                )
                desc = "scoring" if len(ready.members) == 1 else f"scoring (member {k + 1}/{len(ready.members)})"
                per_member.append(
                    reward_scores(model, ready.tokenizer, conversations, cfg.batch_size, cfg.max_length, desc)
                )
            flat = [statistics.fmean(column) for column in zip(*per_member)]
            at = 0
            for row in rows:
                width = len(row["responses"])
                row["scores"] = flat[at : at + width]
                row.pop("member_scores", None)  # an earlier ensemble's, on a run scored before
                if len(per_member) > 1:
                    row["member_scores"] = [[m[i] for m in per_member] for i in range(at, at + width)]
                at += width
            gaps = [max(r["scores"]) - min(r["scores"]) for r in rows if len(r["scores"]) >= 2]
            metrics.update(
                {
                    "responses_scored": len(flat),
                    "score_mean": round(statistics.fmean(flat), 4) if flat else None,
                    "score_std": round(statistics.pstdev(flat), 4) if flat else None,
                    "mean_score_range_per_prompt": round(statistics.fmean(gaps), 4) if gaps else None,
                }
            )
            if len(per_member) > 1:
                metrics["ensemble_members"] = len(per_member)
                metrics["mean_member_std"] = round(statistics.fmean(statistics.pstdev(c) for c in zip(*per_member)), 4)
            log.info("scored %d responses of %d prompts (mean %.3f)", len(flat), len(rows), metrics["score_mean"] or 0)
        if ready.policy is not None:
            run.add_input_record("policy", ready.policy.record)
            run.add_input_record("reference", ready.reference.record)
            model, ratios = _logratios(cfg, ready, rows)
            metrics["logratio_mean"] = round(statistics.fmean(ratios), 4)
            metrics["policy_is_reference"] = same_weights(ready.policy, ready.reference)
        write_jsonl(Path(run.path) / GENERATIONS, rows)
        run.add_output("generations", GENERATIONS, rows=len(rows))

        parent_notes = parent.get("notes", {})
        run.notes.update(
            policy=parent_notes.get("policy"),
            sampling=parent_notes.get("sampling"),
            reward_model=ready.report.get("reward_model"),
            logratio_policy=ready.report.get("policy"),
            logratio_reference=ready.report.get("reference"),
        )
        run.metrics.update(metrics)
        run.log_metrics(metrics)
        device.record(run, cfg, model)
        return runs.finish(run)


def _logratios(cfg: Config, ready: SimpleNamespace, rows: list[dict]):
    """log pi - log pi_ref of every response (summed over its tokens), written into rows as `logratios`."""
    from tqdm.auto import tqdm

    from align.evaluation.drift import reply_ids, reply_logprob

    tokenizer = load_tokenizer(ready.policy, cfg.trust_remote_code)
    eos = tokenizer.eos_token_id
    prompts, replies = [], []
    for row in rows:
        ids = tokenizer.apply_chat_template(row["prompt"], tokenize=True, add_generation_prompt=True, return_dict=False)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        finish = row.get("finish_reasons") or [None] * len(row["responses"])
        for text, reason in zip(row["responses"], finish):
            prompts.append(ids)
            replies.append(reply_ids(tokenizer, text, reason == "stop", eos))
    logp = {}
    model = None
    for role, source in (("policy", ready.policy), ("reference", ready.reference)):
        model = load_policy(
            source, cfg.dtype, cfg.trust_remote_code, attn_implementation=cfg.attn_implementation, place=True
        ).eval()
        logp[role] = []
        chunk = cfg.batch_size * 8  # reply_logprob has no progress bar of its own: one tick per chunk of batches
        for start in tqdm(range(0, len(prompts), chunk), desc=f"log-probs under the {role}", unit="chunk", leave=False):
            logp[role] += [
                total
                for total, _ in reply_logprob(
                    model, prompts[start : start + chunk], replies[start : start + chunk], cfg.batch_size
                )
            ]
    ratios = [p - r for p, r in zip(logp["policy"], logp["reference"])]
    at = 0
    for row in rows:
        row["logratios"] = ratios[at : at + len(row["responses"])]
        at += len(row["responses"])
    return model, ratios
