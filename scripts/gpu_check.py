"""The pipeline behind scripts/gpu_check.sh: sft -> reward -> dpo -> ppo -> generate -> evaluate policy on a
tiny random Llama, each stage through `python -m align <stage>`, checked from its manifest.

Run by gpu_check.sh (which sets up the interpreter and PYTHONPATH); by hand:
    python scripts/gpu_check.py --expect cuda --json artifacts/gpu_check.json

Nothing is downloaded: the model is a 4-layer Llama (hidden 256) with random weights, and its tokenizer is a
byte-level BPE trained here in seconds on the repository's own data, with a ChatML chat template (align
formats every example with the model's template). The data are the repository's data/ files, capped to a
few dozen examples per stage, so each stage takes seconds on a GPU; what is checked is that each stage runs
on the expected device in the expected precision (`notes.device` in its manifest), and how fast and how
much memory it took, not what the random model learns.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFERENCES = "data/preferences/hh_rlhf_harmless_base_test.jsonl.gz"
PROMPTS = "data/instructions/oasst_prompts_en_250.jsonl"
HARMFUL = "data/safety/advbench_harmful_behaviors.csv"
BRAND_PROMPTS = "recipes/brand_voice/prompts_eval.jsonl"
BRAND_RUBRIC = "recipes/brand_voice/rubric.yaml"
# The device and weights dtype each mode must see in every stage's notes.device (dtype auto resolves there).
EXPECTED = {"cuda": ("cuda", "bfloat16"), "cpu": ("cpu", "float32")}
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
VERSIONS = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "align")


class CheckFailed(Exception):
    """One stage failed or ran somewhere it should not have."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason = stage, reason


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect", choices=sorted(EXPECTED), required=True)
    parser.add_argument("--json", required=True, help="where the results go")
    parser.add_argument("--work", required=True, help="a scratch directory (model, runs)")
    parser.add_argument("--logs", required=True, help="where each stage's output goes (<stage>.log)")
    args = parser.parse_args()
    work = Path(args.work)
    report = {
        "expect": dict(zip(("type", "dtype"), EXPECTED[args.expect])),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "stages": {},
        "ok": False,
    }
    try:
        model = build_tiny_model(work / "tiny-llama")
        for stage, argv in pipeline(model, work / "runs"):
            report["stages"][stage] = run_stage(stage, argv, work / "runs", args.expect, Path(args.logs))
            print(f"gpu_check: {stage} ok: {summary(report['stages'][stage])}", flush=True)
            write_report(report, args.json)  # after every stage: a run cut off by the time limit keeps what finished
        report["ok"] = True
    except CheckFailed as exc:
        report["failed"] = {"stage": exc.stage, "reason": exc.reason}
        print(f"FAIL {exc.stage}: {exc.reason}", file=sys.stderr, flush=True)
    except Exception as exc:  # building the model or reading a manifest: still a named failure and a JSON
        report["failed"] = {"stage": "setup", "reason": f"{type(exc).__name__}: {exc}"}
        print(f"FAIL setup: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_report(report, args.json)
    print(f"gpu_check: results in {args.json}", flush=True)
    return 0 if report["ok"] else 1


def write_report(report: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def pipeline(model: Path, runs: Path) -> list[tuple[str, list[str]]]:
    """Each stage's command line: defaults of the stage's Config plus these overrides (no config file, so
    the check does not move when the shipped configs do)."""
    common = [f"runs_dir={runs}", "dtype=auto", "max_length=256"]
    train = ["training.logging_steps=1", "training.per_device_train_batch_size=4", "training.max_steps=3"]
    pairs = [f"data.train={PREFERENCES}", "data.test_fraction=0.1", "data.max_train_pairs=24", "data.max_test_pairs=8"]
    sft, reward, dpo = runs / "sft", runs / "reward", runs / "dpo"
    return [
        (
            "sft",
            [
                "sft",
                f"model={model}",
                "name=sft",
                f"data.train={PREFERENCES}",
                "data.format=preference-chosen",
                "data.test_fraction=0.1",
                "data.max_examples=24",
                *common,
                *train,
            ],
        ),
        ("reward", ["reward", f"model={sft}", "name=reward", *pairs, *common, *train]),
        (
            "dpo",
            [
                "dpo",
                f"model={sft}",
                "name=dpo",
                f"reward_model={reward}",
                *pairs,
                *common,
                *train,
                "reward_eval.prompts=4",
                "reward_eval.max_new_tokens=16",
            ],
        ),
        (
            "ppo",
            [
                "ppo",
                f"model={sft}",
                "name=ppo",
                f"reward_model={reward}",
                f"prompts={PROMPTS}",
                "max_prompts=40",
                "steps=2",
                "batch_size=4",
                "max_new_tokens=16",
                "rollout=hf",
                "eval.prompts=4",
                "eval.max_new_tokens=16",
                f"runs_dir={runs}",
                "dtype=auto",
                "max_length=256",
            ],
        ),
        (
            "generate",
            [
                "generate",
                f"policy={dpo}",
                "name=generate",
                f"prompts={PROMPTS}",
                "max_prompts=8",
                "engine=hf",
                "sampling.n=2",
                "sampling.max_tokens=32",
                f"runs_dir={runs}",
                "dtype=auto",
            ],
        ),
        (
            "evaluate_policy",
            [
                "evaluate",
                "policy",
                str(dpo),
                "name=evaluate_policy",
                f"reward_model={reward}",
                "engine=hf",
                f"harmful.paths=[{HARMFUL}]",
                "harmful.max_prompts=4",
                f"brand.paths=[{BRAND_PROMPTS}]",
                "brand.max_prompts=4",
                f"brand_rubric={BRAND_RUBRIC}",
                "sampling.max_tokens=32",
                "bootstrap.resamples=200",
                f"runs_dir={runs}",
                "dtype=auto",
            ],
        ),
    ]


def run_stage(stage: str, argv: list[str], runs: Path, expect: str, logs: Path | None = None) -> dict:
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "align", *argv], cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{stage}.log").write_text(f"$ python -m align {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        sys.stderr.write(done.stderr[-4000:])
        raise CheckFailed(stage, f"`align {' '.join(argv[:2])}` exited {done.returncode}: {tail}")
    manifest_path = runs / stage / "manifest.json"
    if not manifest_path.is_file():
        raise CheckFailed(stage, f"no manifest at {manifest_path}")
    manifest = json.loads(manifest_path.read_text())
    device = (manifest.get("notes") or {}).get("device")
    if not isinstance(device, dict):
        raise CheckFailed(stage, "the manifest has no notes.device record (which device and dtype the stage ran on)")
    want_type, want_dtype = EXPECTED[expect]
    if device.get("type") != want_type or device.get("dtype") != want_dtype:
        raise CheckFailed(
            stage,
            f"ran on {device.get('type')}/{device.get('dtype')}, expected {want_type}/{want_dtype} "
            f"(notes.device: {json.dumps(device)})",
        )
    return {
        "wall_s": round(wall, 2),
        "stage_wall_time_s": manifest.get("wall_time_s"),
        "device": device.get("name"),
        "device_type": device.get("type"),
        "dtype": device.get("dtype"),
        "attn_implementation": device.get("attn_implementation"),
        "world_size": device.get("world_size"),
        "peak_memory_bytes": device.get("peak_memory_bytes"),
        "tokens_per_s": tokens_per_second(runs / stage, manifest),
    }


def tokens_per_second(run: Path, manifest: dict) -> float | None:
    """Training stages: the mean of the per-step `tokens_per_s` in metrics.jsonl; generation: its manifest's."""
    values = []
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            record = json.loads(line) if line.strip() else {}
            if isinstance(record.get("tokens_per_s"), (int, float)):
                values.append(record["tokens_per_s"])
    if values:
        return round(sum(values) / len(values), 1)
    found = (manifest.get("metrics") or {}).get("tokens_per_s")
    return found if isinstance(found, (int, float)) else None


def summary(result: dict) -> str:
    peak = result["peak_memory_bytes"]
    return (
        f"{result['wall_s']:.1f} s on {result['device']} ({result['dtype']}, {result['attn_implementation']}), "
        f"peak {peak / 2**20:.0f} MiB"
        if peak
        else f"{result['wall_s']:.1f} s on {result['device']} ({result['dtype']})"
    ) + (f", {result['tokens_per_s']} tokens/s" if result["tokens_per_s"] else "")


def build_tiny_model(path: Path) -> Path:
    """A 4-layer Llama with random weights and a byte-level BPE tokenizer trained on the repository's data."""
    if (path / "config.json").is_file():
        return path
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(training_texts(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        bos_token=None,
        unk_token=None,
        chat_template=CHATML,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def training_texts():
    with gzip.open(ROOT / PREFERENCES, "rt", encoding="utf-8") as f:
        yield from f
    for name in (PROMPTS, BRAND_PROMPTS):
        yield (ROOT / name).read_text(encoding="utf-8")


def machine() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_bytes=props.total_memory,
            cuda=torch.version.cuda,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return info


def versions() -> dict:
    found = {}
    for name in VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    import align

    found["align_imported_from"] = str(Path(align.__file__).parent)
    found["unmet_requirements"] = unmet_requirements()
    return found


def unmet_requirements() -> list[str]:
    """Requirements of align, trl and datasets that the installed versions do not meet (installed with
    --no-deps from the wheelhouse, so nothing else checks them on the GPU machine)."""
    from packaging.requirements import Requirement

    unmet = []
    for dist in ("align", "trl", "datasets", "peft"):
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                unmet.append(f"{dist} needs {req} (not installed)")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                unmet.append(f"{dist} needs {req}, found {have}")
    return unmet


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
