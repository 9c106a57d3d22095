"""Per-token KL and reply log-likelihoods on tiny models: zero against itself, positive against another
model, and the same numbers whether replies are scored alone or in padded batches."""

from __future__ import annotations

import pytest
import torch

from align.evaluation.drift import reply_ids, reply_logprob, token_kl
from tests.conftest import build_tiny_model

PROMPTS = [[1, 2, 3, 4], [5, 6], [7, 8, 9]]
REPLIES = [[10, 11, 12], [13, 14, 15, 16, 17], [18]]


@pytest.fixture(scope="module")
def two_models(tiny_model, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    other = build_tiny_model(tmp_path_factory.mktemp("tiny-other"), seed=1)
    return [AutoModelForCausalLM.from_pretrained(p).eval() for p in (tiny_model, other)]


def test_kl_of_a_model_against_itself_is_zero(two_models):
    model = two_models[0]
    kl = token_kl(model, model, PROMPTS, REPLIES, batch_size=2)
    assert [n for _, n in kl] == [3, 5, 1]
    assert all(total == pytest.approx(0.0, abs=1e-6) for total, _ in kl)


def test_kl_against_another_model_is_positive_and_matches_a_hand_computation(two_models):
    a, b = two_models
    kl = token_kl(a, b, PROMPTS, REPLIES, batch_size=2)
    assert all(total > 0 for total, _ in kl)
    # Prompt 1 alone, no padding: KL(a || b) summed over the positions that predict the reply's 5 tokens.
    seq = torch.tensor([PROMPTS[1] + REPLIES[1]])
    with torch.no_grad():
        la, lb = a(seq).logits[0, 1:6].log_softmax(-1), b(seq).logits[0, 1:6].log_softmax(-1)
    expected = float((la.exp() * (la - lb)).sum())
    assert kl[1][0] == pytest.approx(expected, rel=1e-4)


def test_reply_logprob_is_the_sum_of_token_log_probabilities(two_models):
    model = two_models[0]
    batched = reply_logprob(model, PROMPTS, REPLIES, batch_size=3)
    alone = [reply_logprob(model, [p], [r], batch_size=1)[0] for p, r in zip(PROMPTS, REPLIES)]
    assert [t for t, _ in batched] == pytest.approx([t for t, _ in alone], rel=1e-4)
    seq = torch.tensor([PROMPTS[0] + REPLIES[0]])
    with torch.no_grad():
        logp = model(seq).logits[0].log_softmax(-1)
    expected = sum(float(logp[3 + k, tok]) for k, tok in enumerate(REPLIES[0]))
    assert batched[0] == (pytest.approx(expected, rel=1e-4), 3)


def test_reply_ids_end_with_end_of_turn_only_when_the_reply_stopped(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ended, cut = (
        reply_ids(tok, "Hello there.", True, tok.eos_token_id),
        reply_ids(tok, "Hello there.", False, tok.eos_token_id),
    )
    assert ended[-1] == tok.eos_token_id and ended[:-1] == cut and tok.eos_token_id not in cut
