"""The settings every evaluation of a policy against a baseline shares (`align evaluate policy`,
`align evaluate retention`): which models, how they generate, how intervals are drawn.

A base class rather than a nested section, so the YAML keys stay flat (`engine:`, `vllm:`,
`bootstrap:` at the top of either stage's config) and are documented once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from align.core import runs
from align.core.errors import AlignError
from align.core.training import ModelLoading
from align.evaluation.bootstrap import BootstrapSettings
from align.rollout import EngineName, VllmSettings


@dataclass
class ComparisonConfig(runs.RunOutput, ModelLoading):
    """A policy compared with a baseline, each generating replies to the same prompts."""

    policy: str = ""
    """The policy to evaluate: a training run directory, a Hugging Face directory or `embedded`."""
    baseline: str | None = None
    """What the policy is compared with; unset = the policy's base (the model its first adapter sits on)."""
    reward_model: str | None = None
    """A reward run: adds each reply's reward and the policy's win rate. Unset = no reward-model metrics."""
    engine: EngineName = "auto"
    """auto (vLLM when it imports, else hf) | vllm | hf."""
    batch_size: int = 32
    """hf engine: prompts per generate call."""
    vllm: VllmSettings = field(default_factory=VllmSettings)
    """vLLM engine settings."""
    reward_max_length: int = 512
    """Token budget when scoring with the reward model; longer conversations keep their last tokens."""
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    """Interval settings."""

    def __post_init__(self):
        if self.batch_size < 1:
            raise AlignError(f"'batch_size' must be >= 1, got {self.batch_size}")
