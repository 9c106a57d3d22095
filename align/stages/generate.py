"""Sample N responses per prompt from a policy: the candidates annotators compare.

`align generate --config configs/generate/default.yaml` reads a prompt set, formats each
prompt with the policy's chat template, samples `sampling.n` responses with the chosen engine
(`vllm`, `hf` or `auto`, see align/rollout) and writes one run:

    generations.jsonl   one row per prompt: {"prompt": [messages], "responses": [...], "prompt_id",
                        "source": "file:line", "finish_reasons": [...], "response_tokens": [...]}
    manifest.json       the sampling settings, the engine that ran, and throughput (new tokens/s,
                        prompts/s, generation and load wall time)

The policy is `embedded`, a Hugging Face directory, or a training run (adapters of earlier stages
are merged, or served as a LoRA by vLLM where it can). A prompt that does not fit the model's
context with `sampling.max_tokens` new tokens stops the stage before any model is loaded, naming
its file and line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from align.core import device, runs
from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.training import ModelLoading
from align.data.prompts import load_prompts
from align.data.records import write_jsonl
from align.models import load_tokenizer, resolve_model
from align.rollout import EngineName, SamplingSettings, VllmSettings, check_context, context_length, encode_prompts
from align.rollout.engines import choose_engine, make_engine
from align.rollout.generations import GENERATIONS

log = logging.getLogger(__name__)


@dataclass
class Config(runs.RunOutput, ModelLoading):
    """Config of `align generate`."""

    prompts: str = ""
    """Prompt set: JSONL/JSON/Parquet/CSV/TSV/TXT file, a datasets directory, a run directory, or a hub dataset
    `hf:<org>/<name>?split=<split>&subset=<config>&revision=<rev>` (split defaults to train)."""
    policy: str = "embedded"
    """Policy to sample: `embedded`, a Hugging Face directory, a training run directory, or a hub id."""
    prompt_field: str | None = None
    """Field or column holding the prompt; unset tries messages, prompt, goal, then turns (first turn)."""
    max_prompts: int | None = None
    """Use only the first N prompts of the set (file order)."""
    engine: EngineName = "auto"
    """auto (vLLM when it imports, else hf) | vllm | hf."""
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    """Sampling settings, recorded in the manifest."""
    batch_size: int = 64
    """hf engine: sequences (prompts x n) per generate call."""
    vllm: VllmSettings = field(default_factory=VllmSettings)
    """vLLM engine settings (KV cache, threads, LoRA serving)."""

    def __post_init__(self):
        if self.batch_size < 1:
            raise AlignError(f"'batch_size' must be >= 1, got {self.batch_size}")


def check(cfg: Config) -> dict:
    """The inputs read, checked and counted without loading model weights (what `--dry-run` prints)."""
    return prepare(cfg).report


def prepare(cfg: Config) -> SimpleNamespace:
    if not cfg.prompts:
        raise AlignError("'prompts' is required: a prompt file, datasets directory or run directory")
    # Inputs first: a bad prompt file or an over-long prompt fails in seconds, before a model loads.
    prompts = load_prompts(cfg.prompts, cfg.prompt_field, cfg.max_prompts)
    source = resolve_model(cfg.policy, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    prompt_ids = encode_prompts(tokenizer, [p.messages for p in prompts])
    context = context_length(source.base_dir)
    check_context(prompt_ids, [p.source for p in prompts], cfg.sampling.max_tokens, context)
    report = {
        "policy": source.stable_ref,
        "prompts": len(prompts),
        "prompt_tokens": sum(map(len, prompt_ids)),
        "longest_prompt_tokens": max(map(len, prompt_ids)),
        "context_length": context,
        "responses": len(prompts) * cfg.sampling.n,
    }
    return SimpleNamespace(
        prompts=prompts, source=source, tokenizer=tokenizer, prompt_ids=prompt_ids, context=context, report=report
    )


def run(cfg: Config) -> dict:
    ready = prepare(cfg)
    prompts, source, tokenizer, prompt_ids, context = (
        ready.prompts,
        ready.source,
        ready.tokenizer,
        ready.prompt_ids,
        ready.context,
    )
    engine_name = choose_engine(cfg.engine)
    log.info(
        "generate: %d prompts x %d samples, engine %s, policy %s",
        len(prompts),
        cfg.sampling.n,
        engine_name,
        source.stable_ref,
    )

    with runs.new_run("generate", to_dict(cfg), cfg.runs_dir, cfg.name) as run:
        run.add_input("prompts", cfg.prompts)
        run.add_input_record("policy", source.record)

        load_start = time.time()
        # vLLM sizes its KV blocks for the longest request this run can make, not the model's full context.
        max_model_len = max(map(len, prompt_ids)) + cfg.sampling.max_tokens
        engine = make_engine(engine_name, source, tokenizer, cfg, max_model_len, cfg.sampling.seed)
        load_s = time.time() - load_start
        try:
            gen_start = time.time()
            completions = engine.generate(prompt_ids, cfg.sampling)
            gen_s = time.time() - gen_start
        finally:
            # Before close: the hf engine's model says where it ran; vLLM's engine runs outside this process's torch.
            device.record(run, cfg, getattr(engine, "model", None))
            engine.close()

        rows = []
        for prompt, outs in zip(prompts, completions):
            rows.append(
                {
                    "prompt": prompt.messages,
                    "responses": [c.text for c in outs],
                    "prompt_id": prompt.prompt_id,
                    "source": prompt.source,
                    "finish_reasons": [c.finish_reason for c in outs],
                    "response_tokens": [c.tokens for c in outs],
                }
            )
        write_jsonl(Path(run.path) / GENERATIONS, rows)
        run.add_output("generations", GENERATIONS, rows=len(rows))

        new_tokens = sum(sum(r["response_tokens"]) for r in rows)
        truncated = sum(r["finish_reasons"].count("length") for r in rows)
        run.notes.update(
            policy=source.stable_ref,
            engine=engine_name,
            engine_details=getattr(engine, "details", {}),
            sampling=to_dict(cfg.sampling),
            prompt_tokens=sum(map(len, prompt_ids)),
            context_length=context,
        )
        metrics = {
            "prompts": len(rows),
            "responses": len(rows) * cfg.sampling.n,
            "new_tokens": new_tokens,
            "tokens_per_s": round(new_tokens / gen_s, 2) if gen_s > 0 else None,
            "prompts_per_s": round(len(rows) / gen_s, 3) if gen_s > 0 else None,
            "generation_s": round(gen_s, 2),
            "engine_load_s": round(load_s, 2),
            "truncated_responses": truncated,
        }
        run.metrics.update(metrics)
        run.log_metrics(metrics)
        log.info(
            "generated %d responses, %d new tokens in %.1f s (%.1f tokens/s, engine %s; load %.1f s)",
            metrics["responses"],
            new_tokens,
            gen_s,
            metrics["tokens_per_s"] or 0,
            engine_name,
            load_s,
        )
        if truncated:
            log.info(
                "%d of %d responses hit sampling.max_tokens=%d",
                truncated,
                metrics["responses"],
                cfg.sampling.max_tokens,
            )
        return runs.finish(run)
