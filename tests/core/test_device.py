"""align.core.device: the resolver (dtype, attention, device), `notes.device` in every stage's manifest,
and a placement spy: with the resolver pointing at a stand-in accelerator, every model align runs itself
must be moved there and every batch it feeds them must be too.

The stand-in: `process_device()` returns `meta`. `Module.to(meta)` records the module and leaves its
weights where they are (so the run still computes on this CPU), and `device.model_device` reports `meta`
for it. `Tensor.to(meta)` returns the tensor as an `OnDevice` subclass, which everything computed from it
stays (as CUDA tensors do). An `OnDevice` tensor meeting a plain one of more than 0 dimensions in align's
own code raises, as a CUDA tensor meeting a CPU one would; a placed model called with an `input_ids` or
`attention_mask` that is not `OnDevice` raises too. Indexing with host indices is allowed, as on CUDA.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from align.core import device, runs
from align.core.config import load_config
from align.core.errors import AlignError
from tests.conftest import write_jsonl

SPY = torch.device("meta")
# Real torch lets host index tensors (and copies) meet device tensors; CUDA rejects other mixes.
_MIXING_ALLOWED = {"__getitem__", "__setitem__", "copy_", "index_put_", "__repr__", "__format__"}


def _caller_module() -> str:
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("torch"):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


class OnDevice(torch.Tensor):
    """A CPU tensor standing for one on the spied accelerator."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name not in _MIXING_ALLOWED and _caller_module().startswith("align."):
            tensors = [t for t in _flatten((args, kwargs)) if isinstance(t, torch.Tensor)]
            on_host = [t for t in tensors if not isinstance(t, OnDevice) and t.dim() > 0]
            if on_host and len(on_host) < len(tensors):
                raise RuntimeError(
                    f"placement spy: {name} mixes accelerator and host tensors "
                    f"(host shapes {[tuple(t.shape) for t in on_host]}) in {_caller_module()}"
                )
        return super().__torch_function__(func, types, args, kwargs)


