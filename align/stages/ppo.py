"""Online RL from a reward model: PPO (align's own), RLOO and GRPO (TRL), behind one config.

`align ppo --config configs/ppo/default.yaml` samples responses to a prompt set with the policy,
scores them with a reward model (an `align reward` run or any one-output sequence-classification
directory, scored with the reward stage's exact formatting) and updates the policy's LoRA adapter:

- `algorithm: ppo`: PPO with a value model initialised from the reward model, the per-token KL
  penalty folded into the reward, GAE and clipped policy and value losses (`align.rl.ppo`, whose
  docstring lists where it departs from InstructGPT and Huang et al. 2024). Settings under `ppo:`.
  `rollout:` picks the sampler: transformers' `generate`, or one vLLM engine for the whole run that
  gets the adapter's current weights before every step (`align.rl.vllm_rollout`); the manifest's
  `notes.rollout` records which one ran (and, for vLLM, how the weights reached it).
- `algorithm: rloo` / `grpo`: TRL's RLOOTrainer / GRPOTrainer with the reward model as reward
  function (`align.rl.trl_online`). `training:` passes TRL arguments through (e.g. `use_vllm`,
  `vllm_mode: colocate` on a GPU); on a CPU they generate with transformers.

In every case the reference is the starting policy with the new adapter disabled (so LoRA is
required: `lora.enabled: false` is refused), one step consumes `batch_size` responses
(`batch_size / num_generations` prompts, each sampled `num_generations` times), and `kl_coef` is
the KL weight (TRL's `beta`). The last `eval.prompts` prompts of the set are held out (or, with
`eval.path`, the first ones of another file, and the set trains whole): after training, policy and
reference answer them greedily and the reward model scores both (replies and scores in
`held_out_replies.jsonl`).

Writes the policy adapter (`model/`), metrics.jsonl (one line per step: reward raw and with KL, KL,
entropy, response length, clip fraction, value loss for PPO, tokens/s, generation/scoring/training
seconds) and a manifest with the policy and reward model as parents. Every algorithm writes
checkpoints every `checkpoint_every` steps into `checkpoint_dir/step-N` and continues from one with
`resume_from` (same settings, checked; PPO's are align's own, RLOO's and GRPO's transformers'; both
log the same steps as a run that never stopped).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from align.core import device, distributed, runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.training import TrainStageConfig, count_trainable, format_seconds
from align.data.prompts import load_prompts
from align.data.splits import prompt_key
from align.models import (
    ModelSource,
    load_policy,
    load_reward_model,
    load_tokenizer,
    model_output,
    peft_config,
    resolve_model,
)
from align.rl.checkpoints import CHECKPOINT_STATE, check_resume_prompts, read_checkpoint, write_checkpoint
from align.rl.ppo import PPOSettings
from align.rollout import VllmSettings, encode_prompts

log = logging.getLogger(__name__)

STAGE = "ppo"
ALGORITHMS = ("ppo", "rloo", "grpo")
VALUE_MODEL_DIR = "value_model"


@dataclass
class HeldOutEval:
    """Policy vs reference on held-out prompts, scored by the reward model after training."""

    prompts: int = 8
    """Prompts held out from the end of the prompt set, or the first ones of `path` (0: no held-out evaluation)."""
    path: str | None = None
    """Held-out prompts from this file (any container `align generate` reads) instead of the prompt set's tail;
    the prompt set then trains whole. A prompt that is also a training prompt is an error."""
    max_new_tokens: int = 48
    """Reply length budget (greedy)."""
    batch_size: int = 8
    """Generation and scoring batch size."""


@dataclass
class Config(TrainStageConfig):
    """`align ppo` settings."""

    algorithm: Literal["ppo", "rloo", "grpo"] = "ppo"
    """ppo (align's, with a value model) | rloo | grpo (TRL's trainers)."""
    reward_model: str = ""
    """The reward model: an `align reward` run or a one-output sequence-classification directory."""
    prompts: str = ""
    """Prompt set (any container `align generate` reads, `hf:<org>/<name>?split=...` hub datasets included)."""
    prompt_field: str | None = None
    """Field or column holding the prompt; unset tries messages, prompt, goal, then turns."""
    max_prompts: int | None = None
    """Use only the first N prompts of the set (file order; held-out prompts come from these)."""
    steps: int = 20
    """Optimisation steps; each samples and scores `batch_size` fresh responses."""
    batch_size: int = 8
    """Responses per step."""
    num_generations: int = 1
    """Responses per prompt (the group RLOO and GRPO compare within; at least 2 for them)."""
    max_new_tokens: int = 48
    """Most new tokens per response."""
    temperature: float = 0.7
    """Sampling temperature of the rollouts."""
    kl_coef: float = 0.05
    """Weight of the KL penalty to the reference (PPO: per token in the reward; TRL's `beta`)."""
    learning_rate: float = 5e-5
    """Adam learning rate of the adapter(s)."""
    ppo: PPOSettings = field(default_factory=PPOSettings)
    """PPO's own settings (algorithm: ppo)."""
    rollout: Literal["auto", "hf", "vllm"] = "auto"
    """PPO's sampler: hf (transformers' `generate` on the policy itself) | vllm (one vLLM engine for the run,
    given the adapter's current weights before each step: merged on a CPU, served on a GPU, see `vllm.lora`) |
    auto: vllm where it imports and a GPU is present, else hf. On a CPU auto takes hf: generation is only ~15%
    of a PPO step there, and vLLM's saving (1.9 vs 2.8 s for 8 responses of the embedded model, one step each,
    benchmarks/online_rl.py) barely repays its 7-13 s eager start and the RAM of its KV cache and second copy of
    the weights. On a GPU vLLM's batching is expected to pay (not measured here). RLOO/GRPO generate through
    TRL (see `training:`); rollout=vllm is refused for them."""
    vllm: VllmSettings = field(default_factory=VllmSettings)
    """The vLLM engine of `rollout: vllm` (`lora`: how the adapter reaches it each step, `auto` merges on a CPU)."""
    reward_batch_size: int = 8
    """Batch size for scoring responses with the reward model (PPO)."""
    eval: HeldOutEval = field(default_factory=HeldOutEval)
    """Held-out evaluation against the reference after training."""
    checkpoint_every: int = 0
    """Write a checkpoint every N steps into `checkpoint_dir` (0: never)."""
    checkpoint_dir: str | None = None
    """Where checkpoints go; outside the run directory, which exists only once the run is complete."""
    resume_from: str | None = None
    """A checkpoint (`checkpoint_dir/step-N`) of an earlier run with the same settings to continue from."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("steps", "batch_size", "num_generations", "max_new_tokens", "reward_batch_size"):
            if getattr(self, name) < 1:
                raise AlignError(f"'{name}' must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise AlignError(f"'temperature' must be > 0 (online RL samples), got {self.temperature}")
        if self.kl_coef < 0:
            raise AlignError(f"'kl_coef' must be >= 0, got {self.kl_coef}")
        if self.learning_rate <= 0:
            raise AlignError(f"'learning_rate' must be > 0, got {self.learning_rate}")
        if self.checkpoint_every < 0:
            raise AlignError(f"'checkpoint_every' must be >= 0 (0: never), got {self.checkpoint_every}")


def run(cfg: Config) -> dict:
    check_settings(cfg)
    rollout = rollout_engine(cfg)
    resume = read_checkpoint(cfg) if cfg.resume_from else None
    source = resolve_model(cfg.model, cfg.trust_remote_code)
    reward_source = resolve_reward_model(cfg.reward_model, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    reward_tokenizer = load_tokenizer(reward_source, cfg.trust_remote_code)
    check_same_tokenizer(tokenizer, reward_tokenizer, cfg.model, cfg.reward_model)
    train_prompts, held_out = _prompt_split(cfg, tokenizer)
    if resume is not None:
        check_resume_prompts(cfg, resume, train_prompts)
    trl_args = None
    if cfg.algorithm != "ppo":
        from align.rl.trl_online import trl_arguments

        trl_args = trl_arguments(cfg)

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run_dir:
        run_dir.add_input_record("model", source.record)
        run_dir.add_input_record("reward_model", reward_source.record)
        run_dir.add_input("prompts", cfg.prompts)
        if cfg.eval.path and held_out:
            run_dir.add_input("eval_prompts", cfg.eval.path)
        if resume is not None:
            run_dir.add_input("resume_from", cfg.resume_from, step=resume["step"])
        run_dir.notes["prompts"] = {"train": len(train_prompts), "held_out": len(held_out)}
        run_dir.notes["rollout"] = rollout

        from transformers import set_seed

        set_seed(cfg.seed)
        start = time.time()
        if cfg.algorithm == "ppo":
            policy = _train_ppo(cfg, source, reward_source, tokenizer, train_prompts, run_dir, resume)
        else:
            from align.rl.trl_online import train_trl

            policy = train_trl(
                cfg, trl_args, source, reward_source, tokenizer, reward_tokenizer, train_prompts, run_dir, resume
            )
        run_dir.metrics["train_wall_time_s"] = round(time.time() - start, 2)

        out = Path(run_dir.path) / runs.MODEL_DIR
        policy.save_pretrained(str(out))
        tokenizer.save_pretrained(out)
        model_output(run_dir, runs.MODEL_DIR, source, cfg.lora, task="causal_lm")
        if held_out:
            from align.evaluation.policy_reward import compare_with_reward_model, replies_output

            run_dir.metrics.update(
                compare_with_reward_model(
                    policy,
                    tokenizer,
                    reward_source,
                    [p.messages for p in held_out],
                    cfg.eval,
                    cfg.dtype,
                    cfg.max_length,
                    disable_adapter=True,
                    replies_path=replies_output(run_dir),
                    attn_implementation=cfg.attn_implementation,
                )
            )
        device.record(run_dir, cfg, policy)
        return runs.finish(run_dir)


def _train_ppo(cfg: Config, source, reward_source, tokenizer, prompts, run_dir, resume):
    from peft import get_peft_model

    from align.rl.ppo import PPOTrainer, reward_model_scorer

    # Placed on this process's device: align runs these itself (rollouts, scoring, the PPO update).
    policy = load_policy(
        source, cfg.dtype, cfg.trust_remote_code, attn_implementation=cfg.attn_implementation, place=True
    )
    policy = get_peft_model(policy, peft_config(cfg.lora, "CAUSAL_LM", policy, cfg.trainable_layers))
    value_model = load_reward_model(
        reward_source,
        cfg.dtype,
        cfg.trust_remote_code,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=cfg.attn_implementation,
        place=True,
    )
    value_model = get_peft_model(value_model, peft_config(cfg.lora, "SEQ_CLS", value_model, cfg.trainable_layers))
    # The reward model is the value model with its adapter off: one copy of the reward weights.
    reward_fn = reward_model_scorer(
        value_model, tokenizer, cfg.max_length, cfg.reward_batch_size, adapter_off=value_model.disable_adapter
    )
    run_dir.notes["parameters"] = {"policy": count_trainable(policy), "value_model": count_trainable(value_model)}
    sampler = _vllm_sampler(cfg, source, tokenizer, run_dir) if run_dir.notes["rollout"]["engine"] == "vllm" else None
    try:
        trainer = PPOTrainer(
            policy,
            value_model,
            tokenizer,
            reward_fn,
            cfg.ppo,
            cfg.kl_coef,
            cfg.learning_rate,
            cfg.max_new_tokens,
            cfg.temperature,
            sampler=sampler,
        )
        _ppo_steps(cfg, trainer, prompts, run_dir, resume)
    finally:
        if sampler is not None:  # frees the engine's weights and KV cache before the held-out evaluation
            sampler.close()
    value_model.save_pretrained(str(Path(run_dir.path) / VALUE_MODEL_DIR))
    run_dir.add_output(VALUE_MODEL_DIR, VALUE_MODEL_DIR, format="adapter", task="reward")
    return policy


def _vllm_sampler(cfg: Config, source, tokenizer, run_dir):
    from align.rl.vllm_rollout import VllmPolicySampler
    from align.rollout.vllm_engine import VllmEngine

    engine = VllmEngine(
        source,
        tokenizer,
        cfg.dtype,
        cfg.vllm,
        max_model_len=cfg.max_length,
        seed=cfg.seed,
        trust_remote_code=cfg.trust_remote_code,
        trained_lora_rank=cfg.lora.r,
    )
    run_dir.notes["rollout"].update(engine.details, policy_update=engine.policy_update)
    return VllmPolicySampler(engine)


def _ppo_steps(cfg: Config, trainer, prompts, run_dir, resume) -> None:
    begin = 1
    if resume is not None:
        import torch

        trainer.load_state_dict(torch.load(Path(cfg.resume_from) / CHECKPOINT_STATE, weights_only=True))
        begin = resume["step"] + 1
        log.info("resumed from %s at step %d", cfg.resume_from, resume["step"])
    per_step = cfg.batch_size // cfg.num_generations
    log.info(
        "ppo: %d steps x %d responses (%d prompts x %d), %d ppo epochs, rollouts with %s, %s",
        cfg.steps,
        cfg.batch_size,
        per_step,
        cfg.num_generations,
        cfg.ppo.ppo_epochs,
        run_dir.notes["rollout"]["engine"],
        run_dir.notes["parameters"]["policy"],
    )
    totals = {"time_generation": 0.0, "time_scoring": 0.0, "time_training": 0.0}
    start = time.time()
    first = last = None
    for step in range(begin, cfg.steps + 1):
        chosen = [prompts[(i + (step - 1) * per_step) % len(prompts)] for i in range(per_step)]
        batch = [p for p in chosen for _ in range(cfg.num_generations)]
        metrics = trainer.step([p.messages for p in batch], [p.ids for p in batch])
        run_dir.log_metrics({k: round(v, 6) for k, v in metrics.items()}, step=step)
        for key in totals:
            totals[key] += metrics[key]
        first = first or metrics
        last = metrics
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            write_checkpoint(cfg, trainer, step, prompts)
        elapsed = time.time() - start
        log.info(
            "step %d/%d | reward %.4g | reward+kl %.4g | kl %.4g | entropy %.3g | len %.1f | clip %.3f | "
            "vloss %.4g | %.0f tok/s | gen %.1fs train %.1fs | ETA %s",
            step,
            cfg.steps,
            metrics["reward"],
            metrics["reward_with_kl"],
            metrics["kl"],
            metrics["entropy"],
            metrics["response_length"],
            metrics["clip_fraction"],
            metrics["value_loss"],
            metrics["tokens_per_s"],
            metrics["time_generation"],
            metrics["time_training"],
            format_seconds(elapsed / (step - begin + 1) * (cfg.steps - step)),
        )
    run_dir.metrics.update({f"train_{k}": v for k, v in last.items()})
    run_dir.metrics.update(
        {
            "train_first_reward": first["reward"],
            "global_step": cfg.steps,
            "first_step": begin,
            **{f"total_{k}_s": round(v, 2) for k, v in totals.items()},
        }
    )


# -- checks before any run directory ------------------------------------------------------------


def check_settings(cfg: Config) -> None:
    if not cfg.reward_model:
        raise AlignError("'reward_model' is empty; give an `align reward` run directory (reward_model=runs/reward-...)")
    if not cfg.prompts:
        raise AlignError("'prompts' is empty; give a prompt set (prompts=path/to/prompts.jsonl)")
    if not cfg.lora.enabled:
        raise AlignError(
            "lora.enabled=false is not supported by `align ppo`: the reference policy is the starting "
            "model with the adapter disabled; keep lora.enabled=true"
        )
    if cfg.batch_size % cfg.num_generations:
        raise AlignError(
            f"batch_size={cfg.batch_size} is not divisible by num_generations={cfg.num_generations}; "
            "each step samples whole groups of num_generations responses per prompt"
        )
    if cfg.algorithm in ("rloo", "grpo") and cfg.num_generations < 2:
        raise AlignError(
            f"algorithm={cfg.algorithm} compares responses within a group: num_generations must be >= 2, "
            f"got {cfg.num_generations}"
        )
    if cfg.algorithm == "ppo":
        if distributed.world_size() > 1:
            # Before any run directory: every rank would otherwise train its own copy and race to write.
            raise AlignError(
                f"algorithm=ppo runs in a single process, but this one was launched as one of "
                f"{distributed.world_size()} (accelerate launch / torchrun); run `align ppo ...` directly "
                "(one process; its models go on the GPU), or use algorithm=rloo or grpo, which TRL trains "
                "data-parallel"
            )
        if cfg.training:
            raise AlignError(
                f"'training.{next(iter(cfg.training))}': the training: section passes arguments to TRL's "
                "trainers (algorithm rloo or grpo); PPO's settings are under ppo:"
            )
        if cfg.ppo.minibatch_size > cfg.batch_size:
            raise AlignError(
                f"ppo.minibatch_size={cfg.ppo.minibatch_size} is larger than batch_size={cfg.batch_size}; "
                "lower it or raise batch_size"
            )
    if cfg.checkpoint_every and not cfg.checkpoint_dir:
        raise AlignError(f"checkpoint_every={cfg.checkpoint_every} needs checkpoint_dir (a directory outside runs_dir)")
    if cfg.max_new_tokens >= cfg.max_length:
        raise AlignError(
            f"max_new_tokens={cfg.max_new_tokens} leaves no room for the prompt in "
            f"max_length={cfg.max_length}; raise max_length or lower max_new_tokens"
        )


def rollout_engine(cfg: Config) -> dict:
    """Which engine samples the rollouts (recorded in the manifest as `notes.rollout`), refusing a
    `rollout: vllm` that cannot be honoured."""
    if cfg.algorithm != "ppo":
        if cfg.rollout == "vllm":
            raise AlignError(
                f"rollout=vllm applies to algorithm=ppo; {cfg.algorithm} generates through TRL's trainer: "
                "remove rollout, or on a GPU set training.use_vllm=true (TRL's vLLM modes need one)"
            )
        return {"engine": "trl-vllm" if cfg.training.get("use_vllm") else "trl-transformers", "requested": cfg.rollout}
    if cfg.rollout == "hf":
        return {"engine": "hf", "requested": "hf"}
    from align.rollout.engines import vllm_available

    ok, why = vllm_available()
    if cfg.rollout == "vllm":
        if not ok:
            raise AlignError(f"rollout=vllm but {why}; or set rollout=hf")
        return {"engine": "vllm", "requested": "vllm"}
    import torch

    if ok and torch.cuda.is_available():
        log.info("rollout auto: vllm (it imports and a GPU is present)")
        return {"engine": "vllm", "requested": "auto"}
    reason = "no GPU (on a CPU hf was as fast; see the rollout setting)" if ok else why
    log.info("rollout auto: hf because %s", reason)
    return {"engine": "hf", "requested": "auto", "reason": reason}


def resolve_reward_model(ref: str, trust_remote_code: bool) -> ModelSource:
    """The reward model, refused unless it is a one-output sequence classifier."""
    source = resolve_model(ref, trust_remote_code)
    if source.record.get("kind") == "run" or runs.is_run(ref):
        if source.task != "reward":
            raise AlignError(
                f"reward_model {ref} is a {source.task} run, not a reward model; give an `align reward` run"
            )
        return source
    config = json.loads((source.base_dir / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)  # transformers' default is 2
    if not any(a.endswith("ForSequenceClassification") for a in architectures) or labels != 1:
        raise AlignError(
            f"reward_model {ref} is not a one-output sequence classifier (architectures: "
            f"{', '.join(architectures) or 'none'}, {labels} labels); give an `align reward` run"
        )
    source.task = "reward"
    return source


def check_same_tokenizer(policy_tokenizer, reward_tokenizer, policy_ref: str, reward_ref: str) -> None:
    """The reward model reads the policy's responses as text re-tokenised with its own tokenizer;
    a different vocabulary or chat template means it scores text formatted unlike its training."""
    differences = []
    if policy_tokenizer.get_vocab() != reward_tokenizer.get_vocab():
        differences.append(f"vocabulary ({len(policy_tokenizer)} vs {len(reward_tokenizer)} tokens)")
    if policy_tokenizer.chat_template != reward_tokenizer.chat_template:
        differences.append("chat template")
    if policy_tokenizer.eos_token != reward_tokenizer.eos_token:
        differences.append(f"eos token ({policy_tokenizer.eos_token!r} vs {reward_tokenizer.eos_token!r})")
    if differences:
        raise AlignError(
            f"reward_model {reward_ref} was built on a different tokenizer than the policy {policy_ref} "
            f"({', '.join(differences)}); train the reward model from the same base as the policy"
        )


@dataclass
class TrainPrompt:
    messages: list
    ids: list[int]
    source: str


def _prompt_split(cfg: Config, tokenizer) -> tuple[list[TrainPrompt], list[TrainPrompt]]:
    """Training prompts and the held-out ones (the set's tail, or `eval.path`); prompts too long for
    max_length are counted and left out."""
    kept = _fitting(load_prompts(cfg.prompts, cfg.prompt_field, cfg.max_prompts), tokenizer, cfg, cfg.prompts)
    if cfg.eval.path:
        train = kept
        held_out = []
        if cfg.eval.prompts > 0:
            held_out = _fitting(load_prompts(cfg.eval.path, cfg.prompt_field), tokenizer, cfg, cfg.eval.path)
            held_out = held_out[: cfg.eval.prompts]
            # The identity the preference stages' split checks use, so "trained on" means the same everywhere.
            trained = {prompt_key(p.messages) for p in train}
            shared = [p for p in held_out if prompt_key(p.messages) in trained]
            if shared:
                raise AlignError(
                    f"eval.path={cfg.eval.path}: {len(shared)} of its {len(held_out)} held-out prompts are also training "
                    f"prompts in {cfg.prompts} (first: {shared[0].source}); held-out prompts must never be trained on: "
                    "remove them from one of the files"
                )
    else:
        held = min(cfg.eval.prompts, max(len(kept) - 1, 0))
        train, held_out = (kept[:-held], kept[-held:]) if held else (kept, [])
    if not train:
        raise AlignError(
            f"{cfg.prompts}: no prompt fits max_length={cfg.max_length} with max_new_tokens="
            f"{cfg.max_new_tokens}; raise max_length or lower max_new_tokens"
        )
    return train, held_out


def _fitting(prompts, tokenizer, cfg: Config, path: str) -> list[TrainPrompt]:
    ids = encode_prompts(tokenizer, [p.messages for p in prompts])
    budget = cfg.max_length - cfg.max_new_tokens
    kept = [TrainPrompt(p.messages, i, p.source) for p, i in zip(prompts, ids) if len(i) <= budget]
    if len(kept) < len(prompts):
        log.warning(
            "%s: %d of %d prompts are longer than max_length - max_new_tokens = %d tokens; left out",
            path,
            len(prompts) - len(kept),
            len(prompts),
            budget,
        )
    return kept
