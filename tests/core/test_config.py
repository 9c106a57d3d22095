"""Typed configs: strict keys with suggestions, dotted overrides, type checks, every shipped YAML loads."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from align.cli import COMMANDS
from align.core.config import describe, dump_yaml, load_config, parse_override
from align.core.errors import AlignError
from align.stages import dpo, reward, sft

ROOT = Path(__file__).resolve().parents[2]


def test_unknown_key_names_key_and_nearest(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: embedded\nlearning_rat: 0.1\n")
    with pytest.raises(AlignError, match=r"unknown config key 'learning_rat'"):
        load_config(sft.Config, cfg)
    with pytest.raises(AlignError, match=r"'lora.rr'.*did you mean 'r'"):
        load_config(sft.Config, None, ["lora.rr=8"])


def test_unknown_training_argument_is_an_error_with_suggestion():
    cfg = load_config(dpo.Config, None, ["training.learning_rat=1e-4", "data.train=x"])
    with pytest.raises(AlignError, match=r"training.learning_rat.*did you mean 'learning_rate'"):
        dpo.run(cfg)


def test_dotted_overrides_win_over_yaml_and_parse_as_yaml_scalars(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("beta: 0.1\nlora:\n  r: 16\n")
    cfg = load_config(
        dpo.Config, cfg_file, ["beta=0.25", "lora.r=4", "lora.enabled=false", "loss_type=ipo", "training.max_steps=3"]
    )
    assert cfg.beta == 0.25 and cfg.lora.r == 4 and cfg.lora.enabled is False
    assert cfg.loss_type == ["ipo"]  # a single string where a list is expected
    assert cfg.training == {"max_steps": 3}


@pytest.mark.parametrize(
    "override, message",
    [
        ("beta=abc", r"'beta' must be a number"),
        ("lora.r=2.5", r"'lora.r' must be an integer"),
        ("lora.enabled=yes please", r"'lora.enabled' must be true or false"),
        ("dtype=float64", r"'dtype' must be one of auto, float32, bfloat16, float16"),
        ("loss_type=sigmod", r"unknown loss_type 'sigmod'.*did you mean 'sigmoid'"),
        ("data.test_fraction=1.5", r"test_fraction"),
        ("lora=3", r"'lora' must be a mapping"),
    ],
)
def test_type_errors_name_the_key(override, message):
    with pytest.raises(AlignError, match=message):
        load_config(dpo.Config, None, [override])


def test_int_is_accepted_for_float_and_bad_override_syntax_rejected():
    assert load_config(dpo.Config, None, ["beta=1"]).beta == 1.0
    with pytest.raises(AlignError, match="is not key=value"):
        parse_override("beta")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: embedded\nlora:\n  r: [1, 2\n")
    with pytest.raises(AlignError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(sft.Config, bad)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(reward.Config, None, ["data.train=pairs.jsonl", "margin=agreement"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(reward.Config, path) == cfg


def test_every_field_is_documented():
    for name, cmd in COMMANDS.items():
        try:
            module = importlib.import_module(cmd.module)
        except ModuleNotFoundError:
            continue  # a stage another issue has not landed yet
        for line in describe(module.Config):
            assert not line.rstrip().endswith("):"), f"`align {name}`: undocumented field: {line}"


def _config_class_for(path: Path):
    """configs/<stage>/x.yaml and recipes/<recipe>/<stage>.yaml -> the stage's Config class."""
    if path.name == "loop.yaml" or path.name.endswith("_loop.yaml"):  # a recipe's loop: `align loop --config`
        from align.loop.config import LoopConfig

        return LoopConfig
    stage = path.parent.name if path.parts[-3] == "configs" else path.stem
    # recipes/gpu_7b/dpo_lora.yaml opens with `# align dpo --config ...` (or `accelerate launch ... -m align sft`)
    words = path.read_text().splitlines()[0].lstrip("# ").split()
    for i, word in enumerate(words[:-1] if path.parts[-3] != "configs" else []):
        if word == "align" and words[i + 1] in COMMANDS:
            stage = words[i + 1]
            break
    group = f"{stage} {path.stem}"  # configs/annotate/pull.yaml -> `annotate pull`
    if group in COMMANDS:
        try:
            return importlib.import_module(COMMANDS[group].module).Config
        except ModuleNotFoundError:
            return None
    for name, cmd in COMMANDS.items():
        module = cmd.module.rsplit(".", 1)[-1]
        if stage in (name.replace(" ", "_"), name.split()[-1], module, name.split()[0]):
            try:
                return importlib.import_module(cmd.module).Config
            except ModuleNotFoundError:
                return None
    return None


