"""Models by hub id (`org/name`) through huggingface_hub's cache, offline.

No hub is reachable here: the tiny model is laid out as huggingface_hub caches a download
(HF_HUB_CACHE/models--org--name/{blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/main}), and
the real snapshot_download finds it there with HF_HUB_OFFLINE=1, as it would after `hf download`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.core.errors import AlignError
from align.models import load_policy, load_tokenizer, resolve_model

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_model(cache: Path, repo_id: str, source: Path, commit: str = COMMIT, skip=()) -> Path:
    """`source`'s files as a download of `repo_id` at `commit` leaves them in the hub cache."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sorted(source.iterdir()):
        if file.is_file() and file.name not in skip:
            blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
            blob.write_bytes(file.read_bytes())
            (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache in force for this process, offline (huggingface_hub reads both at import)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_id_loads_from_the_cache_offline(hub_cache, tiny_model):
    snapshot = cache_model(hub_cache, "org/tiny-llama", tiny_model)
    source = resolve_model("org/tiny-llama")
    assert source.base_dir == snapshot and source.adapters == []
    assert source.record["kind"] == "hub" and source.record["hub_id"] == "org/tiny-llama"
    assert source.stable_ref == "org/tiny-llama"
    model = load_policy(source)
    assert load_tokenizer(source).chat_template
    expected = load_file(str(tiny_model / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(model.state_dict()[name], expected[name])


def test_a_snapshot_without_safetensors_is_refused(hub_cache, tiny_model, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for file in tiny_model.iterdir():
        if file.is_file() and file.suffix != ".safetensors":
            (pickled / file.name).write_bytes(file.read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    cache_model(hub_cache, "org/pickled", pickled)
    with pytest.raises(AlignError, match="no .safetensors weights"):
        resolve_model("org/pickled")


def test_a_dry_run_resolves_a_hub_model_without_its_weights(hub_cache, tiny_model):
    # What `--dry-run` of a 7B recipe has on a login node: the config and tokenizer, no weights.
    from align.models import without_weights

    snapshot = cache_model(hub_cache, "org/no-weights", tiny_model, skip=("model.safetensors",))
    with without_weights():
        source = resolve_model("org/no-weights")
        assert source.base_dir == snapshot and load_tokenizer(source).chat_template
    with pytest.raises(AlignError, match="no .safetensors weights"):
        resolve_model("org/no-weights")  # a real run still needs them


def test_an_id_neither_cached_nor_reachable_says_how_to_give_a_local_copy(hub_cache):
    with pytest.raises(AlignError) as err:
        resolve_model("org/absent")
    line = str(err.value)
    assert "\n" not in line
    assert f"model 'org/absent' is not a local directory, not in the local Hugging Face cache ({hub_cache})" in line
    assert "(offline mode is on)" in line and "`hf download org/absent --local-dir DIR`" in line


def test_cli_exit_2_for_a_model_id_with_no_network_and_no_cache(tmp_path):
    (tmp_path / "p.txt").write_text("Hello?\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_HOME=str(tmp_path / "empty"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "align", "generate", "policy=org/absent", "prompts=p.txt", "--dry-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in out.stderr.splitlines() if line.startswith("align: error:")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in out.stderr
    assert "model 'org/absent'" in errors[0] and "offline mode is on" in errors[0]