def _flatten(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flatten(v)
    else:
        yield value


def _target(args, kwargs):
    for value in (*args, kwargs.get("device")):
        if isinstance(value, (str, torch.device)):
            try:
                return torch.device(value)
            except RuntimeError:
                continue
    return None


class PlacementSpy:
    def __init__(self, monkeypatch):
        self.placed: dict[int, torch.nn.Module] = {}
        self.calls: list[str] = []
        real_module_to, real_tensor_to, real_cpu = torch.nn.Module.to, torch.Tensor.to, torch.Tensor.cpu
        real_model_device = device.model_device
        spy = self

        def module_to(module, *args, **kwargs):
            if _target(args, kwargs) == SPY:
                spy.place(module)
                return module
            return real_module_to(module, *args, **kwargs)

        def tensor_to(tensor, *args, **kwargs):
            target = _target(args, kwargs)
            if target == SPY:
                rest = [a for a in args if not isinstance(a, (str, torch.device))]
                kwargs.pop("device", None)
                moved = real_tensor_to(tensor, *rest, **kwargs) if rest or kwargs else tensor
                return moved.as_subclass(OnDevice)
            if target is not None and target.type == "cpu" and isinstance(tensor, OnDevice):
                return real_tensor_to(tensor.as_subclass(torch.Tensor), *args, **kwargs)
            return real_tensor_to(tensor, *args, **kwargs)

        def tensor_cpu(tensor, *args, **kwargs):
            plain = tensor.as_subclass(torch.Tensor) if isinstance(tensor, OnDevice) else tensor
            return real_cpu(plain, *args, **kwargs)

        def model_device(model):
            return SPY if any(id(m) in spy.placed for m in model.modules()) else real_model_device(model)

        monkeypatch.setattr(device, "process_device", lambda: SPY)
        monkeypatch.setattr(device, "model_device", model_device)
        monkeypatch.setattr(torch.nn.Module, "to", module_to)
        monkeypatch.setattr(torch.Tensor, "to", tensor_to)
        monkeypatch.setattr(torch.Tensor, "cpu", tensor_cpu)

    def place(self, module) -> None:
        if id(module) in self.placed:
            return
        self.placed[id(module)] = module
        name = type(module).__name__
        targets = [module]
        backbone = getattr(module, getattr(module, "base_model_prefix", ""), None)
        if isinstance(backbone, torch.nn.Module):
            targets.append(backbone)  # PPO's value head reads the backbone directly

        def check(mod, args, kwargs):
            self.calls.append(name)
            batch = {
                "input_ids": kwargs.get("input_ids", args[0] if args else None),
                "attention_mask": kwargs.get("attention_mask"),
            }
            for key, value in batch.items():
                if isinstance(value, torch.Tensor) and not isinstance(value, OnDevice):
                    raise RuntimeError(f"placement spy: {type(mod).__name__} got its {key} on the host")

        for target in targets:
            target.register_forward_pre_hook(check, with_kwargs=True)

    def placed_types(self) -> list[str]:
        return sorted(type(m).__name__ for m in self.placed.values())


# -- the resolver ----------------------------------------------------------------------------------


def test_auto_dtype_is_float32_on_this_cpu_and_bf16_on_a_bf16_gpu(monkeypatch):
    assert device.process_device().type == "cpu"
    assert device.resolve_dtype("auto") == "float32"
    assert device.resolve_dtype("bfloat16") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.resolve_dtype("auto", torch.device("cuda", 0)) == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert device.resolve_dtype("auto", torch.device("cuda", 0)) == "float32"  # no fp16 without a loss scaler
    with pytest.raises(AlignError, match="'dtype' must be auto"):
        device.resolve_dtype("fp8")


def test_attention_auto_is_sdpa_without_flash_attn_and_an_explicit_choice_is_kept_or_refused(monkeypatch):
    assert device.resolve_attn_implementation("auto") == "sdpa"
    assert device.resolve_attn_implementation("eager") == "eager"
    with pytest.raises(AlignError) as refused:
        device.resolve_attn_implementation("flash_attention_2")
    assert "\n" not in str(refused.value) and "flash_attn package" in str(refused.value)
    # Installed and on CUDA with bf16 weights: auto takes it; with float32 weights it stays on sdpa.
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else real_find_spec(name, *a)
    )
    cuda = torch.device("cuda", 0)
    assert device.resolve_attn_implementation("auto", "bfloat16", cuda) == "flash_attention_2"
    assert device.resolve_attn_implementation("auto", "float32", cuda) == "sdpa"
    with pytest.raises(AlignError, match="CUDA GPUs only"):
        device.resolve_attn_implementation("flash_attention_2", "bfloat16", torch.device("cpu"))


def test_bf16_training_follows_the_resolved_dtype(monkeypatch):
    from trl import RewardConfig

    from align.core.training import training_arguments

    assert training_arguments(RewardConfig, {}, {}, dtype="auto").bf16 is False
    monkeypatch.setattr(device, "resolve_dtype", lambda name, target=None: "bfloat16")
    assert device.bf16_training("auto") is True


def test_loading_passes_the_resolved_dtype_and_attention(tiny_model):
    from align.models import load_policy, resolve_model

    model = load_policy(resolve_model(str(tiny_model)))
    assert model.dtype == torch.float32 and model.config._attn_implementation == "sdpa"
    eager = load_policy(resolve_model(str(tiny_model)), attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    assert device.describe(eager) == {
        "type": "cpu",
        "name": "cpu",
        "dtype": "float32",
        "attn_implementation": "eager",
        "world_size": 1,
    }


# -- placement -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reward_dir(tiny_model, tmp_path_factory) -> Path:
    """An `align reward` run on the tiny model, one step (what ppo, score and the evaluations accept)."""
    from align.stages import reward

    tmp = tmp_path_factory.mktemp("tiny-rm")
    pairs = write_jsonl(
        tmp / "pairs.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": f"Help me with task {i}"}],
                "chosen": [{"role": "assistant", "content": "Of course, happy to help!"}],
                "rejected": [{"role": "assistant", "content": "No."}],
            }
            for i in range(8)
        ],
    )
    run = reward.run(
        load_config(
            reward.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={pairs}",
                f"runs_dir={tmp / 'runs'}",
                "max_length=64",
                "training.max_steps=1",
                "training.per_device_train_batch_size=2",
                "lora.r=4",
            ],
        )
    )
    return Path(run["path"])


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    return write_jsonl(
        tmp_path_factory.mktemp("prompts") / "prompts.jsonl", [{"prompt": f"Tell me about topic {i}"} for i in range(6)]
    )


