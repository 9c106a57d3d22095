"""Hugging Face datasets named in place of a data file: `hf:<org>/<name>?split=&subset=&revision=`.

Every data option accepts such a reference (records.read_records dispatches here), the way TRL's
own examples name their data:

    data.train=hf:trl-lib/hh-rlhf-helpful-base?split=train
    data.test=hf:org/name?split=test&subset=pairs&revision=<commit or tag>

- `split` defaults to `train`; datasets' slice syntax works (`split=train[:1000]`).
- `subset` is the dataset's configuration (`load_dataset(name, subset)`); needed only when the
  repository has several.
- `revision` is a branch, tag or commit of the dataset repository; unset = its default branch.
- `hf:./DIR`, `hf:/abs/DIR` or `hf:~/DIR` name a dataset repository on disk (a copy made with
  `hf download org/name --repo-type dataset --local-dir DIR`); split and subset work the same.

The dataset is read through `datasets.load_dataset`, so its cache (HF_DATASETS_CACHE, under HF_HOME)
is reused and offline mode (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1) reads the cached copy without
the network. Rows are yielded as `hf:<name>[<split>]:<row>` with `row` the index in the loaded split
(`dataset[row]`, counting from 0). In a run manifest a hub dataset is the input kind `hub-dataset`
(id, subset, split, revision asked and resolved, rows, content hash): never a local path.

This module lives in align/core because run manifests (core/runs.describe_input) describe these
inputs; `datasets` is imported only when a reference is read.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import logging
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.core.errors import AlignError, nearest

log = logging.getLogger(__name__)

PREFIX = "hf:"
QUERY_KEYS = ("split", "subset", "revision")
# Hub repository names: letters, digits, '-', '_', '.'; optionally under a user or organisation.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_LIST = re.compile(r"\[([^\]]*)\]")


@dataclass(frozen=True)
class HubDataset:
    """A parsed `hf:` reference."""

    id: str
    """`org/name` on the hub, or a dataset repository directory on disk (see `local`)."""
    split: str = "train"
    """Split to read (datasets' slice syntax allowed)."""
    subset: str | None = None
    """Dataset configuration name; None = the repository's only (or default) one."""
    revision: str | None = None
    """Branch, tag or commit asked for; None = the default branch."""

    @property
    def local(self) -> bool:
        """A dataset repository directory on disk rather than a hub id."""
        return self.id.startswith(("/", ".", "~"))

    @property
    def text(self) -> str:
        """The reference written back in its canonical form."""
        query = {k: v for k, v in (("split", self.split), ("subset", self.subset), ("revision", self.revision)) if v}
        return f"{PREFIX}{self.id}?{urllib.parse.urlencode(query, safe='[]:%/')}"

    @property
    def short(self) -> str:
        return f"{PREFIX}{self.id}"


def is_reference(value: Any) -> bool:
    """Whether a data option names a hub dataset (`hf:...`) rather than a local file."""
    return isinstance(value, str) and value.startswith(PREFIX)


def parse(text: str) -> HubDataset:
    """`hf:org/name?split=...` -> HubDataset, or an AlignError saying what is malformed."""
    body = text[len(PREFIX) :]
    name, _, query = body.partition("?")
    if not name:
        raise AlignError(f"'{text}' names no dataset; write hf:<org>/<name>[?split=train&subset=...&revision=...]")
    local = name.startswith(("/", ".", "~"))
    if not local and not _HUB_ID.match(name):
        raise AlignError(
            f"'{text}': '{name}' is not a hub dataset id (org/name); write hf:<org>/<name>, "
            "or hf:./DIR for a dataset repository on disk"
        )
    fields: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key not in QUERY_KEYS:
            raise AlignError(f"'{text}': unknown option '{key}'{nearest(key, QUERY_KEYS)}; use {', '.join(QUERY_KEYS)}")
        if key in fields:
            raise AlignError(f"'{text}': '{key}' is given twice")
        if not value:
            raise AlignError(f"'{text}': '{key}=' has no value")
        fields[key] = value
    if local and "revision" in fields:
        raise AlignError(f"'{text}': a dataset directory on disk has no revisions; drop revision= or name the hub id")
    return HubDataset(name, fields.get("split", "train"), fields.get("subset"), fields.get("revision"))


def read(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) for every row of the referenced split."""
    ref = parse(text)
    dataset = load(ref)
    for row, record in enumerate(dataset):
        yield f"{ref.short}[{ref.split}]:{row}", record


def exists(text: str) -> bool:
    """Whether the reference loads (from the cache offline); for checks that must not raise."""
    try:
        load(parse(text))
    except AlignError:
        return False
    return True


def describe(text: str) -> dict[str, Any]:
    """The run manifest's input record for a hub dataset (or a dataset repository on disk).

    `sha256` hashes the split's Arrow files in the datasets cache (each file's name and sha256, in
    order): the rows exactly as they were read, whichever way they were fetched. datasets' own
    `_fingerprint` is kept beside it, but it hashes the cache directory name and the split, not the
    rows, so it only tells revisions apart.
    """
    ref = parse(text)
    dataset = load(ref)
    files = [Path(f["filename"]) for f in dataset.cache_files]
    record: dict[str, Any] = {"kind": "hub-dataset", "ref": ref.text}
    if ref.local:  # recorded absolute, so a later stage run from elsewhere finds it again
        path = str(Path(ref.id).expanduser().resolve())
        record.update(kind="dataset-repo", ref=HubDataset(path, ref.split, ref.subset).text, path=path)
    else:
        record["id"] = ref.id
    record.update(
        subset=dataset.info.config_name if ref.subset is None else ref.subset,
        split=ref.split,
        revision=ref.revision,
        resolved_revision=resolved_revision(dataset),
        rows=len(dataset),
        sha256=_hash_files(files),
        sha256_of="arrow cache files of the split",
        fingerprint=dataset._fingerprint,
    )
    if ref.local:
        record.pop("revision")
        record.pop("resolved_revision")
    return record


def resolved_revision(dataset) -> str | None:
    """The commit the cached copy was built from, where datasets records it.

    datasets caches a hub dataset under <cache>/<org>___<name>/<subset>/<version>/<commit>/, the
    same directory online and offline; a dataset repository on disk gets a content hash there instead.
    """
    if not dataset.cache_files:
        return None
    name = Path(dataset.cache_files[0]["filename"]).parent.name
    return name if _COMMIT.match(name) else None


def load(ref: HubDataset):
    """The split as a `datasets.Dataset`, or a one-line AlignError that says how to get it."""
    import datasets

    # Memoised per process: reading the rows and describing them in the manifest see the same copy
    # even if the hub moves on in between. The key holds the cache and offline mode in force.
    offline = bool(datasets.config.HF_HUB_OFFLINE)
    dataset = _load(ref, str(datasets.config.HF_DATASETS_CACHE), offline)
    got = resolved_revision(dataset)
    if ref.revision and _COMMIT.match(ref.revision) and got and got != ref.revision:
        raise AlignError(
            f"dataset '{ref.short}' asked for revision {ref.revision}, but the local cache holds {got} and the hub "
            "cannot be reached; run where the hub is reachable, or drop revision= to use the cached copy"
        )
    if ref.revision and offline and got != ref.revision:
        log.warning(
            "%s: offline, so revision %s was not checked; read the cached copy (%s)",
            ref.short,
            ref.revision,
            got or "revision unknown",
        )
    return dataset


@functools.lru_cache(maxsize=16)
def _load(ref: HubDataset, cache: str, offline: bool):
    import datasets

    # `hf://datasets/` makes datasets look only at the hub (and its cache), never at a local
    # folder that happens to be called org/name.
    path = str(Path(ref.id).expanduser()) if ref.local else f"hf://datasets/{ref.id}"
    if ref.local and not Path(path).is_dir():
        raise AlignError(f"'{ref.short}': no such directory {path}; give a dataset repository folder")
    try:
        return datasets.load_dataset(path, ref.subset, split=ref.split, revision=ref.revision)
    except Exception as exc:  # datasets raises ValueError, ConnectionError, FileNotFoundError, its own errors...
        raise AlignError(_explain(ref, exc, cache, offline)) from None


def _explain(ref: HubDataset, exc: Exception, cache: str, offline: bool) -> str:
    """One line for what load_dataset raised: what was wrong, for which reference, how to fix it."""
    msg = str(exc)
    first = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
    choices = _listed(msg)
    which = f"dataset '{ref.short}'"
    if msg.startswith("Unknown split"):
        return f"{which} has no split '{ref.split}'{nearest(ref.split, choices)}; available: {', '.join(choices)} (give ?split=NAME)"
    if msg.startswith(("BuilderConfig", "Couldn't find cache for")) and ref.subset:
        where = " in the local cache" if "cache" in msg else ""
        return (
            f"{which} has no subset '{ref.subset}'{where}{nearest(ref.subset, choices)}; "
            f"available: {', '.join(choices) or 'none'} (give ?subset=NAME)"
        )
    if msg.startswith("Config name is missing"):
        return f"{which} has several subsets; choose one with ?subset=NAME: {', '.join(choices)}"
    if msg.startswith("There are multiple"):
        names = msg.split("cache:", 1)[1].splitlines()[0].strip() if "cache:" in msg else ""
        return f"{which} has several subsets in the local cache; choose one with ?subset=NAME: {names}"
    if isinstance(exc, ConnectionError) or (offline and isinstance(exc, FileNotFoundError) and not ref.local):
        why = "offline mode is on" if offline else first
        return (
            f"{which} is not in the local datasets cache ({cache}) and the hub cannot be reached ({why}); "
            f"download it where there is network (`hf download {ref.id} --repo-type dataset --local-dir DIR`) "
            f"and give hf:DIR in place of {ref.short} (same ?split=/?subset=), or set HF_HOME to a cache that has it"
        )
    if type(exc).__name__ == "DatasetNotFoundError":
        return (
            f"{which}: {first} (check the id; for a gated or private dataset log in with `hf auth login` "
            "or set HF_TOKEN)"
        )
    return f"{which} could not be loaded: {type(exc).__name__}: {first}"


def _listed(msg: str) -> list[str]:
    """The names in the first `[...]` list of a datasets error message."""
    match = _LIST.search(msg)
    if not match:
        return []
    try:
        names = ast.literal_eval(f"[{match.group(1)}]")
    except (ValueError, SyntaxError):
        return []
    return [str(n) for n in names]


def _hash_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    for file in files:
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        h.update(file.name.encode() + b"\0" + digest.hexdigest().encode() + b"\n")
    return h.hexdigest()
