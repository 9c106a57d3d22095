"""The commands that write a run: one module per command, each a typed `Config` and `run(config) -> manifest`.

They are of four kinds (`KINDS`, which also groups `align --help`):

- training, a model out of data: `sft`, `reward`, `reward_ensemble` (`align reward-ensemble`), `dpo`, `kto`,
  `ppo` (PPO, RLOO, GRPO);
- evaluation, metrics of a model with intervals: `evaluate` (`align evaluate reward`), `evaluate_policy`,
  `evaluate_retention`;
- data tools, a dataset out of data or a model: `generate` (replies to prompts), `score` (reward-model scores
  on them), `pairs` (candidate pairs for annotators), `redact` (personal data removed);
- serving and feedback: `serve` (a policy behind an OpenAI-compatible server that logs conversations and
  ratings), `feedback` (`align feedback import`: users' feedback into training data).

They stay in one package rather than `align/training/`, `align/evaluation/`, ... because what they share is
the contract, not the kind: each is one command in the CLI's registry (`align.cli.COMMANDS`, command ->
module), reads its inputs by path, and writes one run directory with a manifest that the next command of
any kind reads (generate -> score -> pairs -> annotate -> dpo -> evaluate policy). A stage never imports
another stage (tests/core/test_layers.py); what two kinds share lives below them, in `align.rollout`,
`align.evaluation`, `align.data`, `align.scoring` and `align.core`, which is where the kinds' own machinery
is (engines, judges, metrics), so the stage modules stay thin commands and the layout of the machinery
already shows the kinds. A new stage module is added to `KINDS`; the test above checks every one is.
"""

from __future__ import annotations

KINDS: dict[str, tuple[str, ...]] = {
    "training": ("sft", "reward", "reward_ensemble", "dpo", "kto", "ppo"),
    "evaluation": ("evaluate", "evaluate_policy", "evaluate_retention"),
    "data tools": ("generate", "score", "pairs", "redact"),
    "serving and feedback": ("serve", "feedback"),
}
"""Stage module name -> its kind, in the order `align --help` lists them."""


def kind_of(module: str) -> str | None:
    """The kind of stage module `module` (`align.stages.dpo` or `dpo`), or None when KINDS does not name it."""
    name = module.rpartition(".")[2]
    return next((kind for kind, names in KINDS.items() if name in names), None)
