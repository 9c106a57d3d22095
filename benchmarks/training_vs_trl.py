"""Benchmark: align's reward and DPO stages against plain TRL on the same pairs, model and settings.

    .venv/bin/python benchmarks/training_vs_trl.py --stages reward dpo --modes lora --train-pairs 64 \\
        --test-pairs 64 --max-length 192 --output benchmarks/results/training_vs_trl_cpu.json

Data: Anthropic HH-RLHF harmless-base pairs (data/preferences, MIT), read with align's
reader. 10% of the prompts are held out by content hash (align's split, seed 0); the first
`--test-pairs` held-out pairs that fit `--max-length` are scored for every model, the first
`--train-pairs` training pairs that fit are trained on, identical for both sides (so neither side
drops or cuts anything; `--pool raw` instead gives align the first pairs whatever their length, to
measure `data.long_prompts`). Model: the embedded SmolLM2-135M-Instruct (Apache-2.0).

For each stage and mode (LoRA r16 on all linear layers, or full fine-tuning) it runs, one after the
other so they never share the cores, each in its own child process:
  1. plain TRL (RewardTrainer / DPOTrainer) as a careful CPU user would set it up: bf16 off (TRL
     1.16 defaults to bf16, which is >5x slower on this CPU), fp32 weights, no tracker, no
     checkpoints, TRL's other defaults (random batch order, gradient checkpointing on);
  2. `align reward` / `align dpo` (the real CLI) with the same learning rate, batch, accumulation,
     epochs, max_length, LoRA settings and seed, plus any `--align` dotted overrides (e.g.
     `--align prefix_sharing=true`), or each `--variant NAME:key=value,key=value` in turn;
  3. plain TRL again: the machine is shared, so a drift between 1 and 3 shows the noise.
Each trained model is then scored on the same held-out pairs by one scoring child: reward models by
pairwise accuracy (align.scoring, as `align reward` scores), DPO policies by implicit-reward accuracy
(policy vs the starting model's log-probabilities of chosen and rejected replies, as TRL reports).

Per run the JSON has pairs/s and tokens/s (pairs and real, non-padding tokens the collator built,
over the trainer's `train_runtime`), the padding share of those batches, the peak RSS of the child's
process tree (psutil, every 0.2 s), the final logged training loss and the held-out accuracy with a
95% Wilson interval; then align's ratios to the mean of the two plain-TRL runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `align` from this checkout, also when run as a script
DEFAULT_DATA = ROOT / "data" / "preferences" / "hh_rlhf_harmless_base_test.jsonl.gz"

# Learning rates per (stage, mode): align's shipped defaults for LoRA, the README's full-FT choice.
LEARNING_RATES = {("reward", "lora"): 1e-4, ("reward", "full"): 2e-5, ("dpo", "lora"): 5e-5, ("dpo", "full"): 5e-6}
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}  # align's LoraConfig defaults, given to both sides
SEED = 42
LOGGING_STEPS = 1  # every step, so the final loss is there even for a two-step run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--stages", nargs="+", default=["reward", "dpo"], choices=["reward", "dpo"])
    parser.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    parser.add_argument("--train-pairs", type=int, default=64)
    parser.add_argument("--test-pairs", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--reward-batch", type=int, default=8, help="pairs per device batch for the reward model")
    parser.add_argument("--dpo-batch", type=int, default=2, help="pairs per device batch for DPO")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (-1: epochs)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument(
        "--align",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override for both align stages (repeatable), e.g. prefix_sharing=true",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="run align once per variant, each with its overrides (after --align ones)",
    )
    parser.add_argument(
        "--pool",
        choices=["fit", "raw"],
        default="fit",
        help="fit: train on pairs that fit max_length (both sides); raw: align gets the first pairs as they are",
    )
    parser.add_argument(
        "--held-out",
        choices=["fit", "all"],
        default="fit",
        help="all: also score held-out pairs over max_length (left-truncated; reward only)",
    )
    parser.add_argument("--skip-trl", action="store_true", help="align only (e.g. to compare variants)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "training_vs_trl.json"))
    args = parser.parse_args()
    if args.pool == "raw" and not args.skip_trl:
        parser.error("--pool raw gives align pairs plain TRL would drop; use it with --skip-trl")
    if args.held_out == "all" and "dpo" in args.stages:
        parser.error(
            "--held-out all scores over-long pairs left-truncated, which only the reward scoring does; drop dpo"
        )
    variants = [parse_variant(v) for v in args.variant] or [("align", [])]

    with tempfile.TemporaryDirectory(prefix="align-vs-trl-") as work:
        work = Path(work)
        data = prepare_data(args, work)
        print(f"[bench] {data['train_pairs']} training pairs, {data['test_pairs']} held-out pairs", file=sys.stderr)
        sections = []
        for stage in args.stages:
            for mode in args.modes:
                sections.append(compare(stage, mode, args, variants, data, work))
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "data": {k: v for k, v in data.items() if k not in ("train", "test")},
        "model": "embedded SmolLM2-135M-Instruct (fp32)",
        "settings": {
            "max_length": args.max_length,
            "reward_batch": args.reward_batch,
            "dpo_batch": args.dpo_batch,
            "grad_accum": args.grad_accum,
            "epochs": args.epochs,
            "max_steps": args.max_steps,
            "beta": args.beta,
            "lora": LORA,
            "learning_rates": {f"{s}/{m}": lr for (s, m), lr in LEARNING_RATES.items()},
            "seed": SEED,
            "align_overrides": args.align,
            "variants": [v[0] for v in variants],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": cpu_model(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": versions(),
        "comparisons": sections,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            [
                {k: s[k] for k in ("stage", "mode", "ratios")}
                | {
                    "runs": {
                        r["label"]: {
                            k: r.get(k)
                            for k in (
                                "pairs_per_s",
                                "tokens_per_s",
                                "padding_fraction",
                                "peak_rss_mb",
                                "final_loss",
                                "test_accuracy",
                            )
                        }
                        for r in s["runs"]
                    }
                }
                for s in sections
            ],
            indent=2,
        )
    )
    print(f"[bench] written {out}", file=sys.stderr)
    return 0


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    return name, [o for o in overrides.split(",") if o]


# -- data -----------------------------------------------------------------------------------------


def prepare_data(args, work: Path) -> dict:
    """The training and held-out pairs both sides get, as conversational JSONL files."""
    from transformers import AutoTokenizer

    from align.data.preferences import load_preference_pairs, split_pairs
    from align.models import embedded_model_dir
    from align.scoring import conversation_ids

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    pairs = load_preference_pairs(args.data, "hh-rlhf").rows
    train_pool, test_pool = split_pairs(pairs, 0.1, seed=0)

    def tokens(row):
        return [len(conversation_ids(tokenizer, row["prompt"] + row[p])) for p in ("chosen", "rejected")]

    def first(pool, n, fit):
        chosen, skipped = [], 0
        for row in pool:
            if len(chosen) == n:
                break
            if fit and max(tokens(row)) > args.max_length:
                skipped += 1
                continue
            chosen.append(row)
        return chosen, skipped

    train, train_skipped = first(train_pool, args.train_pairs, args.pool == "fit")
    test, test_skipped = first(test_pool, args.test_pairs, args.held_out == "fit")
    keep = ("prompt", "chosen", "rejected")
    for name, rows in (("train", train), ("test", test)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps({k: r[k] for k in keep}) + "\n" for r in rows))
    return {
        "source": f"{args.data} (HH-RLHF harmless-base, MIT)",
        "pool": args.pool,
        "held_out": args.held_out,
        "train": str(work / "train.jsonl"),
        "test": str(work / "test.jsonl"),
        "train_pairs": len(train),
        "train_pairs_over_max_length_skipped": train_skipped,
        "train_real_tokens": sum(sum(tokens(r)) for r in train),
        "test_pairs": len(test),
        "test_pairs_over_max_length_skipped": test_skipped,
    }


# -- one comparison -------------------------------------------------------------------------------


def compare(stage: str, mode: str, args, variants, data: dict, work: Path) -> dict:
    lr = LEARNING_RATES[(stage, mode)]
    batch = args.reward_batch if stage == "reward" else args.dpo_batch
    runs = []
    plan = [] if args.skip_trl else [("plain TRL", "trl")]
    plan += [
        (f"align ({name})" if len(variants) > 1 or name != "align" else "align", overrides)
        for name, overrides in variants
    ]
    if not args.skip_trl:
        plan.append(("plain TRL (again, last)", "trl"))
    for i, (label, what) in enumerate(plan):
        out_dir = work / f"{stage}-{mode}-{i}"
        print(f"[bench] {stage} {mode}: {label} ...", file=sys.stderr, flush=True)
        if what == "trl":
            result = run_trl(stage, mode, lr, batch, args, data, out_dir)
        else:
            result = run_align(stage, mode, lr, batch, args, data, out_dir, [*args.align, *what])
        result["label"] = label
        if result.get("model"):
            result.update(score(stage, result["model"], args, data))
        result.pop("model", None)
        runs.append(result)
        print(
            f"[bench] {stage} {mode}: {label}: {result.get('pairs_per_s')} pairs/s, "
            f"accuracy {result.get('test_accuracy')}, peak {result.get('peak_rss_mb')} MB",
            file=sys.stderr,
            flush=True,
        )
    return {"stage": stage, "mode": mode, "learning_rate": lr, "batch": batch, "runs": runs, "ratios": ratios(runs)}


def ratios(runs: list[dict]) -> dict:
    """Each align run against the mean of the plain-TRL runs that bracket it."""
    trl = [r for r in runs if r["label"].startswith("plain TRL") and r.get("pairs_per_s")]
    if not trl:
        return {}
    out = {}
    for r in runs:
        if r["label"].startswith("plain TRL") or not r.get("pairs_per_s"):
            continue
        entry = {}
        for key in ("pairs_per_s", "tokens_per_s", "peak_rss_mb"):
            base = sum(t[key] for t in trl) / len(trl)
            entry[key] = round(r[key] / base, 3) if base else None
        scored = [t for t in trl if "test_accuracy_ci95" in t]
        if scored and "test_accuracy" in r:
            low, high = min(t["test_accuracy_ci95"][0] for t in scored), max(t["test_accuracy_ci95"][1] for t in scored)
            entry["test_accuracy_within_trl_interval"] = low <= r["test_accuracy"] <= high
        out[r["label"]] = entry
    return out


def run_trl(stage, mode, lr, batch, args, data, out_dir: Path) -> dict:
    spec = {
        "stage": stage,
        "mode": mode,
        "lr": lr,
        "batch": batch,
        "grad_accum": args.grad_accum,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "max_length": args.max_length,
        "beta": args.beta,
        "train": data["train"],
        "out": str(out_dir),
    }
    result = run_child([sys.executable, __file__, "_trl", json.dumps(spec)])
    result_file = out_dir / "result.json"
    if result["exit_code"] != 0 or not result_file.exists():
        return result
    result.update(json.loads(result_file.read_text()))
    result["model"] = str(out_dir / "model")
    return result


def run_align(stage, mode, lr, batch, args, data, out_dir: Path, overrides: list[str]) -> dict:
    command = [
        sys.executable,
        "-m",
        "align",
        stage,
        "model=embedded",
        f"data.train={data['train']}",
        "data.format=conversational",
        f"max_length={args.max_length}",
        f"lora.enabled={str(mode == 'lora').lower()}",
        f"lora.r={LORA['r']}",
        f"lora.alpha={LORA['alpha']}",
        f"lora.dropout={LORA['dropout']}",
        f"seed={SEED}",
        f"training.learning_rate={lr}",
        f"training.per_device_train_batch_size={batch}",
        f"training.gradient_accumulation_steps={args.grad_accum}",
        f"training.num_train_epochs={args.epochs}",
        f"training.max_steps={args.max_steps}",
        f"training.logging_steps={LOGGING_STEPS}",
        f"runs_dir={out_dir.parent}",
        f"name={out_dir.name}",
    ]
    if stage == "dpo":
        command.append(f"beta={args.beta}")  # loss_type: align's default, sigmoid, as given to TRL
    result = run_child(command + overrides)
    result["overrides"] = overrides
    manifest_file = out_dir / "manifest.json"
    if result["exit_code"] != 0 or not manifest_file.exists():
        return result
    manifest = json.loads(manifest_file.read_text())
    metrics, batches = manifest["metrics"], manifest["notes"].get("batches", {})
    runtime = metrics["train_runtime"]
    # The last logged step loss (the manifest's train_loss is the mean over training, as TRL reports it).
    steps = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if "loss" in s]
    result.update(
        train_runtime_s=round(runtime, 1),
        pairs_trained=manifest["notes"]["data"]["pairs_trained"],
        pairs_seen=batches.get("examples"),
        pairs_per_s=rate(batches.get("examples"), runtime),
        tokens_per_s=rate(batches.get("tokens"), runtime),
        padding_fraction=batches.get("padding_fraction"),
        final_loss=losses[-1] if losses else None,
        mean_train_loss=metrics.get("train_loss"),
        global_step=metrics.get("train_global_step" if stage == "reward" else "global_step"),
        data_report=manifest["notes"]["data"],
    )
    result["model"] = str(out_dir)
    return result


def rate(count, seconds) -> float | None:
    return round(count / seconds, 3) if count and seconds else None


def score(stage: str, model: str, args, data: dict) -> dict:
    spec = {"stage": stage, "model": model, "test": data["test"], "max_length": args.max_length}
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    result = run_child([sys.executable, __file__, "_score", json.dumps(spec), out])
    try:
        if result["exit_code"] != 0:
            return {"score_error": result.get("error_tail")}
        scored = json.loads(Path(out).read_text())
    finally:
        os.unlink(out)
    accuracy, n = scored["accuracy"], scored["pairs"]
    return {
        "test_accuracy": round(accuracy, 4),
        "test_accuracy_ci95": wilson(accuracy, n),
        "test_pairs": n,
        "test_mean_margin": round(scored["mean_margin"], 4),
    }


def wilson(p: float, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def run_child(command: list[str]) -> dict:
    """A child process; its exit code, wall time and the peak RSS of its process tree."""
    import psutil

    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        start = time.time()
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        peak = [0]

        def watch():
            root = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    tree = [root, *root.children(recursive=True)]
                    peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
                except psutil.Error:
                    pass
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            code = proc.wait()
        except BaseException:
            proc.kill()
            raise
        watcher.join()
        result = {"exit_code": code, "wall_s": round(time.time() - start, 1), "peak_rss_mb": round(peak[0] / 2**20)}
        if code != 0:
            log.seek(0)
            result["error_tail"] = log.read().splitlines()[-15:]
            print("\n".join(result["error_tail"]), file=sys.stderr)
    return result


# -- children -------------------------------------------------------------------------------------


def trl_child(spec: dict) -> None:
    """Plain TRL, as a careful user on a CPU would write it (see the module docstring)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        set_seed,
    )
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    from align.data.length import PaddingCount
    from align.models import embedded_model_dir

    base = embedded_model_dir()
    out = Path(spec["out"])
    rows = [json.loads(line) for line in Path(spec["train"]).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(base)
    common = {
        "output_dir": str(out / "trainer"),
        "per_device_train_batch_size": spec["batch"],
        "gradient_accumulation_steps": spec["grad_accum"],
        "learning_rate": spec["lr"],
        "num_train_epochs": spec["epochs"],
        "max_steps": spec["max_steps"],
        "lr_scheduler_type": "linear",
        "logging_steps": LOGGING_STEPS,
        "seed": SEED,
        "bf16": False,
        "report_to": [],
        "save_strategy": "no",
        "max_length": spec["max_length"],
    }
    lora = spec["mode"] == "lora"
    set_seed(SEED)
    dataset = Dataset.from_list(rows)
    if spec["stage"] == "reward":
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tokenizer.pad_token_id
        peft = (
            LoraConfig(
                r=LORA["r"],
                lora_alpha=LORA["alpha"],
                lora_dropout=LORA["dropout"],
                target_modules="all-linear",
                task_type="SEQ_CLS",
            )
            if lora
            else None
        )
        trainer = RewardTrainer(
            model=model,
            args=RewardConfig(**common),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft,
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        ref = None if lora else AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        peft = (
            LoraConfig(
                r=LORA["r"],
                lora_alpha=LORA["alpha"],
                lora_dropout=LORA["dropout"],
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
            if lora
            else None
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=ref,
            args=DPOConfig(**common, beta=spec["beta"], loss_type=["sigmoid"]),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft,
        )
    padding = PaddingCount(trainer.data_collator)
    trainer.data_collator = padding
    summary = trainer.train().metrics
    trained = trainer.model.merge_and_unload() if lora else trainer.model
    trained.save_pretrained(out / "model", safe_serialization=True)
    tokenizer.save_pretrained(out / "model")
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    runtime = summary["train_runtime"]
    (out / "result.json").write_text(
        json.dumps(
            {
                "train_runtime_s": round(runtime, 1),
                "pairs_trained": len(rows),
                "pairs_seen": padding.examples,
                "pairs_per_s": rate(padding.examples, runtime),
                "tokens_per_s": rate(padding.real, runtime),
                "padding_fraction": padding.fraction,
                "final_loss": losses[-1] if losses else None,
                "mean_train_loss": summary.get("train_loss"),
                "global_step": trainer.state.global_step,
            }
        )
    )


def score_child(spec: dict, out: str) -> None:
    """Held-out accuracy of a trained model, the same way whichever side trained it."""
    from align.models import (
        load_policy,
        load_reward_model,
        load_tokenizer,
        resolve_model,
    )
    from align.scoring import pairwise_metrics, reward_scores

    rows = [json.loads(line) for line in Path(spec["test"]).read_text().splitlines()]
    source = resolve_model(spec["model"])
    if spec["stage"] == "reward":
        tokenizer = load_tokenizer(source)
        model = load_reward_model(source, pad_token_id=tokenizer.pad_token_id)
        chosen = reward_scores(model, tokenizer, [r["prompt"] + r["chosen"] for r in rows], 8, spec["max_length"])
        rejected = reward_scores(model, tokenizer, [r["prompt"] + r["rejected"] for r in rows], 8, spec["max_length"])
        result = pairwise_metrics(chosen, rejected)
    else:
        tokenizer = load_tokenizer(source)
        policy = load_policy(source)
        reference = load_policy(resolve_model("embedded"))
        margins = []
        for model in (policy, reference):
            logps = completion_logps(model, tokenizer, rows)
            margins.append([c - r for c, r in logps])
        # Implicit DPO reward accuracy: the policy moved chosen up relative to rejected, against the reference.
        implicit = [p - r for p, r in zip(*margins)]
        result = pairwise_metrics(implicit, [0.0] * len(implicit))
    Path(out).write_text(json.dumps(result))


def completion_logps(model, tokenizer, rows) -> list[tuple[float, float]]:
    """Summed log-probabilities of the chosen and the rejected reply after the prompt."""
    import torch

    from align.scoring import conversation_ids

    model.eval()
    out = []
    with torch.inference_mode():
        for row in rows:
            prompt = tokenizer.apply_chat_template(
                row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False
            )
            pair = []
            for part in ("chosen", "rejected"):
                ids = conversation_ids(tokenizer, row["prompt"] + row[part])
                start = next((i for i, (a, b) in enumerate(zip(prompt, ids)) if a != b), len(prompt))
                logits = model(torch.tensor([ids])).logits[0, :-1]
                logp = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
                pair.append(float(logp[start - 1 :].sum()))
            out.append(tuple(pair))
    return out


# -- machine --------------------------------------------------------------------------------------


def versions() -> dict:
    from importlib import metadata

    found = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_trl":
        trl_child(json.loads(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_score":
        score_child(json.loads(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(main())
