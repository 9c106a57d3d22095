"""`align evaluate retention POLICY [--baseline RUN] [reward_model=RUN]`: what fine-tuning cost the model.

Behavioural fine-tuning (a brand voice, refusals) must not cost the policy its general abilities.
This stage compares the policy with a baseline (default: the policy's base, the model its first
adapter sits on, as `align evaluate policy`) on two things:

- `ifeval`: instruction following on IFEval's verifiable instructions, scored with lm-eval's own
  checkers (align/evaluation/ifeval.py): prompt-level and instruction-level, strict and loose.
  Greedy decoding, as lm-eval's IFEval task. `ifeval.limit` evaluates a seeded subset: minutes
  instead of half an hour, at the price of a wider interval (n is in every interval).
- `drift`: on general prompts (MT-bench, Vicuna, Arena-Hard, OASST), the mean per-token
  KL(policy || baseline) on the policy's own sampled replies, the baseline replies' mean per-token
  log-likelihood under the policy and under the baseline (its difference is the change), reply
  length, and, with `reward_model`, each reply's reward and the policy's win rate (ties count half).

Metrics follow `align evaluate policy`'s shape, so the loop's gates read them the same way:
`<set>.<metric>.<policy|baseline|difference>.<mean|ci_low|ci_high|n>` (e.g.
`ifeval.prompt_strict.difference.mean`, `drift.baseline_logprob.difference.ci_low`); the KL and the
win rate already compare the two models, so they carry one interval: `drift.kl.mean`,
`drift.rm_win_rate.mean`. Intervals are paired percentile bootstraps over prompts.

Writes a run with `ifeval_replies.jsonl` and `drift_replies.jsonl` (every reply and its verdicts),
`retention.png` (IFEval accuracies of both models and the drift figures, with their intervals) and
the metrics in `manifest.json`. Needs lm-eval for the IFEval part (`pip install -e ".[eval]"`);
without it, and with IFEval asked for, the stage stops with exit 2 before loading any model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from align.core import device, runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.data.records import write_jsonl
from align.evaluation.bootstrap import bootstrap_mean, bootstrap_paired_difference
from align.evaluation.comparison import ComparisonConfig
from align.evaluation.prompt_sets import PromptSetConfig, load_prompt_set
from align.evaluation.replies import generate_replies, reward_replies
from align.models import ModelSource, base_of, load_tokenizer, policy_source, reward_source, same_weights
from align.rollout import SamplingSettings, check_context, context_length, encode_prompts
from align.rollout.engines import choose_engine

log = logging.getLogger(__name__)

STAGE = "evaluate retention"
IFEVAL_REPLIES = "ifeval_replies.jsonl"
PLOT = "retention.png"
DRIFT_REPLIES = "drift_replies.jsonl"
MODELS = ("policy", "baseline")
SETS = ("ifeval", "drift")
# Metrics per set, for the gates: those with policy/baseline/difference, and those with one interval.
METRICS = {
    "ifeval": ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose", "length_words"),
    "drift": ("baseline_logprob", "length_words", "length_tokens", "rm_reward"),
}
SINGLE = {"drift": ("kl", "rm_win_rate")}


@dataclass
class IFEvalSettings:
    """IFEval prompts and how they are answered."""

    path: str = "data/instructions/ifeval_prompts.jsonl"
    """IFEval JSONL (key, prompt, instruction_id_list, kwargs); empty = IFEval not evaluated."""
    limit: int | None = None
    """Evaluate a seeded subset of this many prompts (kept in file order); unset = all."""
    seed: int = 0
    """Seed of that subset."""
    max_tokens: int = 512
    """Most new tokens per greedy reply (a cut reply can fail length and ending instructions)."""

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise AlignError(f"'ifeval.limit' must be >= 1 or unset, got {self.limit}")
        if self.max_tokens < 1:
            raise AlignError(f"'ifeval.max_tokens' must be >= 1, got {self.max_tokens}")


@dataclass
class DriftSampling(SamplingSettings):
    """Sampling of the drift replies: the policy's own distribution, so temperature 1 and no nucleus cut."""

    n: int = 1
    """Replies per prompt; must be 1."""
    temperature: float = 1.0
    """1 samples the model's distribution, which the per-token KL is an expectation over."""
    top_p: float = 1.0
    """1 = off: a truncated distribution is not the policy's."""
    max_tokens: int = 128
    """Most new tokens per reply."""


