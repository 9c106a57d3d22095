"""Benchmark: the same prompts through the hf and vLLM rollout engines, side by side in one run.

    .venv/bin/python benchmarks/generation_engines.py \\
        --prompts data/instructions/oasst_prompts_en_250.jsonl --num-prompts 32 --n 2 \\
        --max-tokens 64 --output benchmarks/results/generation_engines_cpu.json [--sweep]

Prompts: OpenAssistant prompt lottery (data/instructions/oasst_prompts_en_250.jsonl,
Apache-2.0, LAION-AI/Open-Assistant). Each engine configuration runs `align generate` (the real
stage, so the figures are what users get) in its own child process, one after the other, so they
never share the cores. For each it records new tokens/s and prompts/s over the generation call
(engine start-up reported apart), and the peak resident memory of the child's whole process tree
(vLLM's engine-core and worker processes included), sampled every 0.2 s with psutil. The JSON
ends with the ratio of each vLLM configuration's tokens/s to hf's, measured in the same run.
`--sweep` adds vLLM CPU configurations (reserved scheduler core, in-process engine, eager mode,
KV cache size) to find the fastest; the engine's defaults are the winner of that sweep.

`--lora-policy RUN` compares generating from a training run's LoRA policy instead: vLLM on the base
model (the speed to match), vLLM serving the adapter (`vllm.lora=serve`, a LoRARequest), vLLM on
the adapter merged into full weights (`vllm.lora=merge`, what `auto` picks on a CPU) and hf (peft
merges the adapter). Each ratio is against the base model's tokens/s; `engine_load_s` of the merged
configuration includes the merge when it was not cached yet (`engine_details.merged_from_cache`).

    .venv/bin/python benchmarks/generation_engines.py --lora-policy runs/<a dpo run> --num-prompts 64 \\
        --n 1 --greedy --max-tokens 48 --enforce-eager --output benchmarks/results/generation_lora_cpu.json
"""

from __future__ import annotations

import argparse
import json
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
DEFAULT_PROMPTS = ROOT / "data" / "instructions" / "oasst_prompts_en_250.jsonl"

# (label, overrides of `align generate`). Defaults first: they are what `engine=vllm` runs.
VLLM_DEFAULT = [("vllm default settings", [])]
VLLM_SWEEP = [
    ("vllm, eager (no torch.compile)", ["vllm.enforce_eager=true"]),
    ("vllm, 1 GiB KV cache", ["vllm.kv_cache_gib=1"]),
    (
        "vllm, engine core in spawned processes, model on both cores",
        ["vllm.multiprocessing=true", "vllm.cpu_reserved=0"],
    ),
    (
        "vllm, engine core in spawned processes, vLLM's default reservation of 1 core for its scheduler",
        ["vllm.multiprocessing=true", "vllm.cpu_reserved=null"],
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS))
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=2, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--policy", default="embedded")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--sweep", action="store_true", help="also try other vLLM CPU settings")
    parser.add_argument("--lora-policy", help="a training run with a LoRA adapter: base vs served vs merged vs hf")
    parser.add_argument("--greedy", action="store_true", help="temperature 0 (needs --n 1)")
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile (faster start)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "generation_engines.json"))
    args = parser.parse_args()

    common = [
        f"prompts={args.prompts}",
        f"max_prompts={args.num_prompts}",
        f"dtype={args.dtype}",
        f"sampling.n={args.n}",
        f"sampling.max_tokens={args.max_tokens}",
        "sampling.temperature=0" if args.greedy else "sampling.temperature=0.8",
        "sampling.top_p=0.95",
        "sampling.seed=0",
    ]
    if args.enforce_eager:
        common.append("vllm.enforce_eager=true")
    if args.lora_policy:
        return compare_lora_paths(args, common)
    common.append(f"policy={args.policy}")
    configs = [("hf", ["engine=hf"])] + [(label, ["engine=vllm", *o]) for label, o in VLLM_DEFAULT]
    if args.sweep:
        configs += [(label, ["engine=vllm", *o]) for label, o in VLLM_SWEEP]
    # hf again at the end: other load on the machine shows up as a difference between the two.
    configs.append(("hf (again, last)", ["engine=hf"]))

    results = run_all(configs, common)

    # The ratio is against the mean of the two hf runs that bracket the vLLM ones.
    hf_speeds = [r["tokens_per_s"] for r in results if r["label"].startswith("hf") and r.get("tokens_per_s")]
    hf_mean = sum(hf_speeds) / len(hf_speeds) if hf_speeds else None
    for r in results:
        if not r["label"].startswith("hf") and r.get("tokens_per_s") and hf_mean:
            r["ratio_vs_hf"] = round(r["tokens_per_s"] / hf_mean, 3)
    vllm_ok = [r for r in results if r.get("ratio_vs_hf")]
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "prompts": f"{args.prompts} (first {args.num_prompts}; Apache-2.0 when the OASST prompt file)",
        "samples_per_prompt": args.n,
        "max_tokens": args.max_tokens,
        "policy": args.policy,
        "dtype": args.dtype,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": cpu_model()},
        "hf_tokens_per_s_mean": round(hf_mean, 2) if hf_mean else None,
        "results": results,
        "vllm_default_ratio_vs_hf": results[1].get("ratio_vs_hf"),
        "best_vllm": max(vllm_ok, key=lambda r: r["ratio_vs_hf"])["label"] if vllm_ok else None,
    }
    write_report(report, results, args.output, ("tokens_per_s", "prompts_per_s", "peak_rss_mb", "ratio_vs_hf"))
    return 0