SHIPPED = sorted(
    p
    for p in list((ROOT / "configs").rglob("*.yaml")) + list((ROOT / "recipes").rglob("*.yaml"))
    # Brand-voice rubrics are data, not stage configs: tests/evaluation/test_brand_voice.py loads them.
    # Gate lists are read by the loop, not a stage: tests/loop/test_gates.py (and, for retention_gates.yaml,
    # tests/evaluation/test_evaluate_retention.py) load them; simulated annotator
    # lists by `align annotate simulate`: tests/loop/test_recipes.py loads them.
    if "accelerate" not in p.parts
    and p.name not in ("rubric.yaml", "annotators.yaml")
    and not p.name.endswith("gates.yaml")
)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_yaml_loads(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and ("align " in first or "make " in first or "python " in first), (
        f"{path} should open with the command that runs it"
    )
    cls = _config_class_for(path)
    assert cls is not None, f"no stage config class found for {path}"
    load_config(cls, path)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_are_valid(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in ("NO", "MULTI_GPU", "FSDP", "DEEPSPEED")  # NO: one GPU
    assert path.read_text().startswith("# accelerate launch --config_file")


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    # YAML 1.1 would read `1e-4` as a string and TRL would fail deep inside the optimizer.
    f = tmp_path / "c.yaml"
    f.write_text("training:\n  learning_rate: 1e-4\n")
    cfg = load_config(sft.Config, f)
    assert cfg.training["learning_rate"] == 1e-4
    assert load_config(dpo.Config, None, ["beta=2e-1"]).beta == 0.2


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_yaml_survives_its_run_directory(path, tmp_path):
    """The config.yaml a run writes re-loads to the same resolved config (nothing scrubbed or lost)."""
    from align.core import runs
    from align.core.config import to_dict

    cls = _config_class_for(path)
    cfg = load_config(cls, path)
    with runs.new_run("check", to_dict(cfg), tmp_path, "r") as run:
        manifest = runs.finish(run)
    assert load_config(cls, tmp_path / "r" / runs.CONFIG) == cfg
    assert manifest["config"] == to_dict(cfg)


@pytest.mark.slow
def test_a_real_run_reruns_from_its_own_config_yaml(tmp_path, tiny_model):
    """`align generate --config RUN/config.yaml` repeats the run: same settings, same outputs."""
    from align.cli import main
    from align.core import runs
    from tests.conftest import write_jsonl

    prompts = write_jsonl(tmp_path / "prompts.jsonl", ["Name a colour.", "Say hello."])
    assert (
        main(
            [
                "generate",
                f"prompts={prompts}",
                f"policy={tiny_model}",
                "engine=hf",
                "sampling.n=2",
                "sampling.max_tokens=5",
                "sampling.seed=7",
                f"runs_dir={tmp_path}",
                "name=first",
            ]
        )
        == 0
    )
    first = runs.read_manifest(tmp_path / "first")
    assert main(["generate", "--config", str(tmp_path / "first" / runs.CONFIG), "name=again"]) == 0
    again = runs.read_manifest(tmp_path / "again")
    assert {**again["config"], "name": "first"} == first["config"]
    assert first["config"]["sampling"]["max_tokens"] == 5
    assert (tmp_path / "again" / "generations.jsonl").read_text() == (
        tmp_path / "first" / "generations.jsonl"
    ).read_text()
