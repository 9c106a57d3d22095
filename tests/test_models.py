"""Model references: adapter chains load from wherever the pipeline directory was moved to."""

from __future__ import annotations

import json
import shutil

import pytest

from align.core import runs
from align.core.config import load_config
from align.core.errors import AlignError
from align.models import load_policy, load_reward_model, resolve_model
from align.stages import dpo, reward, sft

SMALL = ["max_length=64", "training.max_steps=1", "lora.r=2"]


@pytest.fixture
def chain(tiny_model, easy_pairs, tmp_path):
    """sft -> reward and sft -> dpo with LoRA adapters under one pipeline directory."""
    root = tmp_path / "pipeline"
    sft.run(
        load_config(
            sft.Config,
            None,
            [
                f"model={tiny_model}",
                f"data.train={easy_pairs}",
                "data.format=preference-chosen",
                *SMALL,
                f"runs_dir={root}",
                "name=1-sft",
            ],
        )
    )
    pairs = [f"data.train={easy_pairs}", "data.max_test_pairs=2", *SMALL, f"runs_dir={root}", f"model={root / '1-sft'}"]
    reward.run(load_config(reward.Config, None, [*pairs, "name=2-reward"]))
    dpo.run(
        load_config(
            dpo.Config, None, [*pairs, "name=3-dpo", f"reward_model={root / '2-reward'}", "reward_eval.prompts=0"]
        )
    )
    return root


@pytest.mark.slow
def test_a_copied_chain_loads_from_the_copy_after_the_original_is_gone(chain, tmp_path):
    moved = tmp_path / "elsewhere" / "pipeline"
    shutil.copytree(chain, moved)
    shutil.rmtree(chain)
    for name in ("1-sft", "2-reward", "3-dpo"):
        source = resolve_model(str(moved / name))
        assert all(str(a).startswith(str(moved)) for a in source.adapters), source.adapters
        model = load_reward_model(source) if source.task == "reward" else load_policy(source)
        assert sum(p.numel() for p in model.parameters()) > 0
    assert len(resolve_model(str(moved / "3-dpo")).adapters) == 2  # sft's adapter, then dpo's
    out = runs.read_manifest(moved / "3-dpo")["outputs"]["model"]
    assert out["base_run"] == "../1-sft" and out["base"] == str(chain / "1-sft")
    assert out["base_manifest_sha256"] == runs.hash_file(moved / "1-sft" / runs.MANIFEST)

    # A different run standing where the base was is refused, not loaded under the adapter.
    manifest = json.loads((moved / "1-sft" / runs.MANIFEST).read_text())
    manifest["notes"]["edited"] = True
    (moved / "1-sft" / runs.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(AlignError, match="not the run this adapter was trained on"):
        resolve_model(str(moved / "3-dpo"))


@pytest.mark.slow
def test_converting_the_embedded_model_shows_progress(tmp_path, monkeypatch, capsys):
    """The one-off GGUF -> Hugging Face conversion (~35 s) shows a bar over its steps."""
    from align.model_cache import embedded_model_dir

    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path))
    path = embedded_model_dir()
    err = capsys.readouterr().err
    assert (path / "model.safetensors").exists() and str(path).startswith(str(tmp_path))
    assert "converting SmolLM2-135M-Instruct from GGUF" in err and "3/3" in err, err[-2000:]