@pytest.mark.slow
def test_ppo_places_policy_value_reference_and_reward_model_and_every_batch(
    monkeypatch, tiny_model, reward_dir, prompts, tmp_path
):
    from align.stages import ppo

    spy = PlacementSpy(monkeypatch)
    manifest = ppo.run(
        load_config(
            ppo.Config,
            None,
            [
                f"model={tiny_model}",
                f"reward_model={reward_dir}",
                f"prompts={prompts}",
                f"runs_dir={tmp_path}",
                "max_length=96",
                "steps=1",
                "batch_size=4",
                "num_generations=2",
                "max_new_tokens=4",
                "eval.prompts=2",
                "eval.max_new_tokens=3",
                "ppo.ppo_epochs=1",
                "ppo.minibatch_size=2",
                "lora.r=4",
                "rollout=hf",
            ],
        )
    )
    # Policy (and the reference: its adapter off) and value model (and the reward model: its adapter off),
    # then the reward model the held-out comparison loads.
    assert spy.placed_types() == [
        "LlamaForCausalLM",
        "LlamaForSequenceClassification",
        "LlamaForSequenceClassification",
    ]
    assert {"LlamaForCausalLM", "LlamaForSequenceClassification"} <= set(spy.calls)
    assert manifest["notes"]["device"]["type"] == "meta"


@pytest.mark.slow
def test_generate_score_and_evaluations_place_their_models_and_batches(
    monkeypatch, tiny_model, reward_dir, prompts, tmp_path
):
    from align.stages import evaluate, evaluate_policy, evaluate_retention, generate, score

    spy = PlacementSpy(monkeypatch)
    gen = generate.run(
        load_config(
            generate.Config,
            None,
            [
                f"policy={tiny_model}",
                f"prompts={prompts}",
                f"runs_dir={tmp_path}",
                "engine=hf",
                "sampling.n=2",
                "sampling.max_tokens=4",
            ],
        )
    )
    assert spy.placed_types() == ["LlamaForCausalLM"] and spy.calls  # the hf engine
    scored = score.run(
        load_config(
            score.Config, None, [f"generations={gen['path']}", f"reward_model={reward_dir}", f"runs_dir={tmp_path}"]
        )
    )
    assert spy.placed_types().count("LlamaForSequenceClassification") == 1  # the reward scorer

    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": f"Q{i}"}],
                "chosen": [{"role": "assistant", "content": "Yes, gladly."}],
                "rejected": [{"role": "assistant", "content": "No."}],
            }
            for i in range(4)
        ],
    )
    rm_eval = evaluate.run(
        load_config(
            evaluate.Config,
            None,
            [f"reward_model={reward_dir}", f"data.path={pairs}", f"runs_dir={tmp_path}", "bootstrap.resamples=50"],
        )
    )
    assert spy.placed_types().count("LlamaForSequenceClassification") == 2

    before = len(spy.placed)
    policy_eval = evaluate_policy.run(
        load_config(
            evaluate_policy.Config,
            None,
            [
                f"policy={tiny_model}",
                f"reward_model={reward_dir}",
                f"harmful.paths=[{prompts}]",
                f"runs_dir={tmp_path}",
                "engine=hf",
                "sampling.max_tokens=3",
                "bootstrap.resamples=50",
            ],
        )
    )
    assert len(spy.placed) == before + 2  # the policy's engine and evaluate policy's scorer

    drift = write_jsonl(tmp_path / "drift.jsonl", [{"prompt": "How do plants grow?"}, {"prompt": "Name a river."}])
    before = len(spy.placed)
    retention = evaluate_retention.run(
        load_config(
            evaluate_retention.Config,
            None,
            [
                f"policy={tiny_model}",
                "ifeval.path=",
                f"drift.paths=[{drift}]",
                f"runs_dir={tmp_path}",
                "engine=hf",
                "drift_sampling.max_tokens=3",
                "bootstrap.resamples=50",
            ],
        )
    )
    assert len(spy.placed) == before + 2  # the engine, then drift's policy model (its own baseline here)

    for manifest in (gen, scored, rm_eval, policy_eval, retention):
        assert runs.read_manifest(manifest["path"])["notes"]["device"]["type"] == "meta", manifest["stage"]