@dataclass
class Config(ComparisonConfig):
    """`align evaluate retention` settings (policy, baseline, engine and intervals: `ComparisonConfig`)."""

    ifeval: IFEvalSettings = field(default_factory=IFEvalSettings)
    """Instruction following."""
    drift: PromptSetConfig = field(default_factory=PromptSetConfig)
    """General prompts for KL, log-likelihood and length (e.g. MT-bench, Vicuna, Arena-Hard, OASST)."""
    drift_sampling: DriftSampling = field(default_factory=DriftSampling)
    """Sampling of the drift replies."""
    score_batch_size: int = 4
    """Replies per forward pass when computing KL, log-likelihoods and rewards."""

    def __post_init__(self):
        super().__post_init__()
        if self.drift_sampling.n != 1:
            raise AlignError(
                f"drift compares one reply per prompt: set drift_sampling.n=1 (got {self.drift_sampling.n})"
            )
        if self.score_batch_size < 1:
            raise AlignError(f"'score_batch_size' must be >= 1, got {self.score_batch_size}")


def run(cfg: Config) -> dict:
    # Inputs first: a missing lm-eval, a bad path or an over-long prompt fails before any model loads.
    if not cfg.policy:
        raise AlignError(
            "'policy' is required: `align evaluate retention RUN` (a training run, model directory or embedded)"
        )
    if not cfg.ifeval.path and not cfg.drift.paths:
        raise AlignError(
            "nothing to evaluate: set ifeval.path and/or drift.paths (see configs/evaluate/retention.yaml)"
        )
    from align.evaluation import ifeval

    ifeval_prompts = (
        ifeval.load_ifeval_prompts(cfg.ifeval.path, cfg.ifeval.limit, cfg.ifeval.seed) if cfg.ifeval.path else []
    )
    drift_prompts = load_prompt_set("drift", cfg.drift) if cfg.drift.paths else []
    policy = policy_source(cfg.policy, "policy", cfg.trust_remote_code)
    baseline_ref = cfg.baseline or base_of(cfg.policy)
    baseline = policy_source(baseline_ref, "baseline", cfg.trust_remote_code)
    reward = reward_source(cfg.reward_model, cfg.trust_remote_code) if cfg.reward_model else None
    tokenizer = load_tokenizer(policy, cfg.trust_remote_code)
    # One tokenizer encodes both models' prompts, and the KL compares next-token distributions id by id.
    if load_tokenizer(baseline, cfg.trust_remote_code).get_vocab() != tokenizer.get_vocab():
        raise AlignError(
            f"policy {policy.stable_ref} and baseline {baseline.stable_ref} have different vocabularies; "
            "retention compares a policy with a model of the same tokenizer (its base or an earlier round)"
        )
    jobs = {}
    context = context_length(policy.base_dir)
    if ifeval_prompts:
        ids = encode_prompts(tokenizer, [[{"role": "user", "content": p.prompt}] for p in ifeval_prompts])
        check_context(ids, [p.source for p in ifeval_prompts], cfg.ifeval.max_tokens, context)
        jobs["ifeval"] = (ids, SamplingSettings(n=1, temperature=0.0, max_tokens=cfg.ifeval.max_tokens))
    if drift_prompts:
        ids = encode_prompts(tokenizer, [p.messages for p in drift_prompts])
        check_context(ids, [p.source for p in drift_prompts], cfg.drift_sampling.max_tokens, context)
        jobs["drift"] = (ids, cfg.drift_sampling)
    same_model = same_weights(policy, baseline)
    if same_model:
        log.info(
            "baseline %s has the same weights as the policy%s: its replies are the policy's",
            baseline.stable_ref,
            "" if cfg.baseline else " (the policy has no base of its own)",
        )
    engine_name = choose_engine(cfg.engine)
    log.info(
        "evaluate retention: %s vs baseline %s; ifeval %d prompts, drift %d prompts, engine %s",
        policy.stable_ref,
        baseline.stable_ref,
        len(ifeval_prompts),
        len(drift_prompts),
        engine_name,
    )

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_dir:
        run_dir.add_input_record("policy", policy.record)
        run_dir.add_input_record("baseline", baseline.record)
        if reward is not None:
            run_dir.add_input_record("reward_model", reward.record)
        if ifeval_prompts:
            run_dir.add_input("ifeval.path", cfg.ifeval.path)
        for i, path in enumerate(cfg.drift.paths):
            run_dir.add_input(f"drift.paths[{i}]", path)

        timing: dict[str, float] = {}
        replies = {"policy": _generate(cfg, engine_name, policy, tokenizer, jobs, timing, "policy")}
        replies["baseline"] = (
            replies["policy"]
            if same_model
            else _generate(cfg, engine_name, baseline, tokenizer, jobs, timing, "baseline")
        )
        args = dict(resamples=cfg.bootstrap.resamples, seed=cfg.bootstrap.seed, level=cfg.bootstrap.level)

        if ifeval_prompts:
            start = time.time()
            rows = [_ifeval_row(p, {m: replies[m]["ifeval"][i] for m in MODELS}) for i, p in enumerate(ifeval_prompts)]
            write_jsonl(Path(run_dir.path) / IFEVAL_REPLIES, rows)
            run_dir.add_output("ifeval_replies", IFEVAL_REPLIES, rows=len(rows))
            metrics = ifeval.ifeval_metrics(rows, **args)
            metrics["length_words"] = _paired(
                [r["policy"]["words"] for r in rows], [r["baseline"]["words"] for r in rows], args
            )
            run_dir.metrics["ifeval"] = metrics
            unscored = ifeval.unscored_counts(rows)
            run_dir.notes["ifeval"] = {
                "prompts": len(rows),
                "limit": cfg.ifeval.limit,
                "seed": cfg.ifeval.seed,
                "max_tokens": cfg.ifeval.max_tokens,
                "punkt": ifeval.punkt_source(),
                "unscored": {**unscored, "instruction": ifeval.SENTENCES if unscored["instructions"] else None},
                "truncated_replies": {m: sum(r[m]["finish_reason"] == "length" for r in rows) for m in MODELS},
                "strict_average": {
                    m: (metrics["prompt_strict"][m]["mean"] + metrics["inst_strict"][m]["mean"]) / 2 for m in MODELS
                }
                if "prompt_strict" in metrics
                else None,
            }
            if unscored["instructions"]:
                log.warning(
                    "ifeval: %d instructions (%s) in %d prompts unscored: no Punkt model; install %s",
                    unscored["instructions"],
                    ifeval.SENTENCES,
                    unscored["prompts"],
                    ifeval.INSTALL,
                )
            timing["ifeval_scoring_s"] = round(time.time() - start, 2)

        if drift_prompts:
            start = time.time()
            rows, metrics = _drift(
                cfg, policy, baseline, same_model, reward, tokenizer, drift_prompts, jobs["drift"][0], replies, args
            )
            write_jsonl(Path(run_dir.path) / DRIFT_REPLIES, rows)
            run_dir.add_output("drift_replies", DRIFT_REPLIES, rows=len(rows))
            run_dir.metrics["drift"] = metrics
            timing["drift_scoring_s"] = round(time.time() - start, 2)

        for name in SETS:
            if name in run_dir.metrics:
                run_dir.log_metrics({"prompt_set": name, **run_dir.metrics[name]})
        run_dir.metrics.update(**timing)
        run_dir.notes.update(
            policy=policy.stable_ref,
            baseline=baseline.stable_ref,
            baseline_is_policy=same_model,
            baseline_default=cfg.baseline is None,
            engine=engine_name,
        )
        plot(run_dir.metrics, Path(run_dir.path) / PLOT)
        run_dir.add_output("plot", PLOT)
        log_table(run_dir.metrics)
        device.record(run_dir, cfg)
        return runs.finish(run_dir)


