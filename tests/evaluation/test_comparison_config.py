"""`align evaluate policy` and `align evaluate retention` declare the settings they share (models,
engine, vLLM, dtype, intervals) once, in `ComparisonConfig`, and users still write the same flat keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from align.core.config import describe, load_config
from align.core.errors import AlignError
from align.evaluation.comparison import ComparisonConfig
from align.rollout import VllmSettings
from align.stages import evaluate_policy, evaluate_retention

REPO = Path(__file__).resolve().parents[2]
STAGES = {"policy": evaluate_policy.Config, "retention": evaluate_retention.Config}


@pytest.mark.parametrize("name", STAGES)
def test_the_shared_settings_are_declared_once(name):
    cls = STAGES[name]
    shared = {f.name for f in dataclasses.fields(ComparisonConfig)}
    assert issubclass(cls, ComparisonConfig)
    # Declared again in a stage, a shared key could drift apart (another default, another doc line).
    assert not shared & set(cls.__annotations__), sorted(shared & set(cls.__annotations__))
    assert {"engine", "vllm", "dtype", "batch_size", "bootstrap", "reward_max_length"} <= shared


def test_the_shipped_configs_load_with_dotted_overrides_of_shared_and_own_keys():
    retention = load_config(
        evaluate_retention.Config,
        REPO / "configs" / "evaluate" / "retention.yaml",
        [
            "drift_sampling.max_tokens=8",
            "vllm.enforce_eager=false",
            "engine=hf",
            "dtype=bfloat16",
            "batch_size=4",
            "bootstrap.resamples=50",
        ],
    )
    assert (
        retention.drift_sampling.max_tokens,
        retention.vllm.enforce_eager,
        retention.engine,
        retention.dtype,
        retention.batch_size,
        retention.bootstrap.resamples,
    ) == (8, False, "hf", "bfloat16", 4, 50)
    assert retention.ifeval.limit == 60 and retention.score_batch_size == 4  # the YAML's own keys, as written
    policy = load_config(
        evaluate_policy.Config,
        REPO / "configs" / "evaluate" / "policy.yaml",
        ["sampling.max_tokens=8", "vllm.enforce_eager=true"],
    )
    assert policy.sampling.max_tokens == 8 and policy.vllm.enforce_eager is True
    assert type(retention.vllm) is type(policy.vllm) is VllmSettings


@pytest.mark.parametrize("name", STAGES)
def test_unknown_and_bad_keys_are_still_errors(name):
    with pytest.raises(AlignError, match="enigne.*engine"):
        load_config(STAGES[name], None, ["enigne=hf"])
    with pytest.raises(AlignError, match="batch_size"):
        load_config(STAGES[name], None, ["batch_size=0"])
    # `align evaluate ... --help` documents the shared keys too.
    assert any(line.startswith("vllm.enforce_eager") for line in describe(STAGES[name]))
