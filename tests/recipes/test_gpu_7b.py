"""recipes/gpu_7b: every config dry-runs offline and prints its memory estimate; the estimator's numbers
by hand; the accelerate configs parse with accelerate's own loader.

The 7B weights cannot be downloaded here, and a dry run must not need them: its input check resolves a
hub id to the config and tokenizer files only (align.models.without_weights) and reads and counts the
data with the model's tokenizer (examples over max_length are counted). So the hub cache the test builds
holds Qwen2.5-7B-Instruct's published config.json and, standing in for Qwen's tokenizer (not downloadable
here), the embedded SmolLM2 tokenizer: token counts differ from Qwen's. No weights file is in it. Without
a cached snapshot the dry run still prints the estimate, then exits 2 (tested below).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from align import memory

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "gpu_7b"
HUB_ID = "Qwen/Qwen2.5-7B-Instruct"
COMMIT = "a09a35458c702b33eeacc393d103063234e8bc28"
QWEN_CONFIG = {  # Qwen2.5-7B-Instruct's config.json, the fields that size the model
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "torch_dtype": "bfloat16",
}
STAGE_OF = {"sft": "sft", "reward": "reward", "dpo": "dpo", "generate": "generate"}


def recipe_configs() -> list[Path]:
    """The stage configs (loop.yaml is the loop's; tested below)."""
    return sorted(p for p in RECIPE.glob("*.yaml") if p.name != "loop.yaml")


def stage_of(path: Path) -> str:
    return STAGE_OF[path.stem.split("_")[0]]


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A Hugging Face hub cache holding Qwen2.5-7B-Instruct's config.json and a tokenizer, no weights."""
    from transformers import AutoTokenizer

    from align.model_cache import embedded_model_dir

    cache = tmp_path_factory.mktemp("hub")
    repo = cache / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (snapshot / "config.json").write_text(json.dumps(QWEN_CONFIG))
    AutoTokenizer.from_pretrained(embedded_model_dir()).save_pretrained(snapshot)
    # No *.safetensors: a dry run resolves the model without its weights.
    return cache


def dry_runs(configs: list[Path], cache: Path) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of `align <stage> --config C --dry-run` for each config, offline, in one process."""
    script = (
        "import contextlib, io, json, sys\n"
        "from align.cli import main\n"
        "results = []\n"
        "for stage, path in json.loads(sys.argv[1]):\n"
        "    out, err = io.StringIO(), io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        "        code = main([*stage.split(), '--config', path, '--dry-run'])\n"
        "    results.append([code, out.getvalue(), err.getvalue()])\n"
        "print(json.dumps(results))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "ALIGN_LOG_LEVEL": "WARNING"}
    env.pop("WORLD_SIZE", None)
    args = json.dumps([[stage_of(c), str(c)] for c in configs])
    done = subprocess.run(
        [sys.executable, "-c", script, args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [tuple(r) for r in json.loads(done.stdout.strip().splitlines()[-1])]


def memory_block(stdout: str) -> dict:
    start = stdout.index("# memory per GPU")
    end = stdout.find("\n# inputs", start)
    return yaml.safe_load(stdout[start : end if end > 0 else None])["memory_estimate"]


def test_every_config_opens_with_its_command():
    assert len(recipe_configs()) >= 7
    for path in [*recipe_configs(), RECIPE / "loop.yaml"]:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and f"--config recipes/gpu_7b/{path.name}" in first, path


@pytest.mark.slow
def test_every_config_dry_runs_offline_and_prints_memory(hub_cache):
    configs = recipe_configs()
    for path, (code, out, err) in zip(configs, dry_runs(configs, hub_cache)):
        assert code == 0, f"{path.name}: {err[-800:]}"
        block = memory_block(out)
        assert block["model"] == HUB_ID
        assert "config.json in the Hugging Face cache" in block["shape_from"], path.name
        # a reward model has a one-output score head instead of the 152k-word vocabulary head
        assert block["parameters"] == ("7.07B" if stage_of(path) == "reward" else "7.62B")
        assert "inputs:" in out  # the data were read and counted
        if stage_of(path) == "generate":
            assert block["kv_cache_tokens"] > 100_000
            continue
        assert 5 < block["total_per_gpu_gb"] < 80, path.name
        assert block["fits_80gb_h100"] is True
        cfg = yaml.safe_load(path.read_text())
        if cfg.get("quantization") == "4bit":
            assert block["total_per_gpu_gb"] < 24, f"{path.name}: the QLoRA variants are for 24 GB GPUs"
            assert "if_sharded_over_8_gpus_gb" not in block  # one quantized copy per process: nothing to shard
        if cfg["lora"]["enabled"] is False:  # full fine-tuning: fits only sharded
            assert block["if_sharded_over_8_gpus_gb"] < block["total_per_gpu_gb"]


@pytest.mark.slow
def test_dry_run_without_the_model_cached_still_prints_the_estimate(tmp_path):
    """No snapshot anywhere: the estimate comes from the table of known architectures, then reading the
    inputs fails (exit 2, one line naming the model): the input check needs the model's tokenizer."""
    code, out, err = dry_runs([RECIPE / "sft_qlora.yaml"], tmp_path)[0]
    assert code == 2
    block = memory_block(out)
    assert "table of known architectures" in block["shape_from"]
    assert block["trainable"] == "80.7M (LoRA r32, QLoRA 4bit base)"
    error = err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("align: error: model 'Qwen/Qwen2.5-7B-Instruct'"), err


def test_unknown_model_is_unknown_not_an_error():
    from align.stages.sft import Config

    report = memory.dry_run_report("sft", Config(model="some-org/not-a-known-model"), {})
    assert "memory_estimate: unknown" in report


def test_loop_config_builds_every_stage_it_runs():
    """The 7B brand-voice loop: its sections build the stage configs the loop would (no unknown keys), with
    the 7B stage settings underneath (the loop's own tests run loops; this one checks the recipe)."""
    from align.core.config import load_config
    from align.loop.config import LoopConfig, stage_config
    from align.loop.preflight import preflight

    cfg = load_config(LoopConfig, str(RECIPE / "loop.yaml"))
    preflight(cfg)  # the loop's own check before round 0: every stage config and input it can read up front
    assert cfg.policy == HUB_ID and cfg.train.stages == ["dpo"]
    sft = stage_config("sft", cfg.sft, {"model": cfg.policy})
    assert (sft.lora.r, sft.dtype, sft.training["gradient_checkpointing"]) == (32, "auto", True)
    assert Path(ROOT / sft.data.train).is_file()
    generate = stage_config("generate", cfg.generate, {"policy": cfg.policy})
    assert generate.engine == "vllm" and generate.sampling.n == 4
    dpo = stage_config("dpo", cfg.dpo, {"model": cfg.policy, "data.train": "labels.jsonl"})
    assert dpo.training["learning_rate"] == 5e-5 and dpo.reward_eval.prompts == 0
    evaluate = stage_config("evaluate", cfg.evaluate, {"policy": cfg.policy})
    assert evaluate.dtype == "auto"
    for path in (cfg.gates, cfg.simulate["annotators"], cfg.simulate["rubric"], *(k.prompts for k in cfg.mix.kinds)):
        assert (ROOT / path).is_file(), path


# -- the estimator by hand ------------------------------------------------------------------------


def qwen() -> memory.Architecture:
    return memory.Architecture.from_config(QWEN_CONFIG, "test")


def test_parameter_count_by_hand():
    arch = qwen()
    h, kv, i, v, layers = 3584, 4 * 128, 18944, 152064, 28
    attention = h * h + h * kv + h * kv + h * h + (h + kv + kv)  # q, k, v, o weights; q/k/v biases
    mlp = 3 * h * i
    block = attention + mlp + 2 * h  # two RMSNorms
    total = v * h + layers * block + h + v * h  # embeddings, blocks, final norm, untied head
    assert total == 7_615_616_512 == arch.params("lm")
    assert arch.params("score") == total - v * h + h  # a reward model: one-output score head, no vocab head
    # LoRA r16 on all 7 linear layers: r x (in + out) each.
    per_block = 16 * ((h + h) + (h + kv) * 2 + (h + h) + (h + i) * 2 + (i + h))
    assert arch.lora_params(16, ["all-linear"]) == layers * per_block == 40_370_176
    assert arch.lora_params(16, ["q_proj", "v_proj"]) == layers * 16 * ((h + h) + (h + kv))


def test_lora_bf16_sft_estimate_by_hand():
    """7.6B params bf16 LoRA r16, 2 x 2048 tokens, gradient checkpointing, one GPU."""
    est = memory.estimate(
        "sft",
        qwen(),
        dtype="bfloat16",
        quantization="none",
        lora_enabled=True,
        lora_r=16,
        lora_targets=["all-linear"],
        max_length=2048,
        batch_size=2,
        accumulation=8,
        gradient_checkpointing=True,
    )
    gb = {k: v / 1e9 for k, v in est.parts.items()}
    assert gb["weights"] == pytest.approx(15.231, abs=1e-3)  # 7,615,616,512 x 2 bytes
    assert gb["trainable"] == pytest.approx(0.646, abs=1e-3)  # 40,370,176 x 16 bytes (fp32 weight, grad, 2 Adam)
    tokens = 2 * 2048
    kept = 28 * 3584  # each block's input, kept for recomputation
    working = 8 * 3584 + 3 * 512 + 4 * 18944 + (6 * 3584 + 18944)  # one block recomputed, LoRA dropout copies
    assert gb["activations"] == pytest.approx(tokens * (kept + working) * 2 / 1e9) == pytest.approx(2.022, abs=1e-3)
    assert gb["logits"] == pytest.approx(tokens * 152064 * 10 / 1e9) == pytest.approx(6.229, abs=1e-3)
    assert gb["reference"] == 0
    assert gb["overhead"] == pytest.approx(0.8 + 0.1 * (15.231 + 0.646 + 2.022 + 6.229), abs=1e-2)
    assert est.total / 1e9 == pytest.approx(27.34, abs=0.01)
    # LoRA with checkpointing: forward 2N + backward 2N + recompute 2N FLOPs per token, 16 x 2048 tokens/step.
    assert est.step_seconds == pytest.approx(16 * 2048 * 6 * 7_615_616_512 / (989e12 * 0.35), rel=1e-9)


def test_qlora_and_sharding():
    arch = qwen()
    common = dict(
        dtype="bfloat16",
        lora_r=16,
        lora_targets=["all-linear"],
        max_length=1024,
        batch_size=1,
        accumulation=1,
        gradient_checkpointing=True,
    )
    qlora = memory.estimate("dpo", arch, quantization="4bit", lora_enabled=True, **common)
    # NF4 blocks at ~0.516 byte/param; embeddings, head and norms cast to fp32 by prepare_model_for_kbit_training.
    expected = arch.block_linear_params * (0.5 + 0.127 / 8) + (arch.params() - arch.block_linear_params) * 4
    assert qlora.parts["weights"] == pytest.approx(expected)
    assert 7.5e9 < qlora.parts["weights"] < 8e9
    assert (
        memory.estimate("dpo", arch, quantization="4bit", lora_enabled=True, gpus=8, sharded=True, **common).parts[
            "weights"
        ]
        == qlora.parts["weights"]
    )  # quantized copies are not sharded
    full = memory.estimate("dpo", arch, quantization="none", lora_enabled=False, separate_reference=True, **common)
    sharded = memory.estimate(
        "dpo", arch, quantization="none", lora_enabled=False, separate_reference=True, gpus=8, sharded=True, **common
    )
    assert full.parts["trainable"] == pytest.approx(arch.params() * 2 * 3)  # bf16 gradient + two AdamW states
    assert full.parts["reference"] == full.parts["weights"]
    for part in ("weights", "reference", "trainable"):
        assert sharded.parts[part] == pytest.approx(full.parts[part] / 8)
    assert sharded.parts["activations"] == full.parts["activations"]


def test_kv_cache_per_token():
    # keys and values x 28 layers x 4 KV heads x 128 dims x 2 bytes
    assert memory.kv_cache_bytes_per_token(qwen()) == 2 * 28 * 4 * 128 * 2 == 57_344


# -- accelerate configs ---------------------------------------------------------------------------

ACCELERATE = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_configs_parse_with_accelerate(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(path))  # unknown top-level keys raise here
    assert path.read_text().startswith("# accelerate launch --config_file configs/accelerate/" + path.name)
    raw = yaml.safe_load(path.read_text())
    launch_options = {action.dest for action in launch_command_parser()._actions}
    nested = {**(raw.get("fsdp_config") or {}), **(raw.get("deepspeed_config") or {})}
    assert set(nested) <= launch_options, f"keys accelerate launch does not know: {set(nested) - launch_options}"
    if raw.get("fsdp_config"):
        assert raw["fsdp_config"]["fsdp_version"] == 2
    if config.num_machines > 1:
        assert config.main_process_port and config.main_process_ip and config.rdzv_backend == "c10d"
        assert config.num_processes % config.num_machines == 0


def test_slurm_script_launches_each_node_with_its_rank():
    script = (RECIPE / "slurm.sbatch").read_text()
    assert subprocess.run(["bash", "-n", str(RECIPE / "slurm.sbatch")]).returncode == 0
    assert '--machine_rank "$SLURM_NODEID"' in script and "configs/accelerate/multi_node.yaml" in script
    assert (ROOT / "configs" / "accelerate" / "multi_node.yaml").exists()
