"""Pair losses with p_chosen and ties (align/core/preference_losses.py): the formulas on numbers worked
out by hand, and the reward/DPO trainer subclasses against TRL's stock loss on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from align.core import preference_losses as pl
from align.data.preferences import PreferenceDataConfig


def losses(d, p=None, tie=None, **kw):
    t = lambda v: None if v is None else torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return pl.pair_losses(t(d), t(p), t(tie), **kw).tolist()


def test_bradley_terry_soft_target_and_weight_by_hand():
    d = math.log(3)  # sigmoid(d) = 3/4, sigmoid(-d) = 1/4
    assert losses([d]) == pytest.approx([-math.log(0.75)])  # 0.287682
    # p = 0.8: -(0.8 ln 3/4 + 0.2 ln 1/4) = 0.230146 + 0.277259
    assert losses([d], [0.8], weighting="label_smoothing") == pytest.approx([0.507405], abs=1e-6)
    # weight 2p - 1 = 0.6 on the hard loss
    assert losses([d], [0.8], weighting="weight") == pytest.approx([0.6 * 0.287682], abs=1e-6)
    # p = 1 is the plain loss; p = 0.5 weighs nothing
    assert losses([d, -d], [1.0, 1.0], weighting="label_smoothing") == pytest.approx(losses([d, -d]))
    assert losses([d], [0.5], weighting="weight") == [0.0]
    # p = 0.2 < 0.5: the pair counts the other way round, weight 0.6, on -log sigmoid(-d) = ln 4
    assert losses([d], [0.2], weighting="weight") == pytest.approx([0.6 * math.log(4)])


def test_soft_target_is_minimised_at_the_margin_whose_probability_is_p():
    # d/dd of -[p log s(d) + (1-p) log s(-d)] = s(d) - p: zero at d = logit(p) = ln 4 for p = 0.8.
    d = torch.tensor([math.log(4.0)], dtype=torch.float64, requires_grad=True)
    pl.pair_losses(d, torch.tensor([0.8], dtype=torch.float64), weighting="label_smoothing").sum().backward()
    assert d.grad.item() == pytest.approx(0.0, abs=1e-12)


def test_davidson_by_hand():
    # nu = 1, d = 2 ln 2 so e^{d/2} = 2: P(win) = 2 / (2 + 1/2 + 1) = 4/7, P(tie) = 1/3.5 = 2/7, P(loss) = 1/7.
    d = 2 * math.log(2)
    win, tie, loss = losses([d, d, -d], tie=[0, 1, 0], ties="davidson", strength=1.0)
    assert (win, tie, loss) == pytest.approx([-math.log(4 / 7), -math.log(2 / 7), -math.log(1 / 7)])
    assert math.exp(-win) + math.exp(-tie) + math.exp(-loss) == pytest.approx(1.0)
    # At d = 0 the default nu = 1 gives a tie 1/3; nu -> 0 is Bradley-Terry.
    assert losses([0.0], tie=[1], ties="davidson") == pytest.approx([math.log(3)])
    assert losses([d], ties="davidson", strength=1e-12) == pytest.approx(losses([d]), abs=1e-9)


def test_rao_kupper_by_hand():
    # nu = 2, d = ln 2 (strengths 2 and 1): P(win) = 2 / (2 + 2*1) = 1/2, P(loss) = 1 / (1 + 2*2) = 1/5,
    # P(tie) = (4 - 1) * 2 / ((2 + 2)(1 + 4)) = 3/10.
    d = math.log(2)
    win, tie, loss = losses([d, d, -d], tie=[0, 1, 0], ties="rao_kupper", strength=2.0)
    assert (win, tie, loss) == pytest.approx([math.log(2), -math.log(0.3), math.log(5)])
    assert losses([0.0], tie=[1], ties="rao_kupper") == pytest.approx([math.log(3)])  # default nu = 2: 1/3 at d = 0


def test_tie_loss_pulls_the_margin_to_zero_and_soft_ties_combine():
    for model in ("davidson", "rao_kupper"):
        d = torch.tensor([1.5, -1.5], dtype=torch.float64, requires_grad=True)
        pl.pair_losses(d, tie=torch.tensor([1.0, 1.0]), ties=model).sum().backward()
        assert d.grad[0] > 0 > d.grad[1], model  # gradient descent moves both margins towards 0
    # label smoothing under a tie model: the expected loss over who won
    d = math.log(2)
    mixed = losses([d], [0.7], [0], weighting="label_smoothing", ties="rao_kupper", strength=2.0)
    assert mixed == pytest.approx([0.7 * math.log(2) + 0.3 * math.log(5)])


# -- the trainers on a tiny model ------------------------------------------------------------------

ROWS = [
    {
        "prompt": [{"role": "user", "content": "Name a colour."}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "I cannot say, sorry."}],
    },
    {
        "prompt": [{"role": "user", "content": "What is two plus two?"}],
        "chosen": [{"role": "assistant", "content": "Four."}],
        "rejected": [{"role": "assistant", "content": "Five, I think."}],
    },
    {
        "prompt": [{"role": "user", "content": "Say hello."}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Hi."}],
    },
]


def build(stage, tiny_model, tmp_path, rows, data: PreferenceDataConfig | None):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    from align.core.training import training_arguments
    from align.models import ModelSource, load_policy, load_reward_model, load_tokenizer

    source = ModelSource(str(tiny_model), tiny_model, [], {})
    tokenizer = load_tokenizer(source)
    common = {
        "output_dir": str(tmp_path / "scratch"),
        "per_device_train_batch_size": len(rows),
        "max_length": 64,
        "seed": 0,
        "gradient_checkpointing": False,
        "remove_unused_columns": False,
    }
    trainer_rows = pl.with_label_columns(
        [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows], rows, data
    )
    torch.manual_seed(0)
    if stage == "reward":
        cls = RewardTrainer if data is None else pl.reward_trainer_class(RewardTrainer, data)
        return cls(
            model=load_reward_model(source, pad_token_id=tokenizer.pad_token_id),
            args=training_arguments(RewardConfig, {}, common),
            train_dataset=Dataset.from_list(trainer_rows),
            processing_class=tokenizer,
        )
    cls = DPOTrainer if data is None else pl.dpo_trainer_class(DPOTrainer, data)
    policy = load_policy(source)
    # The policy moved away from the reference (the same way for every trainer built), so the margins are not 0.
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=noise))
    return cls(
        model=policy,
        ref_model=load_policy(source),
        args=training_arguments(DPOConfig, {"beta": 0.5}, common),
        train_dataset=Dataset.from_list(trainer_rows),
        processing_class=tokenizer,
    )


def batch_loss(trainer):
    """The loss of one batch holding every pair."""
    trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    loss = trainer.compute_loss(trainer.model, batch)
    return loss


def stock_margins(stage, trainer):
    """Each pair's margin d, read from a stock TRL trainer one pair at a time."""
    margins = []
    for i in range(len(trainer.train_dataset)):
        batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i]]))
        if stage == "reward":
            with torch.no_grad():
                rewards = trainer.model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits.squeeze(-1)
            margins.append((rewards[0] - rewards[1]).item())
        else:
            trainer.compute_loss(trainer.model, batch)
            margins.append(trainer._metrics["train"]["rewards/margins"][-1])
    return margins


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["reward", "dpo"])
def test_p_one_reproduces_trl_and_soft_labels_and_ties_follow_the_formulas(stage, tiny_model, tmp_path):
    stock = build(stage, tiny_model, tmp_path, ROWS, None)
    stock_loss = batch_loss(stock)
    certain = [{**r, "p_chosen": 1.0} for r in ROWS]
    for weighting in ("label_smoothing", "weight"):
        ours = build(stage, tiny_model, tmp_path, certain, PreferenceDataConfig(weighting=weighting))
        assert torch.allclose(batch_loss(ours), stock_loss, rtol=0, atol=1e-6), weighting
    if stage == "dpo":  # the rewards/* metrics TRL logs are kept
        assert ours._metrics["train"]["rewards/accuracies"] and ours._metrics["train"]["rewards/margins"]

    margins = torch.tensor(stock_margins(stage, stock), dtype=torch.float64)
    assert margins.abs().max() > 1e-4  # a random model: the margins are not all zero, so p matters
    rows = [{**ROWS[0], "p_chosen": 0.8}, {**ROWS[1], "p_chosen": 0.6}, {**ROWS[2], "tie": True}]
    data = PreferenceDataConfig(weighting="label_smoothing", ties="davidson", tie_strength=1.0)
    ours = build(stage, tiny_model, tmp_path, rows, data)
    # Davidson, nu = 1: P(win) = e^{d/2} / (e^{d/2} + e^{-d/2} + 1), P(tie) = 1 / (e^{d/2} + e^{-d/2} + 1)
    z = lambda m: math.exp(m / 2) + math.exp(-m / 2) + 1  # noqa: E731
    m0, m1, m2 = margins.tolist()
    expected = [
        -(0.8 * math.log(math.exp(m0 / 2) / z(m0)) + 0.2 * math.log(math.exp(-m0 / 2) / z(m0))),
        -(0.6 * math.log(math.exp(m1 / 2) / z(m1)) + 0.4 * math.log(math.exp(-m1 / 2) / z(m1))),
        math.log(z(m2)),
    ]
    assert batch_loss(ours).item() == pytest.approx(sum(expected) / 3, abs=1e-5)