# -- models and generation ------------------------------------------------------------------------


def _generate(
    cfg: Config, engine_name: str, source: ModelSource, tokenizer, jobs: dict, timing: dict, role: str
) -> dict:
    """Every job's completions from one engine load: {job: [Completion per prompt]}."""
    out, took = generate_replies(cfg, engine_name, source, tokenizer, jobs, cfg.drift_sampling.seed)
    timing[f"{role}_engine_load_s"] = took["engine_load_s"]
    for job, job_timing in took["jobs"].items():
        timing.update({f"{role}_{job}_{k}": v for k, v in job_timing.items()})
    return out


# -- IFEval and drift -----------------------------------------------------------------------------


def _ifeval_row(prompt, completions: dict) -> dict:
    from align.evaluation.ifeval import score_reply

    row = {"key": prompt.key, "source": prompt.source, "prompt": prompt.prompt}
    for role, completion in completions.items():
        # lm-eval scores the reply as generated: no stripping, so leading/trailing-line rules see what the model wrote.
        row[role] = {
            "reply": completion.text,
            "tokens": completion.tokens,
            "finish_reason": completion.finish_reason,
            "words": len(completion.text.split()),
            **score_reply(prompt, completion.text),
        }
    return row


def _drift(
    cfg: Config,
    policy: ModelSource,
    baseline: ModelSource,
    same_model: bool,
    reward,
    tokenizer,
    prompts,
    prompt_ids,
    replies,
    args,
) -> tuple[list[dict], dict]:
    from align.evaluation.drift import reply_ids, reply_logprob, token_kl
    from align.models import load_policy

    eos = tokenizer.eos_token_id
    ids = {
        m: [reply_ids(tokenizer, c.text, c.finish_reason == "stop", eos) for c in replies[m]["drift"]] for m in MODELS
    }
    loading = dict(attn_implementation=cfg.attn_implementation, place=True)
    policy_model = load_policy(policy, cfg.dtype, cfg.trust_remote_code, **loading).eval()
    baseline_model = (
        policy_model if same_model else load_policy(baseline, cfg.dtype, cfg.trust_remote_code, **loading).eval()
    )
    bs = cfg.score_batch_size
    kl = token_kl(policy_model, baseline_model, prompt_ids, ids["policy"], bs)
    under_policy = reply_logprob(policy_model, prompt_ids, ids["baseline"], bs)
    under_baseline = under_policy if same_model else reply_logprob(baseline_model, prompt_ids, ids["baseline"], bs)
    del policy_model, baseline_model
    rewards = _rewards(cfg, reward, prompts, replies) if reward is not None else None

    per_token = lambda total, n: total / n if n else 0.0  # noqa: E731  (an empty reply adds nothing)
    rows = []
    for i, prompt in enumerate(prompts):
        row = {
            "prompt_id": prompt.prompt_id,
            "source": prompt.source,
            "prompt": prompt.messages,
            "kl_per_token": per_token(*kl[i]),
            "kl_tokens": kl[i][1],
            "baseline_reply_logprob": {
                "policy": per_token(*under_policy[i]),
                "baseline": per_token(*under_baseline[i]),
                "tokens": under_policy[i][1],
            },
        }
        for m in MODELS:
            c = replies[m]["drift"][i]
            row[m] = {
                "reply": c.text,
                "tokens": c.tokens,
                "finish_reason": c.finish_reason,
                "words": len(c.text.split()),
            }
            if rewards is not None:
                row[m]["reward"] = rewards[m][i]
        if rewards is not None:
            p, b = rewards["policy"][i], rewards["baseline"][i]
            row["policy_wins"] = 1.0 if p > b else 0.5 if p == b else 0.0
        rows.append(row)

    metrics = {
        "kl": bootstrap_mean([r["kl_per_token"] for r in rows], **args).as_dict(),
        "baseline_logprob": _paired(
            [r["baseline_reply_logprob"]["policy"] for r in rows],
            [r["baseline_reply_logprob"]["baseline"] for r in rows],
            args,
        ),
        "length_words": _paired([r["policy"]["words"] for r in rows], [r["baseline"]["words"] for r in rows], args),
        "length_tokens": _paired([r["policy"]["tokens"] for r in rows], [r["baseline"]["tokens"] for r in rows], args),
    }
    if rewards is not None:
        metrics["rm_reward"] = _paired(rewards["policy"], rewards["baseline"], args)
        metrics["rm_win_rate"] = bootstrap_mean([r["policy_wins"] for r in rows], **args).as_dict()
    return rows, metrics


