"""`hf:<org>/<name>?split=&subset=&revision=` data references, read through datasets.load_dataset.

No hub is reachable here, so nothing is mocked instead: a dataset repository is written to disk
(data files, optionally a README with YAML `configs:`) and loaded with `load_dataset` once, which
writes a real datasets cache entry; that entry is then moved to where datasets keeps a hub dataset
`org/name` (<cache>/org___name/<subset>/<version>/<commit>/name-<split>.arrow, the layout
datasets.packaged_modules.cache looks up offline). With offline mode on, `hf:org/name` then
resolves through datasets' own offline cache lookup, exactly as it would after a real download.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from align.core import hub, runs
from align.core.config import load_config
from align.core.errors import AlignError
from align.data.preferences import load_preference_pairs
from align.data.prompts import load_prompts
from align.data.records import data_exists, read_records
from tests.conftest import write_jsonl

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_ROOT = Path(__file__).resolve().parents[2]


def hh_rows(repo_data, n):
    with gzip.open(repo_data / "preferences" / "hh_rlhf_harmless_base_test.jsonl.gz", "rt") as f:
        return [json.loads(next(f)) for _ in range(n)]


def dataset_repo(root: Path, name: str, files: dict[str, list], readme: str | None = None) -> Path:
    """A dataset repository as it is on the hub (or after `hf download --local-dir`)."""
    repo = root / name
    for rel, rows in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(repo / rel, rows)
    if readme:
        (repo / "README.md").write_text(readme)
    return repo


def cache_as_hub(repo: Path, repo_id: str, cache: Path, subsets=(None,), commit: str | None = COMMIT) -> None:
    """Load `repo` through load_dataset (a real cache entry), then put the entry where datasets keeps
    hub dataset `repo_id`, its commit as the hash directory, as a download of that commit leaves it."""
    import datasets

    for subset in subsets:
        datasets.load_dataset(str(repo), subset)
    org, name = repo_id.split("/")
    assert repo.name == name  # the arrow files are named <name>-<split>.arrow, as the hub loader names them
    target = cache / f"{org}___{name}"
    shutil.move(str(cache / name), str(target))
    if commit:
        for hash_dir in target.glob("*/*/*"):
            if hash_dir.is_dir():
                hash_dir.rename(hash_dir.parent / commit)


@pytest.fixture
def datasets_home(tmp_path, monkeypatch):
    """An empty datasets cache in force for this process, offline (datasets reads both at import)."""
    import datasets

    cache = tmp_path / "hf_home" / "datasets"
    cache.mkdir(parents=True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def cached_pairs(tmp_path, datasets_home, repo_data):
    """`org/pairs` in the datasets cache: 12 HH-RLHF pairs for train, 4 for test."""
    rows = hh_rows(repo_data, 16)
    repo = dataset_repo(tmp_path / "src", "pairs", {"train.jsonl": rows[:12], "test.jsonl": rows[12:]})
    cache_as_hub(repo, "org/pairs", datasets_home)
    return rows


MULTI_README = """---
configs:
- config_name: pairs
  data_files:
  - split: train
    path: pairs/train.jsonl
  - split: test
    path: pairs/test.jsonl
- config_name: prompts
  data_files:
  - split: train
    path: prompts/train.jsonl
