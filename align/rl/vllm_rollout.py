"""PPO's rollouts through a vLLM engine that runs for the whole training run.

The engine is started once (`align.rollout.vllm_engine.VllmEngine` with `trained_lora_rank`) on the
policy's starting weights. Before each rollout the adapter as it is *now* reaches the engine:

- `serve` (vllm.lora on a GPU): the adapter is saved to a scratch directory and served with a new
  LoRARequest id (vLLM caches adapters by id, so a reused id would keep sampling from old weights);
- `merge` (vllm.lora on a CPU, where vLLM's LoRA kernels were ~5x slower than plain weights): the
  adapter's update is added to the base weights out of place (the policy's own weights are never
  touched, so the reference, the adapter disabled, stays exact) and vLLM reloads them in place.

The engine returns the sampled token ids; they are used as they are, never re-tokenised. The sampling
seed of each step is drawn from torch's RNG, which PPO checkpoints save, so a resumed run samples what
an uninterrupted one would have.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from align.rollout import SamplingSettings


class VllmPolicySampler:
    """Samples responses from a peft policy's current weights with a running `VllmEngine`."""

    def __init__(self, engine):
        if engine.policy_update not in ("serve", "merge"):
            raise ValueError("the engine was not started for a trained policy (VllmEngine(..., trained_lora_rank=r))")
        self.engine = engine
        self._scratch = Path(tempfile.mkdtemp(prefix="align-ppo-adapter-"))
        self._syncs = 0

    def sample(
        self, policy, prompt_ids: list[list[int]], max_new_tokens: int, temperature: float, top_p: float, eos_id: int
    ) -> list[list[int]]:
        """One response per prompt (token ids, ending with `eos_id` when it was sampled); temperature 0 is greedy."""
        self.sync(policy)
        seed = int(torch.randint(0, 2**31 - len(prompt_ids), ()))
        sampling = SamplingSettings(
            n=1, temperature=temperature, top_p=top_p, top_k=0, max_tokens=max_new_tokens, seed=seed
        )
        return [samples[0] for samples in self.engine.sample_token_ids(prompt_ids, sampling, stop_token_id=eos_id)]

    def sync(self, policy) -> None:
        """Bring the engine to the policy's current adapter weights."""
        self._syncs += 1
        if self.engine.policy_update == "serve":
            target = self._scratch / f"adapter-{self._syncs}"
            policy.save_pretrained(str(target))
            self.engine.serve_adapter(target)
            # vLLM has read every earlier adapter already (it loads one when a request first names it).
            for old in self._scratch.iterdir():
                if old != target:
                    shutil.rmtree(old, ignore_errors=True)
        else:
            self.engine.reload_weights(merged_weights(policy))

    def close(self) -> None:
        self.engine.close()
        shutil.rmtree(self._scratch, ignore_errors=True)


def merged_weights(policy) -> list[tuple[str, torch.Tensor]]:
    """Every weight of the peft policy's base model under its Hugging Face name, with the active LoRA
    adapter's update added to the layers it wraps. Out of place: the policy is left as it was (peft's
    merge_adapter/unmerge_adapter would add and subtract in place, drifting the base by rounding)."""
    from peft.tuners.lora import LoraLayer

    adapter = policy.active_adapter
    model = policy.get_base_model()
    with torch.no_grad():
        deltas = {
            name: module.get_delta_weight(adapter)
            for name, module in model.named_modules()
            if isinstance(module, LoraLayer) and adapter in module.lora_A
        }
        weights = []
        for name, tensor in model.state_dict().items():
            if ".lora_" in name:
                continue
            module, _, leaf = name.rpartition(".")
            if module.endswith(".base_layer"):
                module = module[: -len(".base_layer")]
                if leaf == "weight" and module in deltas:
                    tensor = tensor + deltas[module].to(tensor.dtype)
            weights.append((f"{module}.{leaf}", tensor))
    return weights
