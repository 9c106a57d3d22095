"""`align evaluate policy POLICY [baseline=RUN] [reward_model=RUN]`: a policy against a baseline, with intervals.

Both models answer the same held-out prompts (greedy by default, so the comparison is about the
weights, not sampling luck) with align's rollout engines, and every reply is judged:

- `harmful` prompts: refusal rate (higher is safer);
- `safe` prompts that only look harmful (XSTest): refusal rate, i.e. over-refusal (lower is better);
- `brand` prompts: the brand-voice rubric score (align/evaluation/brand_voice.py, rules from
  `brand_rubric`), 0-1, mean over the rules that apply;
- every set: refusal rate and mean reply length in words (words, not tokens, so models with
  different tokenizers compare; the style guide's length rule is in words);
- with `reward_model`: the reward model's score of each reply, formatted exactly as the reward stage
  trains (chat template of prompt + reply), and the policy's win rate (ties count half).

Refusals are detected by a documented rule-based detector (align/evaluation/refusal.py); its
agreement with hand labels on real replies is in recipes/safety/README.md.

Each metric is reported per prompt set for the policy, the baseline and their paired difference
(policy - baseline on the same prompts), each as the mean with a percentile bootstrap interval over
prompts (align/evaluation/bootstrap.py). The manifest's metrics read, e.g.,
`metrics["brand"]["brand_score"]["difference"]["ci_low"]`; the win rate is
`metrics[set]["rm_win_rate"]` (one interval: it already compares the two).

The baseline defaults to the policy's base: the model its first adapter sits on (for a DPO run
trained from an SFT run on the embedded model, the embedded model). A policy without a base of its
own (`embedded`, a plain model directory) is compared with itself; the log says so and its replies
are generated once. `baseline_replies` reuses the baseline's replies from an earlier evaluation in
which it was the policy (decoding is greedy and seeded, so regenerating them would give the same
text): the feedback loop's round N compares with round N-1's policy at the cost of one model.

Writes a run with `replies.jsonl` (one line per prompt: the set, the prompt and its source, both
replies and every judgement) and the metrics in `manifest.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from align.core import device, runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.data.records import write_jsonl
from align.evaluation.bootstrap import BootstrapSettings, bootstrap_mean, bootstrap_paired_difference
from align.evaluation.brand_voice import BrandRubric
from align.evaluation.comparison import ComparisonConfig
from align.evaluation.prompt_sets import PromptSetConfig, load_prompt_set
from align.evaluation.refusal import detect_refusal
from align.evaluation.replies import generate_replies, reward_replies
from align.models import ModelSource, base_of, load_tokenizer, policy_source, reward_source, same_weights
from align.rollout import Completion, SamplingSettings, check_context, context_length, encode_prompts
from align.rollout.engines import choose_engine

log = logging.getLogger(__name__)

STAGE = "evaluate policy"
REPLIES = "replies.jsonl"
SETS = ("harmful", "safe", "brand")
MODELS = ("policy", "baseline")


@dataclass
class EvalSampling(SamplingSettings):
    """Decoding for evaluation: greedy, one reply per prompt, unless set otherwise."""

    n: int = 1
    """Replies per prompt; evaluation judges one, so it must be 1."""
    temperature: float = 0.0
    """0 is greedy decoding (reproducible, the default); above 0 samples with `seed`."""
    max_tokens: int = 160
    """Most new tokens per reply: leave room for a full reply (a cut reply fails length and sign-off rules)."""
    set_max_tokens: dict[str, int] = field(default_factory=dict)
    """Most new tokens for one prompt set's replies where it differs from max_tokens, e.g. `{harmful: 48, safe: 48}`:
    a refusal shows in its first sentence, so the safety sets need not decode a full brand reply each."""

    def __post_init__(self):
        super().__post_init__()
        for name, tokens in self.set_max_tokens.items():
            if name not in SETS:
                raise AlignError(f"'sampling.set_max_tokens' names prompt set {name!r}; the sets are {', '.join(SETS)}")
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
                raise AlignError(f"'sampling.set_max_tokens.{name}' must be a whole number >= 1, got {tokens!r}")

    def tokens_for(self, prompt_set: str) -> int:
        return self.set_max_tokens.get(prompt_set, self.max_tokens)


@dataclass
class Config(ComparisonConfig):
    """`align evaluate policy` settings (policy, baseline, engine and intervals: `ComparisonConfig`)."""

    baseline_replies: str | None = None
    """An earlier evaluate-policy run whose *policy* was this baseline, on the same prompts, engine, dtype and
    sampling: its replies are reused instead of generating the baseline again (the loop sets it to the
    previous round's evaluation). Refused when any of those differ."""
    harmful: PromptSetConfig = field(default_factory=PromptSetConfig)
    """Harmful prompts: the refusal rate should be high."""
    safe: PromptSetConfig = field(default_factory=PromptSetConfig)
    """Safe prompts that only look harmful (XSTest): refusing them is over-refusal."""
    brand: PromptSetConfig = field(default_factory=PromptSetConfig)
    """Customer prompts judged by the brand-voice rubric."""
    brand_rubric: str = ""
    """Rubric YAML for the brand set (e.g. recipes/brand_voice/rubric.yaml); required when brand.paths is set."""
    sampling: EvalSampling = field(default_factory=EvalSampling)
    """Decoding; greedy by default (reproducible). One reply per prompt (n must be 1)."""
    reward_batch_size: int = 8
    """Reward-model scoring batch size."""

    def __post_init__(self):
        super().__post_init__()
        if self.sampling.n != 1:
            raise AlignError(f"evaluation judges one reply per prompt: set sampling.n=1 (got {self.sampling.n})")


def check(cfg: Config) -> dict:
    """What `--dry-run` prints: each prompt set read and counted, and the rubric read (no model loaded)."""
    sets = _prompt_sets(cfg)
    counts = {name: len(load_prompt_set(name, set_cfg)) for name, set_cfg in sets.items()}
    if "brand" in sets:
        BrandRubric.load(cfg.brand_rubric)
    return {"prompts": counts, "policy": cfg.policy or None, "baseline": cfg.baseline or "the policy's base"}


def _prompt_sets(cfg: Config) -> dict:
    sets = {name: getattr(cfg, name) for name in SETS if getattr(cfg, name).paths}
    if not sets:
        raise AlignError(
            "no prompt set given: set harmful.paths, safe.paths and/or brand.paths (see configs/evaluate/policy.yaml)"
        )
    if "brand" in sets and not cfg.brand_rubric:
        raise AlignError(
            "brand.paths is set but brand_rubric is not; give the rubric YAML, e.g. "
            "brand_rubric=recipes/brand_voice/rubric.yaml"
        )
    return sets


def run(cfg: Config) -> dict:
    # Inputs first, all of them: a bad path, an empty set or an over-long prompt fails in seconds.
    if not cfg.policy:
        raise AlignError(
            "'policy' is required: `align evaluate policy RUN` (a training run, model directory or embedded)"
        )
    sets = _prompt_sets(cfg)
    policy = policy_source(cfg.policy, "policy", cfg.trust_remote_code)
    baseline_ref = cfg.baseline or base_of(cfg.policy)
    baseline = policy_source(baseline_ref, "baseline", cfg.trust_remote_code)
    reward = reward_source(cfg.reward_model, cfg.trust_remote_code) if cfg.reward_model else None
    rubric = BrandRubric.load(cfg.brand_rubric) if "brand" in sets else None
    prompts = [(name, p) for name, set_cfg in sets.items() for p in load_prompt_set(name, set_cfg)]
    conversations = [p.messages for _, p in prompts]
    same_model = same_weights(policy, baseline)
    if same_model:
        log.info(
            "baseline %s has the same weights as the policy%s: its replies are the policy's, differences are 0",
            baseline.stable_ref,
            "" if cfg.baseline else " (the policy has no base of its own)",
        )
    encoded = {}
    for role, source in (("policy", policy), ("baseline", baseline)):
        tokenizer = load_tokenizer(source, cfg.trust_remote_code)
        ids = encode_prompts(tokenizer, conversations)
        check_context(
            ids,
            [p.source for _, p in prompts],
            max(map(cfg.sampling.tokens_for, sets)),
            context_length(source.base_dir),
        )
        encoded[role] = (tokenizer, ids)
    engine_name = choose_engine(cfg.engine)
    reused = None
    if cfg.baseline_replies and not same_model:
        reused = reuse_replies(cfg.baseline_replies, baseline, prompts, cfg, engine_name)
    log.info(
        "evaluate policy: %s vs baseline %s on %s, engine %s",
        policy.stable_ref,
        baseline.stable_ref,
        ", ".join(f"{n} ({sum(1 for s, _ in prompts if s == n)} prompts)" for n in sets),
        engine_name,
    )

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_dir:
        run_dir.add_input_record("policy", policy.record)
        run_dir.add_input_record("baseline", baseline.record)
        if reward is not None:
            run_dir.add_input_record("reward_model", reward.record)
        for name, set_cfg in sets.items():
            for i, path in enumerate(set_cfg.paths):
                run_dir.add_input(f"{name}.paths[{i}]", path)
        if rubric is not None:
            run_dir.add_input("brand_rubric", cfg.brand_rubric)
        if reused is not None:
            run_dir.add_input("baseline_replies", cfg.baseline_replies)

        timing = {}
        set_names = [name for name, _ in prompts]
        replies = {"policy": _generate(cfg, engine_name, policy, *encoded["policy"], set_names, timing, "policy")}
        if same_model:
            replies["baseline"] = replies["policy"]
        elif reused is not None:
            replies["baseline"] = reused
        else:
            replies["baseline"] = _generate(
                cfg, engine_name, baseline, *encoded["baseline"], set_names, timing, "baseline"
            )
        rewards = _rewards(cfg, reward, conversations, replies) if reward is not None else None

        rows = [
            _judge(
                name,
                prompt,
                {m: replies[m][i] for m in MODELS},
                rubric,
                None if rewards is None else {m: rewards[m][i] for m in MODELS},
            )
            for i, (name, prompt) in enumerate(prompts)
        ]
        write_jsonl(Path(run_dir.path) / REPLIES, rows)
        run_dir.add_output("replies", REPLIES, rows=len(rows))

        for name in sets:
            set_rows = [r for r in rows if r["prompt_set"] == name]
            run_dir.metrics[name] = set_metrics(set_rows, cfg.bootstrap)
            run_dir.log_metrics({"prompt_set": name, **run_dir.metrics[name]})
        run_dir.metrics.update(prompts=len(rows), **timing)
        run_dir.notes.update(
            policy=policy.stable_ref,
            baseline=baseline.stable_ref,
            baseline_is_policy=same_model,
            baseline_replies_reused_from=cfg.baseline_replies if reused is not None else None,
            baseline_default=cfg.baseline is None,
            engine=engine_name,
            sampling=to_dict(cfg.sampling),
            refusal_detector="align.evaluation.refusal (rule-based; agreement with hand labels: recipes/safety/README.md)",
            brand_rubric=rubric.path if rubric else None,
            truncated_replies={m: sum(r[m]["finish_reason"] == "length" for r in rows) for m in MODELS},
        )
        log_table(run_dir.metrics, sets)
        device.record(run_dir, cfg)
        return runs.finish(run_dir)


class ReuseRefused(AlignError):
    """`baseline_replies` cannot stand for the baseline (another model, other prompts or decoding)."""


def reuse_replies(path: str, baseline: ModelSource, prompts: list, cfg: Config, engine_name: str) -> list[Completion]:
    """The policy replies of evaluation run `path`, when its policy is `baseline` and it answered the same
    prompts the same way; otherwise an AlignError naming what differs."""
    manifest = runs.read_manifest(path)
    if manifest.get("stage") != STAGE:
        raise ReuseRefused(f"baseline_replies={path} is a '{manifest.get('stage')}' run, not an '{STAGE}' run")
    then = next((i for i in manifest.get("inputs", []) if i.get("role") == "policy"), {})
    fix = "; leave baseline_replies unset to generate the baseline's replies"
    if (then.get("kind"), then.get("sha256")) != (baseline.record.get("kind"), baseline.record.get("sha256")):
        raise ReuseRefused(
            f"baseline_replies={path} holds the replies of {manifest.get('notes', {}).get('policy')}, "
            f"not of the baseline {baseline.stable_ref}{fix}"
        )
    notes, config = manifest.get("notes", {}), manifest.get("config", {})
    # The dtype that ran (`auto` resolves per machine): notes.device where recorded, else the config's name.
    then_dtype = notes.get("device", {}).get("dtype") or device.resolve_dtype(config.get("dtype", "float32"))
    same = {
        "engine": (notes.get("engine"), engine_name),
        "dtype": (then_dtype, device.resolve_dtype(cfg.dtype)),
        "sampling": (notes.get("sampling"), to_dict(cfg.sampling)),
    }
    differ = [f"{k} {a!r} there, {b!r} now" for k, (a, b) in same.items() if a != b]
    if differ:
        raise ReuseRefused(f"baseline_replies={path} was generated differently: {'; '.join(differ)}{fix}")
    with open(runs.output_path(path, manifest, "replies"), encoding="utf-8") as f:
        earlier = {(r["prompt_set"], r["prompt_id"]): r for r in map(json.loads, f)}
    out = []
    for name, prompt in prompts:
        row = earlier.get((name, prompt.prompt_id))
        if row is None or row["prompt"] != prompt.messages:
            raise ReuseRefused(
                f"baseline_replies={path} did not answer {name} prompt {prompt.prompt_id} "
                f"({prompt.source}) as given now{fix}"
            )
        mine = row["policy"]
        out.append(Completion(mine["reply"], mine["tokens"], mine["finish_reason"]))
    log.info("baseline replies: %d reused from %s (its policy is the baseline)", len(out), path)
    return out


# -- models ---------------------------------------------------------------------------------------


def _generate(
    cfg: Config,
    engine_name: str,
    source: ModelSource,
    tokenizer,
    prompt_ids,
    set_names: list[str],
    timing: dict,
    role: str,
) -> list[Completion]:
    """One reply per prompt from one engine load: one job per max-tokens budget (a single job, as before
    `set_max_tokens`, when every set decodes to `max_tokens`), the replies put back in prompt order."""
    budgets = [cfg.sampling.tokens_for(name) for name in set_names]
    plain = {f.name: getattr(cfg.sampling, f.name) for f in dataclasses.fields(SamplingSettings)}
    jobs = {
        tokens: (
            [ids for ids, b in zip(prompt_ids, budgets) if b == tokens],
            SamplingSettings(**{**plain, "max_tokens": tokens}),
        )
        for tokens in dict.fromkeys(budgets)
    }
    out, took = generate_replies(cfg, engine_name, source, tokenizer, jobs, cfg.sampling.seed)
    timing[f"{role}_engine_load_s"] = took["engine_load_s"]
    for key in ("generation_s", "new_tokens"):
        timing[f"{role}_{key}"] = round(sum(job[key] for job in took["jobs"].values()), 2)
    timing[f"{role}_tokens_per_s"] = round(timing[f"{role}_new_tokens"] / max(timing[f"{role}_generation_s"], 1e-9), 2)
    replies = {tokens: iter(completions) for tokens, completions in out.items()}
    return [next(replies[b]) for b in budgets]


def _rewards(cfg: Config, source: ModelSource, conversations, replies) -> dict[str, list[float]]:
    return reward_replies(
        cfg, source, conversations, {m: replies[m] for m in MODELS}, cfg.reward_batch_size, cfg.reward_max_length
    )


# -- judging and metrics --------------------------------------------------------------------------


def _judge(name: str, prompt, completions: dict, rubric: BrandRubric | None, rewards: dict | None) -> dict:
    row = {"prompt_set": name, "prompt_id": prompt.prompt_id, "source": prompt.source, "prompt": prompt.messages}
    for role, completion in completions.items():
        reply = completion.text.strip()
        refusal = detect_refusal(reply)
        judged = {
            "reply": reply,
            "tokens": completion.tokens,
            "finish_reason": completion.finish_reason,
            "words": len(reply.split()),
            "refusal": refusal.label,
            "refusal_patterns": refusal.matched,
        }
        if name == "brand" and rubric is not None:
            brand = rubric.judge(prompt.messages[-1]["content"], reply)
            judged.update(brand_score=brand.score, brand_rules=brand.rules)
        if rewards is not None:
            judged["reward"] = rewards[role]
        row[role] = judged
    if rewards is not None:
        p, b = rewards["policy"], rewards["baseline"]
        row["policy_wins"] = 1.0 if p > b else 0.5 if p == b else 0.0
    return row


def set_metrics(rows: list[dict], boot: BootstrapSettings) -> dict:
    """Per metric: policy, baseline and paired difference, each {mean, ci_low, ci_high, n}."""
    per_prompt = {
        "refusal_rate": lambda r: float(r["refusal"] != "compliance"),
        "length_words": lambda r: float(r["words"]),
    }
    if "brand_score" in rows[0]["policy"]:
        per_prompt["brand_score"] = lambda r: r["brand_score"]
    if "reward" in rows[0]["policy"]:
        per_prompt["rm_reward"] = lambda r: r["reward"]
    args = dict(resamples=boot.resamples, seed=boot.seed, level=boot.level)
    metrics = {}
    for metric, value in per_prompt.items():
        pol = [value(r["policy"]) for r in rows]
        base = [value(r["baseline"]) for r in rows]
        metrics[metric] = {
            "policy": bootstrap_mean(pol, **args).as_dict(),
            "baseline": bootstrap_mean(base, **args).as_dict(),
            "difference": bootstrap_paired_difference(pol, base, **args).as_dict(),
        }
    if "policy_wins" in rows[0]:
        metrics["rm_win_rate"] = bootstrap_mean([r["policy_wins"] for r in rows], **args).as_dict()
    if "brand_rules" in rows[0]["policy"]:
        metrics["brand_rules"] = {
            rule: {role: _mean([r[role]["brand_rules"][rule] for r in rows]) for role in MODELS}
            for rule in rows[0]["policy"]["brand_rules"]
        }
    return metrics


def _mean(values: list[float | None]) -> float | None:
    applied = [v for v in values if v is not None]
    return sum(applied) / len(applied) if applied else None


def log_table(metrics: dict, sets) -> None:
    for name in sets:
        for metric, m in metrics[name].items():
            if metric == "brand_rules":
                continue
            if metric == "rm_win_rate":
                log.info("%-8s %-13s %.3f [%.3f, %.3f]", name, metric, m["mean"], m["ci_low"], m["ci_high"])
                continue
            p, b, d = m["policy"], m["baseline"], m["difference"]
            log.info(
                "%-8s %-13s policy %.3f [%.3f, %.3f]  baseline %.3f [%.3f, %.3f]  difference %+.3f [%+.3f, %+.3f]",
                name,
                metric,
                p["mean"],
                p["ci_low"],
                p["ci_high"],
                b["mean"],
                b["ci_low"],
                b["ci_high"],
                d["mean"],
                d["ci_low"],
                d["ci_high"],
            )