---
# two subsets
"""


@pytest.fixture
def multi_repo(tmp_path):
    pair = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}
    return dataset_repo(
        tmp_path / "src",
        "multi",
        {
            "pairs/train.jsonl": [pair] * 3,
            "pairs/test.jsonl": [pair],
            "prompts/train.jsonl": [{"prompt": "Name a colour."}, {"prompt": "Count to three."}],
        },
        MULTI_README,
    )


# -- the reference ----------------------------------------------------------------------------------


def test_reference_defaults_to_the_train_split_and_reads_every_option():
    assert hub.parse("hf:trl-lib/hh-rlhf-helpful-base") == hub.HubDataset("trl-lib/hh-rlhf-helpful-base", "train")
    ref = hub.parse("hf:org/name?split=test[:10]&subset=pairs&revision=v1.0")
    assert (ref.id, ref.split, ref.subset, ref.revision, ref.local) == ("org/name", "test[:10]", "pairs", "v1.0", False)
    assert hub.parse(ref.text) == ref
    assert hub.parse("hf:./downloads/name?split=test").local


@pytest.mark.parametrize(
    "text, says",
    [
        ("hf:", "names no dataset"),
        ("hf:org/name/extra", "not a hub dataset id"),
        ("hf:org/name?splt=test", "did you mean 'split'"),
        ("hf:org/name?split=", "has no value"),
        ("hf:org/name?split=a&split=b", "given twice"),
        ("hf:./dir?revision=main", "no revisions"),
    ],
)
def test_a_malformed_reference_is_one_line(text, says):
    with pytest.raises(AlignError, match=says) as err:
        hub.parse(text)
    assert "\n" not in str(err.value)


# -- a dataset repository on disk (same load_dataset path as a download) -----------------------------


def test_a_dataset_repository_on_disk_reads_its_splits_and_subsets(multi_repo):
    rows = list(read_records(f"hf:{multi_repo}?subset=pairs&split=test"))
    assert rows == [(f"hf:{multi_repo}[test]:0", {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."})]
    prompts = [r["prompt"] for _, r in read_records(f"hf:{multi_repo}?subset=prompts")]
    assert prompts == ["Name a colour.", "Count to three."]
    assert len(load_prompts(f"hf:{multi_repo}?subset=prompts", limit=1)) == 1  # what align generate/ppo read


@pytest.mark.parametrize(
    "query, says",
    [
        ("?subset=pairs&split=validation", "has no split 'validation'; available: train, test"),
        ("?subset=pair", "has no subset 'pair' (did you mean 'pairs'?); available: pairs, prompts"),
        ("", "has several subsets; choose one with ?subset=NAME: pairs, prompts"),
    ],
)
def test_wrong_split_or_subset_lists_the_available_ones(multi_repo, query, says):
    with pytest.raises(AlignError) as err:
        list(read_records(f"hf:{multi_repo}{query}"))
    assert says in str(err.value) and "\n" not in str(err.value)


# -- a hub id from the datasets cache, offline -------------------------------------------------------


def test_hub_id_resolves_from_the_cache_offline(cached_pairs):
    rows = list(read_records("hf:org/pairs"))
    assert [r for _, r in rows] == cached_pairs[:12]
    assert rows[0][0] == "hf:org/pairs[train]:0" and rows[-1][0] == "hf:org/pairs[train]:11"
    test = load_preference_pairs("hf:org/pairs?split=test")
    assert len(test.rows) == 4
    assert data_exists("hf:org/pairs?split=test") and not data_exists("hf:org/absent")


def test_a_local_folder_named_like_the_id_does_not_shadow_the_hub_dataset(cached_pairs, tmp_path, monkeypatch):
    (tmp_path / "cwd" / "org" / "pairs").mkdir(parents=True)
    write_jsonl(
        tmp_path / "cwd" / "org" / "pairs" / "train.jsonl", [{"prompt": "local", "chosen": "a", "rejected": "b"}]
    )
    monkeypatch.chdir(tmp_path / "cwd")
    assert [r for _, r in read_records("hf:org/pairs")] == cached_pairs[:12]


def test_wrong_split_or_subset_offline_lists_what_the_cache_has(cached_pairs):
    with pytest.raises(AlignError, match=r"has no split 'tset' \(did you mean 'test'\?\); available: train, test"):
        list(read_records("hf:org/pairs?split=tset"))
    with pytest.raises(AlignError, match=r"has no subset 'other' in the local cache; available: default"):
        list(read_records("hf:org/pairs?subset=other"))


def test_a_commit_other_than_the_cached_one_is_refused_offline(cached_pairs):
    other = "f" * 40
    with pytest.raises(AlignError, match=f"asked for revision {other}, but the local cache holds {COMMIT}"):
        list(read_records(f"hf:org/pairs?revision={other}"))
    assert len(list(read_records(f"hf:org/pairs?revision={COMMIT}"))) == 12


def test_manifest_record_names_the_hub_dataset_and_hashes_its_rows(cached_pairs, datasets_home):
    record = runs.describe_input("hf:org/pairs?split=test")
    arrow = datasets_home / "org___pairs" / "default" / "0.0.0" / COMMIT / "pairs-test.arrow"
    assert record == {
        "kind": "hub-dataset",
        "ref": "hf:org/pairs?split=test",
        "id": "org/pairs",
        "subset": "default",
        "split": "test",
        "revision": None,
        "resolved_revision": COMMIT,
        "rows": 4,
        "sha256": hub._hash_files([arrow]),
        "sha256_of": "arrow cache files of the split",
        "fingerprint": record["fingerprint"],
    }
    assert "path" not in record  # no local path invented for a hub dataset
    assert record["sha256"] != runs.describe_input("hf:org/pairs")["sha256"]


# -- no network, no cache: the command line ----------------------------------------------------------


def align_cli(args, env_extra, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(env_extra, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "align", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_no_network_and_no_cache_is_exit_2_with_one_line_saying_how_to_give_a_copy(tmp_path, tiny_model):
    out = align_cli(
        ["sft", f"model={tiny_model}", "data.train=hf:org/absent?split=train", "--dry-run"],
        {"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"},
        tmp_path,
    )
    errors = [line for line in out.stderr.splitlines() if line.startswith("align: error:")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in out.stderr
    line = errors[0]
    assert "dataset 'hf:org/absent' is not in the local datasets cache" in line
    assert "the hub cannot be reached (offline mode is on)" in line
    assert "`hf download org/absent --repo-type dataset --local-dir DIR`" in line and "HF_HOME" in line


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sft_dry_run_reads_the_hub_dataset_from_HF_HOME(tmp_path, datasets_home, cached_pairs, tiny_model):
    # The cache prepared in this process, used by a fresh `align` process through HF_HOME alone.
    home = datasets_home.parent
    out = align_cli(
        [
            "sft",
            f"model={tiny_model}",
            "data.train=hf:org/pairs",
            "data.format=preference-chosen",
            "data.test_fraction=0",
            "--dry-run",
        ],
        {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"},
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "train: hf:org/pairs" in out.stdout and "records_read: 12" in out.stdout


@pytest.mark.slow
def test_reward_run_records_the_hub_dataset_in_its_manifest(tmp_path, cached_pairs, tiny_model):
    from align.stages import reward

    manifest = reward.run(
        load_config(
            reward.Config,
            None,
            [
                f"model={tiny_model}",
                "data.train=hf:org/pairs",
                "data.test=hf:org/pairs?split=test",
                f"runs_dir={tmp_path / 'runs'}",
                "max_length=128",
                "training.max_steps=1",
                "training.per_device_train_batch_size=2",
                "training.logging_steps=1",
            ],
        )
    )
    on_disk = runs.read_manifest(manifest["path"])
    inputs = {i["role"]: i for i in on_disk["inputs"]}
    assert inputs["data.train"]["kind"] == "hub-dataset" and inputs["data.train"]["rows"] == 12
    assert (
        inputs["data.test"]["ref"] == "hf:org/pairs?split=test" and inputs["data.test"]["resolved_revision"] == COMMIT
    )
    assert inputs["data.train"]["sha256"] == runs.describe_input("hf:org/pairs")["sha256"]
    lines = runs.lineage(manifest["path"])
    assert any(f"data.train: hub-dataset hf:org/pairs?split=train  (12 rows, revision {COMMIT}" in l for l in lines)


def test_upstream_split_check_finds_a_hub_dataset_again_by_its_reference(cached_pairs, multi_repo, monkeypatch):
    from align.data import splits

    record = runs.describe_input("hf:org/pairs")
    assert splits._locate(record, "elsewhere.jsonl") == ("hf:org/pairs?split=train", "")
    changed = {**record, "sha256": "0" * 64}
    assert "hf:org/pairs?split=train is gone or has changed" in splits._locate(changed, "elsewhere.jsonl")[1]
    # A repository on disk is recorded by its absolute path: found again from another directory.
    monkeypatch.chdir(multi_repo.parent)
    local = runs.describe_input("hf:./multi?subset=prompts")
    assert local["kind"] == "dataset-repo" and local["path"] == str(multi_repo) and local["rows"] == 2
    monkeypatch.chdir(multi_repo)
    assert splits._locate(local, "elsewhere.jsonl") == (f"hf:{multi_repo}?split=train&subset=prompts", "")
