"""Reading records from a user's files, whatever the container.

`read_records(path)` yields `(where, record)` pairs where `where` is a `file:line` (or `file:row`)
string for error messages. Containers: JSON Lines (optionally .gz), a JSON array, Parquet, CSV/TSV
(header row), plain text (one string per line), a `datasets` directory saved with `save_to_disk`, and
an align run directory (its `output` named by the caller). No file name is special-cased: what a
file holds is decided by its extension and its fields, never by its name.

A Hugging Face dataset is named with `hf:<org>/<name>?split=<split>&subset=<config>&revision=<rev>`
(split defaults to `train`; subset and revision are optional), e.g.
`data.train=hf:trl-lib/hh-rlhf-helpful-base?split=train`. It is read with `datasets.load_dataset`
through its cache (HF_HOME / HF_DATASETS_CACHE), offline from that cache under HF_HUB_OFFLINE=1 or
HF_DATASETS_OFFLINE=1, and its rows come as `hf:<name>[<split>]:<row>` (row counted from 0). `hf:DIR`
names a downloaded dataset repository on disk. See `align.core.hub`.

A file that cannot be read (a `.gz` that is not gzip or is cut short, text that is not UTF-8, a CSV
with NUL bytes, a truncated Parquet file...) is an AlignError naming the file and, where known, the
line: every reader goes through `read_records`, which turns these into one line and exit code 2.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from align.core import hub, runs
from align.core.errors import AlignError

# A huge CSV field (a long conversation) must not stop the reader.
csv.field_size_limit(1 << 30)

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".csv", ".tsv", ".txt")


def resolve_data_path(path: str | Path, run_output: str | None = None) -> Path:
    """A data file or directory; for an align run directory, the file of its `run_output` output."""
    p = Path(path).expanduser()
    if not p.exists():
        raise AlignError(
            f"data not found: {path} (give a JSONL/Parquet/CSV file, a datasets directory, a run directory "
            "or a hub dataset as hf:<org>/<name>?split=train)"
        )
    if runs.is_run(p):
        manifest = runs.read_manifest(p)
        names = [run_output] if run_output else []
        for name in names + [n for n in manifest.get("outputs", {}) if n not in names]:
            out = manifest["outputs"].get(name)
            if out and not out.get("path", "").endswith("/") and (p / out["path"]).is_file():
                return p / out["path"]
        raise AlignError(f"run {p} (stage {manifest.get('stage')}) has no data output to read")
    return p


# What a damaged or mis-named file raises while being read: a .gz that is not gzip (BadGzipFile, an
# OSError), one cut short (EOFError), corrupt deflate data (zlib.error), bytes that are not UTF-8, a
# CSV with NUL bytes (csv.Error).
UNREADABLE = (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error)


def data_exists(path: str | Path) -> bool:
    """Whether a data option names something readable: an existing path or a loadable `hf:` dataset."""
    return hub.exists(path) if hub.is_reference(path) else Path(path).expanduser().exists()


def read_records(path: str | Path, run_output: str | None = None) -> Iterator[tuple[str, Any]]:
    if hub.is_reference(path):
        yield from hub.read(str(path))
        return
    p = resolve_data_path(path, run_output)
    last = None
    try:
        for where, record in _records(p):
            last = where
            yield where, record
    except UNREADABLE as exc:
        after = f" after {last}" if last else ""
        raise AlignError(f"{p}: cannot read the file{after}: {unreadable_reason(exc)}") from None


def unreadable_reason(exc: BaseException) -> str:
    """A short reason for one of the UNREADABLE errors, with the fix where there is an obvious one."""
    if isinstance(exc, gzip.BadGzipFile):
        return "not a gzip file although its name ends in .gz (rename it or compress it with gzip)"
    if isinstance(exc, EOFError):
        return "the compressed file ends early (truncated download or copy?)"
    if isinstance(exc, zlib.error):
        return f"corrupt compressed data ({exc})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); convert it to UTF-8"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _records(p: Path) -> Iterator[tuple[str, Any]]:
    name = p.name.lower()
    if p.is_dir():
        yield from _read_datasets_dir(p)
    elif name.endswith(".jsonl") or name.endswith(".jsonl.gz") or name.endswith(".ndjson"):
        yield from _read_jsonl(p)
    elif name.endswith(".json"):
        yield from _read_json_array(p)
    elif name.endswith(".parquet"):
        yield from _read_parquet(p)
    elif name.endswith(".csv") or name.endswith(".tsv") or name.endswith(".csv.gz") or name.endswith(".tsv.gz"):
        yield from _read_csv(p, delimiter="\t" if ".tsv" in name else ",")
    elif name.endswith(".txt"):
        yield from _read_text(p)
    else:
        raise AlignError(f"{p}: unknown data file type; use one of {', '.join(SUFFIXES)} or a datasets directory")


def _lines(p: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, optionally gzipped; decoded line by line so an
    encoding error names its line. A NUL byte is an error: Python's csv module would pass it on
    inside a field, and it means a binary or UTF-16 file."""
    with gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if b"\0" in raw:
                raise AlignError(f"{p}:{lineno}: contains a NUL byte (a binary or UTF-16 file?); give UTF-8 text")
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AlignError(f"{p}:{lineno}: {unreadable_reason(exc)}") from None


def _read_jsonl(p: Path) -> Iterator[tuple[str, Any]]:
    for lineno, line in _lines(p):
        if not line.strip():
            continue
        try:
            yield f"{p}:{lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise AlignError(f"{p}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None


def _read_json_array(p: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(p.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise AlignError(f"{p}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(data, dict):
        # {"train": [...]} or {"data": [...]}: take the single list inside.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise AlignError(f"{p}: a JSON file must hold a list of records (or an object with one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise AlignError(f"{p}: a JSON file must hold a list of records")
    for i, rec in enumerate(data):
        yield f"{p}[{i}]", rec


def _read_parquet(p: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as exc:
        raise AlignError(f"{p}: not a readable Parquet file ({exc})") from None
    for i, rec in enumerate(table.to_pylist()):
        yield f"{p}:row {i + 1}", rec


def _read_csv(p: Path, delimiter: str) -> Iterator[tuple[str, Any]]:
    # csv wants text lines; _lines decodes them one by one so a bad byte names its line.
    lines = (line for _, line in _lines(p))
    reader = csv.DictReader(lines, delimiter=delimiter)
    try:
        if not reader.fieldnames:
            raise AlignError(f"{p}: empty file (a header row is needed)")
        for rec in reader:
            yield f"{p}:{reader.line_num}", {k: v for k, v in rec.items() if k is not None}
    except csv.Error as exc:
        raise AlignError(f"{p}:{reader.line_num + 1}: not readable as CSV ({exc})") from None


def _read_text(p: Path) -> Iterator[tuple[str, Any]]:
    for lineno, line in _lines(p):
        if line.strip():
            yield f"{p}:{lineno}", line.rstrip("\r\n")


def _read_datasets_dir(p: Path) -> Iterator[tuple[str, Any]]:
    if not ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists() or (p / "state.json").exists()):
        raise AlignError(f"{p} is a directory but not a `datasets` save_to_disk directory or run directory")
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(p))
    except Exception as exc:  # datasets and pyarrow raise many types for a damaged directory
        raise AlignError(f"{p}: not a readable `datasets` directory ({type(exc).__name__}: {exc})") from None
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise AlignError(f"{p}: a DatasetDict needs a 'train' split (has: {', '.join(ds)})")
        ds = ds["train"]
    for i, rec in enumerate(ds):
        yield f"{p}:row {i + 1}", rec


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