def _rewards(cfg: Config, source: ModelSource, prompts, replies) -> dict[str, list[float]]:
    return reward_replies(
        cfg,
        source,
        [p.messages for p in prompts],
        {m: replies[m]["drift"] for m in MODELS},
        cfg.score_batch_size,
        cfg.reward_max_length,
        "drift replies",
    )


def _paired(policy: list[float], baseline: list[float], args: dict) -> dict:
    return {
        "policy": bootstrap_mean(policy, **args).as_dict(),
        "baseline": bootstrap_mean(baseline, **args).as_dict(),
        "difference": bootstrap_paired_difference(policy, baseline, **args).as_dict(),
    }


def log_table(metrics: dict) -> None:
    for name in SETS:
        for metric, m in metrics.get(name, {}).items():
            if "policy" not in m:
                log.info("%-7s %-16s %.4f [%.4f, %.4f]", name, metric, m["mean"], m["ci_low"], m["ci_high"])
                continue
            p, b, d = m["policy"], m["baseline"], m["difference"]
            log.info(
                "%-7s %-16s policy %.3f [%.3f, %.3f]  baseline %.3f [%.3f, %.3f]  difference %+.3f [%+.3f, %+.3f]  n=%d",
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
                p["n"],
            )


def plot(metrics: dict, path: Path) -> None:
    """IFEval levels (policy vs baseline) and drift (KL, baseline-reply log-likelihood change), with intervals."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    from matplotlib import pyplot as plt

    panels = [name for name in SETS if name in metrics]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, name in zip(axes[0], panels):
        if name == "ifeval":
            levels = [
                level
                for level in ("prompt_strict", "inst_strict", "prompt_loose", "inst_loose")
                if level in metrics[name]
            ]
            if not levels:  # nothing scorable (reported in notes.ifeval.unscored)
                continue
            for k, role in enumerate(MODELS):
                stats = [metrics[name][level][role] for level in levels]
                ax.bar(
                    [i + (k - 0.5) * 0.38 for i in range(len(levels))],
                    [s["mean"] for s in stats],
                    0.38,
                    label=role,
                    yerr=[[s["mean"] - s["ci_low"] for s in stats], [s["ci_high"] - s["mean"] for s in stats]],
                    capsize=3,
                )
            ax.set_xticks(range(len(levels)), [level.replace("_", "\n") for level in levels])
            ax.set_ylim(0, 1)
            ax.set_ylabel("accuracy")
            ax.set_title(f"IFEval ({metrics[name][levels[0]]['policy']['n']} prompts), 95% intervals")
            ax.legend()
        else:
            items = [
                ("KL(policy || baseline)\nnats/token", metrics[name]["kl"]),
                ("baseline replies' log-lik.\nchange, nats/token", metrics[name]["baseline_logprob"]["difference"]),
            ]
            for i, (_, s) in enumerate(items):
                ax.errorbar(
                    [i], [s["mean"]], yerr=[[s["mean"] - s["ci_low"]], [s["ci_high"] - s["mean"]]], fmt="o", capsize=4
                )
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_xticks(range(len(items)), [label for label, _ in items])
            ax.set_xlim(-0.5, len(items) - 0.5)
            ax.set_title(f"drift ({metrics[name]['kl']['n']} general prompts)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
