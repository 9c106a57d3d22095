"""The `hf` rollout engine: transformers' batched `generate`.

Prompts are sorted by length and left-padded in batches of `batch_size` sequences (prompts x n), so
padding costs little (on a CPU padded tokens cost as much as real ones). Sampling uses an explicit
`GenerationConfig` built from `SamplingSettings` only: the checkpoint's generation_config.json (e.g.
a `repetition_penalty` or `no_repeat_ngram_size` the config never set) and transformers' own
defaults (top_k=50) are not applied, so what the manifest records is what ran. Only the checkpoint's
eos ids are read from it, to know where a reply ends.
The global torch RNG is seeded once per call and batches are formed deterministically, so the same
seed and settings give the same outputs.
"""

from __future__ import annotations

import contextlib
import logging

from tqdm.auto import tqdm

from align.core import device
from align.models import ModelSource, load_policy
from align.rollout import Completion, SamplingSettings, cut_at_stop

log = logging.getLogger(__name__)


class HFEngine:
    name = "hf"

    def __init__(
        self,
        source: ModelSource,
        tokenizer,
        dtype: str = "auto",
        batch_size: int = 64,
        trust_remote_code: bool = False,
        model=None,
        attn_implementation: str = "auto",
    ):
        """Loads the policy from `source` onto this process's device (align.core.device), or uses `model`
        where it is when given (an in-memory policy being trained or evaluated, e.g. by the DPO stage)."""
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        if model is None:
            model = load_policy(source, dtype, trust_remote_code, attn_implementation=attn_implementation, place=True)
        self.model = model.eval()
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids = sorted({*eos, tokenizer.eos_token_id} - {None})

    def generate(self, prompt_ids: list[list[int]], sampling: SamplingSettings) -> list[list[Completion]]:
        import torch

        config = self._generation_config(sampling)
        pad = self.tokenizer.pad_token_id
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        per_batch = max(1, self.batch_size // sampling.n)
        results: list[list[Completion]] = [[] for _ in prompt_ids]
        where = device.model_device(self.model)
        torch.manual_seed(sampling.seed)  # seeds the CUDA generators too
        with torch.inference_mode(), _without_checkpoint_defaults(self.model):
            for start in tqdm(range(0, len(order), per_batch), desc="generating (hf)", unit="batch", leave=False):
                idx = order[start : start + per_batch]
                width = max(len(prompt_ids[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):  # left padding: every prompt ends where generation starts
                    input_ids[row, width - len(prompt_ids[i]) :] = torch.tensor(prompt_ids[i])
                    mask[row, width - len(prompt_ids[i]) :] = 1
                out = self.model.generate(
                    input_ids=input_ids.to(where),
                    attention_mask=mask.to(where),
                    generation_config=config,
                    tokenizer=self.tokenizer if sampling.stop else None,
                )
                new = out[:, width:].tolist()
                # num_return_sequences keeps each prompt's n samples together, in order.
                for row, i in enumerate(idx):
                    for k in range(sampling.n):
                        results[i].append(self._completion(new[row * sampling.n + k], sampling))
        return results

    def _generation_config(self, sampling: SamplingSettings):
        from transformers import GenerationConfig

        kwargs = dict(
            max_new_tokens=sampling.max_tokens,
            num_return_sequences=sampling.n,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=sampling.stop or None,
        )
        # top_k=0 is "off": None would let transformers apply its default of 50.
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        else:
            kwargs.update(do_sample=False, top_k=0, top_p=1.0, temperature=1.0)
        return GenerationConfig(**kwargs)

    def _completion(self, ids: list[int], sampling: SamplingSettings) -> Completion:
        ended = next((j for j, t in enumerate(ids) if t in self.eos_ids), None)
        kept = ids if ended is None else ids[: ended + 1]
        text = self.tokenizer.decode(kept[:-1] if ended is not None else kept, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, sampling.stop)
        finish = "stop" if ended is not None or stopped else "length"
        return Completion(text=text, tokens=len(kept), finish_reason=finish)

    def close(self) -> None:
        self.model = None


@contextlib.contextmanager
def _without_checkpoint_defaults(model):
    """transformers 5 fills every field our GenerationConfig leaves unset from
    `model.generation_config` (the checkpoint's generation_config.json): swap in an empty one for the
    call. Under peft the transformers model is the one `generate` reads it from."""
    from transformers import GenerationConfig

    targets = {id(m): m for m in (model, getattr(model, "get_base_model", lambda: model)())}.values()
    saved = [(m, m.generation_config) for m in targets if getattr(m, "generation_config", None) is not None]
    try:
        for m, _ in saved:
            m.generation_config = GenerationConfig()
        yield
    finally:
        for m, config in saved:
            m.generation_config = config
