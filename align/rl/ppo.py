"""PPO with a value model for RLHF, on transformers + peft (TRL 1.16 no longer ships a PPO trainer).

The recipe is InstructGPT's (Ouyang et al. 2022) with the details of Huang et al. 2024, "The N+
implementation details of RLHF with PPO"; the math lives in `align.rl.ppo_losses`. One `step()`:

1. rollout: the policy (its LoRA adapter on) samples one response per prompt, with transformers'
   `model.generate` directly (not align's hf engine: PPO needs the token ids, and the engine returns
   text) or with a vLLM engine fed the adapter's current weights each step (`align.rl.vllm_rollout`);
   either way the sampled ids are used as they are, never re-tokenised for the policy;
2. log-probs of those tokens under the policy and under the reference (the same model with the
   adapter disabled), values per token, and the reward function's score per response;
3. KL-shaped per-token rewards, GAE, advantages whitened over the batch;
4. `ppo_epochs` passes over the batch in shuffled minibatches of clipped policy + value loss.

The value model starts as the reward model (a sequence classifier) with its own LoRA adapter: values
per token are the score head applied to every hidden state of the backbone. The reward model is that
same network with the value adapter disabled, so the weights are held once.

Where this departs from the paper and from Huang et al.:
- LoRA adapters on policy and value model rather than full fine-tuning (the reference is the base
  with the adapter disabled: one copy of the weights);
- one optimizer over both adapters with loss = policy loss + vf_coef * value loss (Huang et al.
  use separate networks and a shared optimizer too; the paper trains them apart);
- no pretraining-data mix (InstructGPT's PPO-ptx) and no adaptive KL controller: `kl_coef` is fixed;
- a response without EOS has `missing_eos_penalty` subtracted from its score (TRL's rule) instead
  of its score being replaced by a constant;
- models run in eval mode throughout (dropout off), so the log-prob ratio is 1 at the first
  minibatch, as Huang et al. recommend;
- logits are divided by the sampling temperature before log-probs are taken (Huang et al.).

Placement: policy, value model (and so the reference and the reward model, which are those two with
their adapters off) are wherever the caller put them (`align ppo` puts both on the process's device,
align.core.device); every rollout tensor is built on the policy's device, and every model call moves
its batch to that model's device, so nothing is copied per token and a CPU run is unchanged.

Timing per step: `generation` is the rollout (for vLLM including bringing the adapter's weights to
the engine), `scoring` the reward function, `training` the rest
(log-prob and value forwards plus the PPO epochs).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from align.core import device
from align.core.errors import AlignError
from align.rl.ppo_losses import (
    entropy_from_logits,
    gae,
    kl_shaped_rewards,
    masked_mean,
    penalise_missing_eos,
    policy_loss,
    token_logprobs,
    value_loss,
    whiten,
)

Messages = list[dict[str, str]]
# (prompts, response texts) -> one score per response.
RewardFunction = Callable[[list[Messages], list[str]], list[float]]


@dataclass
class PPOSettings:
    """PPO's own settings (`ppo:` in the config; used by `algorithm: ppo` only)."""

    ppo_epochs: int = 4
    """Passes over each batch of rollouts."""
    minibatch_size: int = 4
    """Responses per gradient step inside an epoch."""
    clip_range: float = 0.2
    """Policy ratio clip: the ratio is kept in [1 - clip_range, 1 + clip_range]."""
    clip_range_value: float = 0.2
    """Value clip: new values kept within this distance of the rollout's values."""
    gamma: float = 1.0
    """Discount over response tokens (1: the reward is not discounted, as in Huang et al.)."""
    lam: float = 0.95
    """GAE lambda."""
    vf_coef: float = 0.1
    """Weight of the value loss in the summed loss."""
    missing_eos_penalty: float = 1.0
    """Subtracted from the score of a response cut off before its end-of-turn token (0: off)."""
    whiten_advantages: bool = True
    """Normalise advantages over the batch (mean 0, std 1)."""
    max_grad_norm: float = 1.0
    """Gradient clipping on the adapters."""

    def __post_init__(self):
        for name in ("ppo_epochs", "minibatch_size"):
            if getattr(self, name) < 1:
                raise AlignError(f"'ppo.{name}' must be >= 1, got {getattr(self, name)}")
        for name in ("clip_range", "clip_range_value", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise AlignError(f"'ppo.{name}' must be > 0, got {getattr(self, name)}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise AlignError(f"'ppo.{name}' must be in [0, 1], got {getattr(self, name)}")
        if self.missing_eos_penalty < 0:
            raise AlignError(
                f"'ppo.missing_eos_penalty' must be >= 0 (it is subtracted), got {self.missing_eos_penalty}"
            )


@dataclass
class Rollout:
    """One batch of sampled responses with everything PPO needs from before the update."""

    input_ids: torch.Tensor  # [B, P + T] left-padded prompt, then the response
    attention_mask: torch.Tensor  # [B, P + T]
    mask: torch.Tensor  # [B, T] real response tokens (up to and including EOS)
    prompt_width: int
    logprobs: torch.Tensor  # [B, T] under the policy at sampling time
    values: torch.Tensor  # [B, T]
    advantages: torch.Tensor  # [B, T]
    returns: torch.Tensor  # [B, T]


class PPOTrainer:
    """PPO on a peft policy and a peft value model (a sequence classifier). See the module docstring."""

    def __init__(
        self,
        policy,
        value_model,
        tokenizer,
        reward_fn: RewardFunction,
        settings: PPOSettings,
        kl_coef: float,
        learning_rate: float,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        sampler=None,
    ):
        """`sampler`: a `align.rl.vllm_rollout.VllmPolicySampler` to sample the rollouts with; None: `generate`."""
        self.policy = policy.eval()
        self.value_model = value_model.eval()
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.settings = settings
        self.kl_coef = kl_coef
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id
        self.sampler = sampler
        self.device = device.model_device(policy)
        params = [p for m in (policy, value_model) for p in m.parameters() if p.requires_grad]
        if not params:
            raise AlignError("PPO found no trainable parameters on the policy or value model (LoRA adapters expected)")
        self.optimizer = torch.optim.AdamW(params, lr=learning_rate, eps=1e-5)
        self._params = params

    # -- one step ---------------------------------------------------------------------------------
    def step(self, prompts: list[Messages], prompt_ids: list[list[int]]) -> dict[str, float]:
        start = time.perf_counter()
        sequences, prompt_width = self._generate(prompt_ids)
        generated = time.perf_counter()

        response = sequences[:, prompt_width:]
        mask, ended = _response_mask(response, self.eos_id)
        texts = [
            self.tokenizer.decode(r[: int(m.sum())], skip_special_tokens=True).strip() for r, m in zip(response, mask)
        ]
        scores = torch.tensor(self.reward_fn(prompts, texts), dtype=torch.float32).to(self.device)
        scored = time.perf_counter()

        prompt_mask = (
            (torch.arange(prompt_width)[None, :] >= torch.tensor([prompt_width - len(p) for p in prompt_ids])[:, None])
            .long()
            .to(self.device)
        )
        attention_mask = torch.cat([prompt_mask, mask.long()], dim=1)
        with torch.no_grad():
            logits = self._response_logits(self.policy, sequences, attention_mask, prompt_width)
            logprobs = token_logprobs(logits, response)
            entropy = masked_mean(entropy_from_logits(logits), mask)
            del logits
            with self.policy.disable_adapter():
                ref_logprobs = token_logprobs(
                    self._response_logits(self.policy, sequences, attention_mask, prompt_width), response
                )
            values = self._values(sequences, attention_mask, prompt_width)
            penalised = penalise_missing_eos(scores, ended, self.settings.missing_eos_penalty)
            rewards, kl = kl_shaped_rewards(penalised, logprobs, ref_logprobs, mask, self.kl_coef)
            advantages, returns = gae(rewards, values, mask, self.settings.gamma, self.settings.lam)
            if self.settings.whiten_advantages:
                advantages = whiten(advantages, mask)
        rollout = Rollout(sequences, attention_mask, mask, prompt_width, logprobs, values, advantages, returns)
        losses = self._train(rollout)
        done = time.perf_counter()

        new_tokens = int(mask.sum())
        return {
            "reward": scores.mean().item(),
            "reward_with_kl": rewards.sum(dim=1).mean().item(),
            "kl": kl.sum(dim=1).mean().item(),
            "entropy": entropy.item(),
            "response_length": mask.sum(dim=1).float().mean().item(),
            "ended_with_eos": ended.float().mean().item(),
            **losses,
            "tokens_per_s": new_tokens / (done - start),
            "time_generation": generated - start,
            "time_scoring": scored - generated,
            "time_training": done - scored,
        }

    def _train(self, rollout: Rollout) -> dict[str, float]:
        s = self.settings
        totals: dict[str, list[float]] = {
            k: [] for k in ("policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "approx_kl")
        }
        batch = rollout.input_ids.shape[0]
        response = rollout.input_ids[:, rollout.prompt_width :]
        for _ in range(s.ppo_epochs):
            for idx in torch.randperm(batch).split(s.minibatch_size):
                mask = rollout.mask[idx]
                logits = self._response_logits(
                    self.policy, rollout.input_ids[idx], rollout.attention_mask[idx], rollout.prompt_width
                )
                new_logprobs = token_logprobs(logits, response[idx])
                new_values = self._values(rollout.input_ids[idx], rollout.attention_mask[idx], rollout.prompt_width)
                pg, clip_fraction, approx_kl = policy_loss(
                    new_logprobs, rollout.logprobs[idx], rollout.advantages[idx], mask, s.clip_range
                )
                vf, value_clip_fraction = value_loss(
                    new_values, rollout.values[idx], rollout.returns[idx], mask, s.clip_range_value
                )
                loss = pg + s.vf_coef * vf
                if not torch.isfinite(loss):
                    raise RuntimeError(f"PPO loss is not finite (policy {pg.item()}, value {vf.item()})")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self._params, s.max_grad_norm)
                self.optimizer.step()
                for key, value in (
                    ("policy_loss", pg),
                    ("value_loss", vf),
                    ("clip_fraction", clip_fraction),
                    ("value_clip_fraction", value_clip_fraction),
                    ("approx_kl", approx_kl),
                ):
                    totals[key].append(value.item())
        return {k: sum(v) / len(v) for k, v in totals.items()}

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue as if it had not stopped: both adapters, the
        optimizer and the torch RNG (sampling and minibatch order draw from it)."""
        from peft import get_peft_model_state_dict

        state = {
            "policy": get_peft_model_state_dict(self.policy),
            "value_model": get_peft_model_state_dict(self.value_model),
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":  # `generate` samples on the GPU with its own generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.policy, state["policy"])
        set_peft_model_state_dict(self.value_model, state["value_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    # -- model calls ------------------------------------------------------------------------------
    def _generate(self, prompt_ids: list[list[int]]) -> tuple[torch.Tensor, int]:
        """[B, width + max_new_tokens]: each prompt left-padded to `width`, then its response, padded on the
        right with pad (after an EOS, too) to the full budget, so shapes do not depend on when sampling stopped."""
        from transformers import GenerationConfig

        width = max(len(p) for p in prompt_ids)
        if self.sampler is not None:
            responses = self.sampler.sample(
                self.policy, prompt_ids, self.max_new_tokens, self.temperature, self.top_p, self.eos_id
            )
            out = torch.full((len(prompt_ids), width + self.max_new_tokens), self.pad_id, dtype=torch.long)
            for row, (ids, response) in enumerate(zip(prompt_ids, responses)):
                out[row, width - len(ids) : width] = torch.tensor(ids)
                out[row, width : width + len(response)] = torch.tensor(response, dtype=torch.long)
            return out.to(self.device), width
        input_ids = torch.full((len(prompt_ids), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompt_ids):  # left padding: generation starts at the same column
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=True,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=0,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
        )
        with torch.no_grad():
            out = self.policy.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), generation_config=config
            )
        missing = width + self.max_new_tokens - out.shape[1]
        if missing > 0:
            out = torch.cat([out, out.new_full((out.shape[0], missing), self.pad_id)], dim=1)
        return out, width

    def _response_logits(self, model, input_ids, attention_mask, prompt_width: int) -> torch.Tensor:
        """Logits predicting each response token, divided by the sampling temperature."""
        where = device.model_device(model)
        input_ids, attention_mask = input_ids.to(where), attention_mask.to(where)
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=_positions(attention_mask))
        return out.logits[:, prompt_width - 1 : -1].float() / self.temperature

    def _values(self, input_ids, attention_mask, prompt_width: int) -> torch.Tensor:
        """V(state before each response token): the score head on every hidden state of the backbone."""
        classifier = self.value_model.get_base_model()
        backbone = getattr(classifier, classifier.base_model_prefix)
        where = device.model_device(self.value_model)
        input_ids, attention_mask = input_ids.to(where), attention_mask.to(where)
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=_positions(attention_mask)
        ).last_hidden_state
        return classifier.score(hidden[:, prompt_width - 1 : -1]).squeeze(-1).float()


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    # Left padding: positions count real tokens only, as `generate` numbered them while sampling.
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def _response_mask(response: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of tokens up to and including the first EOS (pad is EOS here, so nothing after it counts),
    and whether each response reached an EOS at all."""
    is_eos = (response == eos_id).long()
    # No EOS strictly before a position: it is at or before the first one (built from `response`, so on its device).
    eos_before = is_eos.cumsum(dim=1) - is_eos
    return (eos_before == 0).float(), is_eos.bool().any(dim=1)


def reward_model_scorer(model, tokenizer, max_length: int, batch_size: int, adapter_off=None) -> RewardFunction:
    """A reward function from a sequence classifier, scoring prompt + reply with the reward stage's
    formatting (`align.scoring`). `adapter_off`: a context manager that turns the value adapter off
    when the classifier is also the value model."""
    from align.scoring import reward_scores

    def score(prompts: list[Messages], responses: list[str]) -> list[float]:
        conversations = [p + [{"role": "assistant", "content": r}] for p, r in zip(prompts, responses)]
        with adapter_off() if adapter_off else contextlib.nullcontext():
            values = reward_scores(model, tokenizer, conversations, batch_size, max_length, "scoring rollouts")
        model.eval()
        return values

    return score
