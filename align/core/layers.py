"""Training only the top of the network (`trainable_layers: N`).

Backpropagation stops at the lowest parameter that needs a gradient. When only the last N transformer
blocks train (with LoRA: only they get adapters; without: every weight below them is frozen, input
embeddings included), the backward pass runs through N blocks instead of all of them. The forward
pass is unchanged, so a step costs at least a third of a full one. Measured on the embedded 135M model
(30 blocks), 2-core CPU, full fine-tuning of a reward model at `make demo-hh`'s settings: 359 tokens/s
training all blocks, 665 with the last 10 (1.85x), 813 with the last 6 (2.27x); peak RSS 7.1 -> 3.0 ->
2.4 GB (README "Training speed").

A tied output head (lm_head sharing the input embeddings, as in SmolLM2) stays frozen with the
embeddings: training it would need the embedding weight's gradient, which is cheap, but a trainable
embedding makes every block's input require a gradient and the backward pass would run to the bottom.
"""

from __future__ import annotations

from typing import Any

from align.core.errors import AlignError


def block_stack(model) -> tuple[str, int]:
    """(qualified name, length) of the model's stack of transformer blocks: its longest nn.ModuleList
    (model.layers for Llama/Qwen/Mistral, transformer.h for GPT-2)."""
    import torch

    best: tuple[str, int] | None = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and (best is None or len(module) > best[1]):
            best = (name, len(module))
    if best is None or best[1] < 2:
        raise AlignError(
            f"trainable_layers is set but {type(model).__name__} has no stack of transformer blocks "
            "align can find (a torch ModuleList); unset trainable_layers"
        )
    return best


def _check(model, n: int) -> tuple[str, int]:
    stack, count = block_stack(model)
    if not 1 <= n <= count:
        raise AlignError(
            f"trainable_layers={n} but the model has {count} transformer blocks ({stack}); "
            f"give 1 to {count}, or unset it to train all"
        )
    return stack, count


def _block_index(name: str, stack: str) -> int | None:
    """The block a parameter or module belongs to, or None when it is outside the stack."""
    prefix = stack + "."
    if not name.startswith(prefix):
        return None
    return int(name[len(prefix) :].split(".", 1)[0])


def lora_targets(model, n: int, target_modules: list[str]) -> list[str]:
    """Full names of the linear modules in the last `n` blocks (those named by `target_modules`, or every
    linear one for `all-linear`): peft adapts exactly these, so nothing below them needs a gradient."""
    import torch

    stack, count = _check(model, n)
    every = target_modules == ["all-linear"]
    names = []
    for name, module in model.named_modules():
        index = _block_index(name, stack)
        if index is None or index < count - n or not isinstance(module, torch.nn.Linear):
            continue
        if every or name.rsplit(".", 1)[-1] in target_modules:
            names.append(name)
    if not names:
        raise AlignError(
            f"lora.target_modules={target_modules} matches no linear module in the last {n} blocks "
            f"of {stack}; check the module names or unset trainable_layers"
        )
    return names


def freeze_below(model, n: int) -> dict[str, Any]:
    """Full fine-tuning of the last `n` blocks and what follows them (final norm, heads); everything
    below, and every embedding, frozen. Returns what was frozen, for the manifest."""
    import torch

    stack, count = _check(model, n)
    embedding_params = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    frozen = trained = 0
    for name, param in model.named_parameters():
        index = _block_index(name, stack)
        train = (index >= count - n) if index is not None else id(param) not in embedding_params
        param.requires_grad_(train)
        if train:
            trained += param.numel()
        else:
            frozen += param.numel()
    return {"blocks": f"last {n} of {count}", "frozen_parameters": frozen, "trained_parameters": trained}