def test_adapter_merges_run_on_the_device(monkeypatch, tiny_model, tmp_path):
    """The merged-policy cache (vLLM's plain weights) merges on the device and still writes safetensors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from align.models import ModelSource
    from align.rollout.merged import merged_policy_dir

    adapter = tmp_path / "adapter"
    peft = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    peft.save_pretrained(adapter)
    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path / "cache"))
    spy = PlacementSpy(monkeypatch)
    merged, cached = merged_policy_dir(ModelSource(str(adapter), Path(tiny_model), [adapter], {}))
    assert not cached and any(merged.glob("*.safetensors"))
    assert spy.placed_types() == ["LlamaForCausalLM"]


def test_the_spy_catches_a_batch_left_on_the_host(monkeypatch, tiny_model, reward_dir):
    """The spy is not vacuous: align's scorer with its `.to(device)` removed fails under it."""
    from align import scoring
    from align.models import load_reward_model, load_tokenizer, resolve_model

    spy = PlacementSpy(monkeypatch)
    source = resolve_model(str(reward_dir))
    tokenizer = load_tokenizer(source)
    model = load_reward_model(source, place=True)
    conversations = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    assert len(scoring.reward_scores(model, tokenizer, conversations)) == 1
    monkeypatch.setattr(device, "model_device", lambda m: torch.device("cpu"))  # as if align forgot to look
    with pytest.raises(RuntimeError, match="placement spy"):
        scoring.reward_scores(model, tokenizer, conversations)
    assert spy.placed_types() == ["LlamaForSequenceClassification"]


# -- notes.device in every manifest ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "reward", "dpo"])
def test_training_stages_record_the_device(stage, tiny_model, easy_pairs, tmp_path):
    from importlib import import_module

    module = import_module(f"align.stages.{stage}")
    fmt = ["data.format=preference-chosen"] if stage == "sft" else []
    manifest = module.run(
        load_config(
            module.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={easy_pairs}",
                f"runs_dir={tmp_path}",
                "max_length=64",
                "training.max_steps=1",
                "training.per_device_train_batch_size=2",
                "lora.r=4",
                *fmt,
            ]
            + (["reward_eval.prompts=0"] if stage == "dpo" else []),
        )
    )
    notes = runs.read_manifest(manifest["path"])["notes"]["device"]
    assert notes == {"type": "cpu", "name": "cpu", "dtype": "float32", "attn_implementation": "sdpa", "world_size": 1}
    assert manifest["config"]["dtype"] == "auto" and manifest["config"]["attn_implementation"] == "auto"


@pytest.mark.slow
def test_ppo_refuses_a_multi_process_launch_before_any_run_directory(tiny_model, reward_dir, prompts, tmp_path):
    """Two processes (accelerate launch, gloo on this CPU): the launch fails with the one-line reason, nothing written.

    Each rank refuses on its own, but torchrun stops the other ranks as soon as the first exits, so
    the second rank's message may never be printed (CI saw it killed with 130): at least one is.
    """
    import os
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    launched = tmp_path / "launched"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        "-m",
        "align",
        "ppo",
        f"model={tiny_model}",
        f"reward_model={reward_dir}",
        f"prompts={prompts}",
        f"runs_dir={launched}",
        "max_length=96",
        "steps=1",
        "batch_size=2",
        "max_new_tokens=4",
        "ppo.minibatch_size=2",
    ]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.count("align: error: algorithm=ppo runs in a single process") >= 1, result.stderr[-2000:]
    assert "exitcode  : 2" in result.stderr  # the first rank to stop stopped on our error, not a crash
    assert not launched.exists()