def compare_lora_paths(args, common: list[str]) -> int:
    """Base model vs the LoRA policy served, merged, and through hf; ratios against the base."""
    from align.models import resolve_model

    source = resolve_model(args.lora_policy)
    if not source.adapters:
        raise SystemExit(
            f"--lora-policy {args.lora_policy} has no LoRA adapter (a full-weight run generates at base speed)"
        )
    base = str(source.base_dir)
    configs = [
        ("vllm, base model", ["engine=vllm", f"policy={base}"]),
        ("vllm, adapter served (vllm.lora=serve)", ["engine=vllm", f"policy={args.lora_policy}", "vllm.lora=serve"]),
        ("vllm, adapter merged (vllm.lora=merge)", ["engine=vllm", f"policy={args.lora_policy}", "vllm.lora=merge"]),
        ("hf, adapter merged by peft", ["engine=hf", f"policy={args.lora_policy}"]),
        # The base again at the end: other load on the shared machine shows up as a difference.
        ("vllm, base model (again, last)", ["engine=vllm", f"policy={base}"]),
    ]
    results = run_all(configs, common)
    base_speeds = [r["tokens_per_s"] for r in results if r["label"].startswith("vllm, base") and r.get("tokens_per_s")]
    base_mean = sum(base_speeds) / len(base_speeds) if base_speeds else None
    for r in results:
        if r.get("tokens_per_s") and base_mean:
            r["ratio_vs_base"] = round(r["tokens_per_s"] / base_mean, 3)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "prompts": f"{args.prompts} (first {args.num_prompts}; Apache-2.0 when the OASST prompt file)",
        "samples_per_prompt": args.n,
        "max_tokens": args.max_tokens,
        "greedy": args.greedy,
        "enforce_eager": args.enforce_eager,
        "lora_policy": args.lora_policy,
        "adapters": len(source.adapters),
        "dtype": args.dtype,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": cpu_model()},
        "base_tokens_per_s_mean": round(base_mean, 2) if base_mean else None,
        "results": results,
    }
    write_report(report, results, args.output, ("tokens_per_s", "engine_load_s", "peak_rss_mb", "ratio_vs_base"))
    return 0


def run_all(configs: list[tuple[str, list[str]]], common: list[str]) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="align-bench-") as runs_dir:
        for i, (label, overrides) in enumerate(configs):
            print(f"[bench] {label} ...", file=sys.stderr, flush=True)
            result = run_generate(common + overrides + [f"runs_dir={runs_dir}", f"name=bench-{i}"])
            result.update(label=label, overrides=overrides)
            results.append(result)
            print(
                f"[bench] {label}: {result.get('tokens_per_s')} tokens/s, peak {result.get('peak_rss_mb')} MB",
                file=sys.stderr,
                flush=True,
            )
    return results


def write_report(report: dict, results: list[dict], output: str, keys: tuple[str, ...]) -> None:
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({r["label"]: {k: r.get(k) for k in keys} for r in results}, indent=2))
    print(f"[bench] written {out}", file=sys.stderr)


def run_generate(overrides: list[str]) -> dict:
    """`align generate` in a child process; its metrics plus the process tree's peak RSS."""
    import psutil

    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    start = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "align", "generate", *overrides], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
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
    except BaseException:  # interrupted: take vLLM's engine processes down with the child
        for p in psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]:
            p.kill()
        raise
    watcher.join()
    result = {
        "exit_code": code,
        "wall_s": round(time.time() - start, 1),
        "peak_rss_mb": round(peak[0] / 2**20),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    log.seek(0)
    text = log.read()
    run_dir = next(
        (line.split("run written to ")[1].split(" (")[0] for line in text.splitlines() if "run written to " in line),
        None,
    )
    if code != 0 or run_dir is None:
        result["error_tail"] = text.splitlines()[-15:]
        return result
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    result.update(
        {
            k: manifest["metrics"].get(k)
            for k in (
                "tokens_per_s",
                "prompts_per_s",
                "new_tokens",
                "generation_s",
                "engine_load_s",
                "truncated_responses",
            )
        }
    )
    result["engine_details"] = manifest["notes"].get("engine_details", {})
    os.unlink(log.name)
    return result


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
