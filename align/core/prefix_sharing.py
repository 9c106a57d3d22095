"""Prefix sharing for paired losses: the prompt of a preference pair goes through the model once.

TRL's RewardTrainer and DPOTrainer run every pair as two rows, [prompt, chosen] and
[prompt, rejected], so the prompt (in multi-turn data most of the tokens) is computed twice. Here
a pair is one row, [prompt, chosen, rejected], with a 4-D attention mask that keeps the two replies
from seeing each other and position ids that restart for the rejected reply, so every token sees
exactly the context and positions it has in its own row (Wang & Hegde 2024, "Accelerating Direct
Preference Optimization with Prefix Sharing"). Losses, rewards and gradients are those of the
unshared computation up to float rounding (tests/core/test_prefix_sharing.py).

How it plugs into TRL (no training loop of its own): the trainers' batches stay TRL's; only the
model's forward is wrapped. The wrapper receives TRL's two-rows-per-pair batch, runs the packed one,
and hands back outputs in TRL's layout, so TRL's losses, metrics and reference handling (LoRA:
adapter disabled; full: the reference model, also wrapped) run unchanged.
- Reward model: the score is read at the last non-pad token of each reply, as transformers'
  sequence classifier does; both replies' last tokens are in the one packed row.
- DPO: a reply's first token is predicted from the prompt's last position, and the two replies
  both need that prediction. So the prompt's last token is not shared: each reply's branch starts
  with its own copy of it (one extra token per pair), and TRL's fused LM head scores the packed row
  with pre-shifted labels (`shift_labels`).

`prefix_sharing: auto` (the default) packs a batch when that makes it fewer tokens (padding included) than the unshared batch;
the attention mask must be one the model's attention accepts as a 4-D tensor (sdpa, eager).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from align.core.errors import AlignError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# What a config says: true, false or auto (YAML reads `on`/`off` as true/false, so those work too).
PrefixSharing = Literal["auto"] | bool
Mode = Literal["auto", "on", "off"]
# Attention implementations that take an explicit additive 4-D mask (flash-attention kernels do not).
MASKABLE_ATTENTION = ("sdpa", "eager")

SHARED, CHOSEN, REJECTED, PAD = 0, 1, 2, -1


@dataclass
class PackedPairs:
    """A batch of B pairs packed as B rows [shared prefix, chosen branch, rejected branch].

    `index[r, t]` is where token t of standard row r (rows 0..B-1 chosen, B..2B-1 rejected, TRL's
    order) sits in packed row r % B; `valid[r, t]` says whether that token exists (not padding).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment: torch.Tensor
    index: torch.Tensor
    valid: torch.Tensor
    lengths: torch.Tensor
    """Tokens of each standard row (its attention mask's sum)."""

    @property
    def pairs(self) -> int:
        return self.input_ids.size(0)

    def attention_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """Additive (batch, 1, L, L) mask: 0 where a query may attend to a key, the dtype's minimum elsewhere.

        A token sees the earlier tokens of the shared prefix and of its own branch. A padding position
        sees only itself, so no softmax row is empty (an empty row gives NaN, and NaN reaches the
        gradients even where the output is ignored).
        """
        import torch

        seg = self.segment
        length = seg.size(1)
        causal = torch.ones(length, length, dtype=torch.bool, device=seg.device).tril()
        q, k = seg[:, :, None], seg[:, None, :]
        visible = causal & (k != PAD) & (q != PAD) & ((k == SHARED) | (k == q))
        visible |= torch.eye(length, dtype=torch.bool, device=seg.device)
        mask = torch.zeros(visible.shape, dtype=dtype, device=seg.device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        return mask[:, None]

    def gather(self, packed: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`packed[r % B, positions[r, ...]]` for each standard row r: values back in TRL's layout."""
        import torch

        rows = torch.arange(2 * self.pairs, device=packed.device) % self.pairs
        return packed[rows[:, None], positions]

    @property
    def tokens(self) -> int:
        """Positions the packed batch computes (padding included)."""
        return self.input_ids.numel()


def pack_pairs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, shared: torch.Tensor, pad_token_id: int
) -> PackedPairs:
    """Pack TRL's [chosen rows; rejected rows] batch (right-padded) into one row per pair.

    `shared[i]` tokens at the start of pair i go in once; they must be equal in both rows (the caller
    passes at most their common prefix).
    """
    import torch

    rows, width = input_ids.shape
    if rows % 2:
        raise ValueError(f"a paired batch has an even number of rows (chosen then rejected), got {rows}")
    pairs = rows // 2
    device = input_ids.device
    lengths = attention_mask.sum(dim=1).long()
    len_c, len_r = lengths[:pairs], lengths[pairs:]
    shared = torch.minimum(shared.long(), torch.minimum(len_c, len_r))
    packed_len = len_c + len_r - shared
    packed_width = int(packed_len.max())

    t = torch.arange(width, device=device)
    index = torch.where(
        t[None, :] < torch.cat([shared, shared])[:, None],
        t[None, :],
        t[None, :] + torch.cat([torch.zeros_like(len_c), len_c - shared])[:, None],
    )
    valid = t[None, :] < lengths[:, None]
    index = torch.where(valid, index, torch.zeros_like(index))

    out_ids = torch.full((pairs, packed_width), pad_token_id, dtype=input_ids.dtype, device=device)
    position_ids = torch.zeros((pairs, packed_width), dtype=torch.long, device=device)
    segment = torch.full((pairs, packed_width), PAD, dtype=torch.long, device=device)
    pair_of_row = torch.arange(rows, device=device) % pairs
    row_sel, col_sel = valid.nonzero(as_tuple=True)
    target = index[row_sel, col_sel]
    # Shared positions are written by both rows of a pair with the same values.
    out_ids[pair_of_row[row_sel], target] = input_ids[row_sel, col_sel]
    position_ids[pair_of_row[row_sel], target] = col_sel
    kind = torch.where(row_sel < pairs, CHOSEN, REJECTED)
    kind = torch.where(col_sel < shared[pair_of_row[row_sel]], SHARED, kind)
    segment[pair_of_row[row_sel], target] = kind
    return PackedPairs(out_ids, position_ids, segment, index, valid, lengths)


def common_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per pair, how many leading tokens the chosen and the rejected row have in common."""
    pairs = input_ids.size(0) // 2
    chosen, rejected = input_ids[:pairs], input_ids[pairs:]
    same = (chosen == rejected) & attention_mask[:pairs].bool() & attention_mask[pairs:].bool()
    # The first position where they differ (or the row's end): cumprod keeps 1 until the first 0.
    return same.long().cumprod(dim=1).sum(dim=1)


def worth_packing(packed: PackedPairs, input_ids: torch.Tensor) -> bool:
    """`auto`'s rule: pack when the packed batch has fewer positions than the unshared one."""
    return packed.tokens < input_ids.numel()


class PrefixSharer:
    """Wraps a model's forward for paired batches; see the module docstring."""

    def __init__(self, mode: Mode, pad_token_id: int):
        self.mode = mode
        self.pad_token_id = pad_token_id
        self.packed_batches = 0
        self.unpacked_batches = 0
        self.positions_saved = 0

    def plan(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, shared: torch.Tensor) -> PackedPairs | None:
        packed = pack_pairs(input_ids, attention_mask, shared, self.pad_token_id)
        if self.mode == "auto" and not worth_packing(packed, input_ids):
            self.unpacked_batches += 1
            return None
        self.packed_batches += 1
        self.positions_saved += input_ids.numel() - packed.tokens
        return packed

    def stats(self) -> dict[str, int | str]:
        return {
            "mode": self.mode,
            "packed_batches": self.packed_batches,
            "unpacked_batches": self.unpacked_batches,
            "positions_saved": self.positions_saved,
        }

    # -- reward model ----------------------------------------------------------------------------
    def wrap_reward_model(self, model) -> None:
        """Replace the forward of `model` (a transformers sequence classifier) while `self.active`."""
        import torch
        from transformers.modeling_outputs import SequenceClassifierOutputWithPast

        original = model.forward
        self.active = False
        sharer = self

        def forward(input_ids=None, attention_mask=None, *args, **kwargs):
            packed = None
            if sharer.active and not args and _paired_batch(input_ids, attention_mask):
                packed = sharer.plan(input_ids, attention_mask, common_prefix(input_ids, attention_mask))
            if packed is None:
                return original(input_ids, attention_mask, *args, **kwargs)
            backbone = getattr(model, model.base_model_prefix)
            dtype = model.get_input_embeddings().weight.dtype
            hidden = backbone(
                input_ids=packed.input_ids,
                attention_mask=packed.attention_mask(dtype),
                position_ids=packed.position_ids,
                use_cache=False,
            ).last_hidden_state
            last = _last_non_pad(input_ids, model.config.get_text_config().pad_token_id)
            rows = torch.arange(input_ids.size(0), device=input_ids.device)
            picked = packed.gather(hidden, packed.index[rows, last][:, None])[:, 0]
            return SequenceClassifierOutputWithPast(logits=model.score(picked))

        model.forward = forward

    @contextmanager
    def sharing(self):
        self.active = True
        try:
            yield
        finally:
            self.active = False

    # -- causal LM (DPO) -------------------------------------------------------------------------
    def wrap_causal_lm(self, model) -> None:
        """Wrap the forward TRL's `add_fused_lm_head` installed: `fused_lm_head=True` calls with labels are packed."""
        original = model.forward
        sharer = self

        def forward(*args, fused_lm_head=False, labels=None, **kwargs):
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            attention_mask = kwargs.get("attention_mask")
            packed = None
            # MoE router losses take the 2-D padding mask; those batches stay unpacked.
            if (
                fused_lm_head
                and labels is not None
                and len(args) <= 1
                and _paired_batch(input_ids, attention_mask)
                and not kwargs.get("output_router_logits")
            ):
                packed = sharer.plan(input_ids, attention_mask, _dpo_shared_length(input_ids, attention_mask, labels))
            if packed is None:
                return original(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
            kwargs = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask", "position_ids")}
            dtype = model.get_input_embeddings().weight.dtype
            outputs = original(
                input_ids=packed.input_ids,
                attention_mask=packed.attention_mask(dtype),
                position_ids=packed.position_ids,
                shift_labels=_packed_shift_labels(packed, labels),
                fused_lm_head=True,
                **kwargs,
            )
            return _unpack_token_outputs(outputs, packed, labels)

        model.forward = forward


def _paired_batch(input_ids, attention_mask) -> bool:
    # TRL's padded batches: token ids and a 2-D padding mask over an even number of rows. Anything else
    # (embeddings, padding-free batches, a 4-D mask) is left to the model's own forward.
    return (
        input_ids is not None
        and attention_mask is not None
        and attention_mask.dim() == 2
        and input_ids.dim() == 2
        and input_ids.size(0) % 2 == 0
    )


def _last_non_pad(input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    import torch

    # transformers' rule for sequence classifiers: the rightmost token that is not the pad token.
    if pad_token_id is None:
        raise AlignError("prefix sharing for a reward model needs the model's pad_token_id set")
    positions = torch.arange(input_ids.size(1), device=input_ids.device)
    return (positions * (input_ids != pad_token_id)).argmax(dim=1)


def _dpo_shared_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The prompt minus its last token (both replies are predicted from that last position), and never
    past where the two rows differ (truncation can make the prompts differ)."""
    import torch

    pairs = input_ids.size(0) // 2
    width = labels.size(1)
    scored = labels != -100
    first_scored = torch.where(
        scored.any(dim=1), scored.float().argmax(dim=1), torch.full_like(scored[:, 0], width, dtype=torch.long)
    )
    prompt = torch.minimum(first_scored[:pairs], first_scored[pairs:])
    return torch.clamp(torch.minimum(prompt - 1, common_prefix(input_ids, attention_mask)), min=0)


def _packed_shift_labels(packed: PackedPairs, labels: torch.Tensor) -> torch.Tensor:
    """Labels for the packed rows, pre-shifted: position q is scored on the next token of q's own row."""
    import torch

    rows, width = labels.shape
    shift = torch.full_like(packed.input_ids, -100)
    next_labels = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)
    has_next = packed.valid & (torch.arange(width, device=labels.device)[None, :] + 1 < packed.lengths[:, None])
    row_sel, col_sel = (has_next & (next_labels != -100)).nonzero(as_tuple=True)
    shift[row_sel % packed.pairs, packed.index[row_sel, col_sel]] = next_labels[row_sel, col_sel]
    return shift


def _unpack_token_outputs(outputs, packed: PackedPairs, labels: torch.Tensor):
    """TRL's fused-head per-token fields back to its (2B, T-1) layout; zero where there is no label, as TRL's are."""
    import torch

    width = labels.size(1) - 1
    positions = packed.index[:, :width]
    scored = labels[:, 1:] != -100
    for name in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask"):
        value = getattr(outputs, name, None)
        if value is None:
            continue
        unpacked = packed.gather(value, positions)
        outputs[name] = unpacked.masked_fill(~scored, 0) if unpacked.dtype != torch.bool else unpacked & scored
    return outputs


def check_attention(model, mode: Mode) -> Mode:
    """`on` with attention the packed mask cannot express is an error; `auto` turns sharing off.

    The mask must go to the attention as a 4-D tensor (sdpa, eager), and every layer must attend to
    the whole context: a sliding-window layer would need the window built into the packed mask.
    """
    if mode == "off":
        return mode
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    text_config = model.config.get_text_config()
    windowed = getattr(text_config, "sliding_window", None) and getattr(text_config, "use_sliding_window", True)
    if implementation in MASKABLE_ATTENTION and not windowed:
        return mode
    reason = (
        f"the model's attention is '{implementation}', which takes no 4-D mask ({', '.join(MASKABLE_ATTENTION)} do)"
        if implementation not in MASKABLE_ATTENTION
        else "the model has sliding-window attention layers"
    )
    if mode == "on":
        raise AlignError(f"prefix_sharing=true cannot be honoured: {reason}; set prefix_sharing=auto or false")
    log.info("prefix sharing off: %s", reason)
    return "off"


def reward_trainer_class(setting: PrefixSharing):
    """TRL's RewardTrainer, or a subclass whose loss runs each pair as one packed row."""
    from trl import RewardTrainer

    mode = normalize(setting)
    if mode == "off":
        return RewardTrainer

    class PrefixSharingRewardTrainer(RewardTrainer):
        """RewardTrainer with the prompt of each pair computed once (align.core.prefix_sharing)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            target = _unwrap_peft(self.model)
            self.prefix_sharer = PrefixSharer(check_attention(target, mode), self.processing_class.pad_token_id)
            if self.prefix_sharer.mode != "off":
                self.prefix_sharer.wrap_reward_model(target)

        def compute_loss(self, model, inputs, *args, **kwargs):
            if self.prefix_sharer.mode == "off":
                return super().compute_loss(model, inputs, *args, **kwargs)
            with self.prefix_sharer.sharing():
                return super().compute_loss(model, inputs, *args, **kwargs)

    return PrefixSharingRewardTrainer


def dpo_trainer_class(setting: PrefixSharing):
    """TRL's DPOTrainer, or a subclass whose policy and reference run each pair as one packed row."""
    from trl import DPOTrainer

    mode = normalize(setting)
    if mode == "off":
        return DPOTrainer

    class PrefixSharingDPOTrainer(DPOTrainer):
        """DPOTrainer with the prompt of each pair computed once (align.core.prefix_sharing).

        Reference log-probs precomputed by TRL at construction (`precompute_ref_log_probs`) are
        computed before the wrap, unshared.
        """

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            target = _unwrap_peft(self.model)
            self.prefix_sharer = PrefixSharer(check_attention(target, mode), self._tokenizer.pad_token_id)
            if self.prefix_sharer.mode != "off":
                self.prefix_sharer.wrap_causal_lm(target)
                if self.ref_model is not None:
                    self.prefix_sharer.wrap_causal_lm(self.accelerator.unwrap_model(self.ref_model))

    return PrefixSharingDPOTrainer


def _unwrap_peft(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def normalize(setting: PrefixSharing | str) -> Mode:
    """A config's value as auto, on or off."""
    if setting in ("auto", "on", "off"):
        return setting
    if isinstance(setting, bool):
        return "on" if setting else "off"
    raise AlignError(f"prefix_sharing must be true, false or auto; got {setting!r}")


def report(trainer, setting: PrefixSharing) -> dict[str, int | str]:
    """What the manifest records: the setting, the mode run and how many batches were packed (this process)."""
    sharer = getattr(trainer, "prefix_sharer", None)
    return {"requested": normalize(setting), **(sharer.stats() if sharer is not None else {"mode": "off"})}
