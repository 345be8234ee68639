"""Sharded Parquet datasets: atomic part writes, per-part fingerprints, a manifest written last.

Layout: `{run_dir}/{dataset}/v{N}/part-{i:05d}.parquet` plus `_manifest.json`.

- A part is complete when its file exists: it is written under a temp name in the same folder and
  renamed, so a killed run never leaves a file a later run would read as complete.
- Each part carries, in its Parquet key-value metadata, the fingerprint of what produced it (its
  `Provenance`: stage config hash, input hashes, code version) and its stats. A re-run skips a
  part whose fingerprint matches and rewrites it otherwise, and still knows the skipped part's
  stats for the manifest.
- The dataset is complete when `_manifest.json` exists; it is deleted when a stage starts writing
  and written after the last part, so readers never see a half-written dataset as complete.
- Outputs are verified before they are trusted: the manifest records each part's size, rows and
  sha256. A stage that finds its dataset complete (`is_complete` with its fingerprint) checks each part
  cheaply (size, Parquet footer, rows); a damaged or missing part is deleted with the manifest, so the
  stage rebuilds it, and the new manifest lists what was rebuilt. `damaged_parts(full=True)` also
  compares checksums (`trelm verify --full`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from storage.errors import InputError
from storage.schemas import CHECKPOINT_DATASETS, DATASETS, DatasetSchema

MANIFEST = "_manifest.json"
REBUILT = "_rebuilt.json"  # the damaged parts a stage is rebuilding: moved into the next manifest
_FINGERPRINT_KEY = "trelm.fingerprint"
_STATS_KEY = "trelm.stats"
_ERRORS_KEY = "trelm.errors"
_MAX_MANIFEST_ERRORS = 1000
T = TypeVar("T")
log = logging.getLogger(__name__)


class IncompleteDatasetError(InputError, FileNotFoundError):
    """A dataset without a manifest: its stage has not finished (or never ran)."""


class DamagedDatasetError(InputError):
    """A complete dataset whose parts no longer match its manifest (deleted, cut, overwritten)."""


def is_loss_stat(name: str) -> bool:
    """The one naming rule for stats: a stat that counts input a stage lost (dropped or skipped, by
    reason) has `dropped` or `skipped` as a word of its name (`skipped_namespace`, `dropped_low_si`,
    `triple_lines_dropped_malformed`); anything else counts what was made or kept."""
    return bool({"dropped", "skipped"} & set(name.replace(":", "_").split("_")))


def stable_hash(obj: object) -> str:
    """A short content hash of JSON-able data (sorted keys, so dict order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def atomic_write(path: Path, write: Callable[[Path], T]) -> T:
    """`write(tmp)` fills a temp file beside `path`, which is then renamed: readers see the old file or
    the new one, never a prefix (a writer that streams, e.g. `torch.save`, needs no copy in memory).
    The one place in the project that publishes a file; returns what `write` returned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        result = write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def part_index(path: Path | str) -> int:
    """The index in a part's file name (`part-00012.parquet` -> 12): the inverse of `part_name`."""
    stem = Path(path).name.removesuffix(".parquet")
    if not stem.startswith("part-") or not stem[5:].isdigit():
        raise ValueError(f"{path}: not a part file (part-NNNNN.parquet)")
    return int(stem[5:])


@dataclass(frozen=True)
class Provenance:
    """What a dataset was made from: its stage config, its inputs' hashes and the stage's code."""

    config_hash: str
    inputs: tuple[tuple[str, str], ...]  # (input name, content hash or manifest hash), in order
    code_version: str

    @property
    def fingerprint(self) -> str:
        return stable_hash([self.config_hash, self.inputs, self.code_version])

    def as_dict(self) -> dict:
        return {
            "config_hash": self.config_hash,
            "inputs": dict(self.inputs),
            "code_version": self.code_version,
        }


@dataclass
class PartInfo:
    name: str
    rows: int
    bytes: int
    fingerprint: str
    stats: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    sha256: str = ""  # known once written (a part kept from an earlier run is hashed at finalize)


class ShardWriter:
    """Writes the parts of one dataset version and, last, its manifest."""

    def __init__(
        self,
        run_dir: Path,
        dataset: DatasetSchema,
        provenance: Provenance,
        compression: str = "zstd",
        level: int = 3,
    ):
        self.dataset = dataset
        self.compression = compression
        self.dir = Path(run_dir) / dataset.folder
        self.provenance = provenance
        self.fingerprint = provenance.fingerprint
        self.level = level if compression == "zstd" else None
        self.dir.mkdir(parents=True, exist_ok=True)

    def open(self) -> ShardWriter:
        """Mark the dataset incomplete before any part changes; sweep temp files of killed runs."""
        (self.dir / MANIFEST).unlink(missing_ok=True)
        for litter in self.dir.glob(".part-*.tmp-*"):
            litter.unlink(missing_ok=True)
        return self

    def part_path(self, index: int) -> Path:
        return self.dir / part_name(index)

    def done_part(self, index: int, part_fingerprint: str | None = None) -> PartInfo | None:
        """The part's info if it exists and was made from the same inputs, config and code."""
        path = self.part_path(index)
        if not path.exists():
            return None
        try:
            info = read_part_info(path)
        except (pa.ArrowInvalid, OSError):
            return None  # a foreign or damaged file: rewrite it
        return info if info.fingerprint == self._part_fingerprint(part_fingerprint) else None

    def write_part(
        self,
        index: int,
        batches: Iterable[pa.RecordBatch | pa.Table],
        stats: Mapping[str, int] | None = None,
        errors: list[str] | None = None,
        part_fingerprint: str | None = None,
    ) -> PartInfo:
        """Stream record batches into one part (a row group per batch), then rename it into place.

        `stats` and `errors` are read after `batches` is exhausted, so a generator can fill them.
        """
        path = self.part_path(index)
        info = PartInfo(path.name, 0, 0, self._part_fingerprint(part_fingerprint))
        atomic_write(path, lambda tmp: self._write_parquet(tmp, batches, info, stats, errors))
        info.bytes = path.stat().st_size
        info.sha256 = file_sha256(path)
        return info

    def _write_parquet(self, tmp: Path, batches, info: PartInfo, stats, errors) -> None:
        schema = self.dataset.schema
        with pq.ParquetWriter(tmp, schema, compression=self.compression, compression_level=self.level) as w:
            for batch in batches:
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                w.write_table(table.cast(schema))
                info.rows += table.num_rows
            info.stats, info.errors = dict(stats or {}), list(errors or [])
            w.add_key_value_metadata(_info_metadata(info))

    def finalize(
        self,
        parts: list[PartInfo],
        stats: Mapping[str, object] | None = None,
        extra: Mapping[str, object] = (),
    ) -> dict:
        """Delete parts this run did not produce, then write the manifest (the completion mark)."""
        keep = {p.name for p in parts}
        for stale in self.dir.glob("part-*.parquet"):
            if stale.name not in keep:
                stale.unlink()
        merged = Counter()
        for p in parts:
            merged.update(p.stats)
        merged.update(dict(stats or {}))
        manifest = {
            "dataset": self.dataset.name,
            "schema_version": self.dataset.version,
            "fingerprint": self.fingerprint,
            **self.provenance.as_dict(),
            "rows": sum(p.rows for p in parts),
            "parts": [self._part_entry(p) for p in sorted(parts, key=lambda p: p.name)],
            "stats": dict(sorted(merged.items())),
            "errors": [e for p in parts for e in p.errors][:_MAX_MANIFEST_ERRORS],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **self._rebuilt(),
            **dict(extra),
        }
        atomic_write_bytes(self.dir / MANIFEST, json.dumps(manifest, indent=2).encode())
        (self.dir / REBUILT).unlink(missing_ok=True)
        return manifest

    def _part_entry(self, p: PartInfo) -> dict:
        sha256 = p.sha256 or file_sha256(self.dir / p.name)
        return {"name": p.name, "rows": p.rows, "bytes": p.bytes, "sha256": sha256}

    def _rebuilt(self) -> dict:
        """`{"rebuilt": [...]}`: the damaged parts this run replaced (see `reopen_damaged`), if any."""
        try:
            return {"rebuilt": json.loads((self.dir / REBUILT).read_text())}
        except (OSError, ValueError):
            return {}

    def _part_fingerprint(self, part_fingerprint: str | None) -> str:
        return stable_hash([self.fingerprint, part_fingerprint])


def write_table(
    run_dir: Path,
    dataset: DatasetSchema,
    provenance: Provenance,
    table: pa.Table,
    stats: Mapping[str, object] | None = None,
    extra: Mapping[str, object] = (),
) -> dict:
    """A single-part dataset in one call (its one part, then the manifest); returns the manifest."""
    writer = ShardWriter(run_dir, dataset, provenance).open()
    return writer.finalize([writer.write_part(0, [table])], stats=stats, extra=extra)


def write_batches(
    run_dir: Path,
    dataset: DatasetSchema,
    provenance: Provenance,
    batches: Iterable[pa.RecordBatch],
    stats: Mapping[str, object] | None = None,
    rows_per_part: int = 1_000_000,
) -> dict:
    """A dataset from a stream of record batches (a DuckDB query's reader) in one call (`write_parts`,
    then the manifest); the manifest."""
    writer = ShardWriter(run_dir, dataset, provenance).open()
    return writer.finalize(write_parts(writer, batches, rows_per_part), stats=stats)


def write_parts(writer: ShardWriter, batches: Iterable[pa.RecordBatch], rows_per_part: int) -> list[PartInfo]:
    """Stream record batches into parts of `rows_per_part` rows (the last may be shorter; one empty
    part for no rows). groupby is lazy: each part drains its batches before the next one is read, so no
    more than a batch is held."""
    parts = [
        writer.write_part(index, (batch for _, batch in group))
        for index, group in groupby(_cut(batches, rows_per_part), key=itemgetter(0))
    ]
    return parts or [empty_part(writer)]


def empty_part(writer: ShardWriter) -> PartInfo:
    """The one part of a dataset with no rows (its schema, so that readers still see the columns)."""
    return writer.write_part(0, [writer.dataset.schema.empty_table()])


def _cut(batches: Iterable[pa.RecordBatch], rows_per_part: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(part number, batch) with no batch straddling two parts."""
    done = 0
    for batch in batches:
        while batch.num_rows:
            room = rows_per_part - done % rows_per_part
            head, batch = batch.slice(0, room), batch.slice(room)
            yield done // rows_per_part, head
            done += head.num_rows


def _info_metadata(info: PartInfo) -> dict[str, str]:
    return {
        _FINGERPRINT_KEY: info.fingerprint,
        _STATS_KEY: json.dumps(info.stats),
        _ERRORS_KEY: json.dumps(info.errors),
    }


def read_part_info(path: Path) -> PartInfo:
    meta = pq.read_metadata(path)
    kv = {k.decode(): v.decode() for k, v in (meta.metadata or {}).items()}
    return PartInfo(
        path.name,
        meta.num_rows,
        path.stat().st_size,
        kv.get(_FINGERPRINT_KEY, ""),
        json.loads(kv.get(_STATS_KEY, "{}")),
        json.loads(kv.get(_ERRORS_KEY, "[]")),
    )


def dataset_dir(run_dir: Path, dataset: DatasetSchema) -> Path:
    return Path(run_dir) / dataset.folder


def read_manifest(run_dir: Path, dataset: DatasetSchema) -> dict:
    path = dataset_dir(run_dir, dataset) / MANIFEST
    if not path.exists():
        raise IncompleteDatasetError(
            f"dataset {dataset.name!r} is not complete in {Path(run_dir)} (no {MANIFEST})",
            fix="run the stage that writes it first",
        )
    return json.loads(path.read_text())


def is_complete(run_dir: Path, dataset: DatasetSchema, fingerprint: str | None = None) -> bool:
    """Whether the dataset has its manifest (and, given a fingerprint, was made from it). Given its
    fingerprint, the caller is the stage that writes it: parts that fail the cheap check are taken
    back (`reopen_damaged`), and the dataset is then not complete, so that the stage rebuilds them."""
    try:
        manifest = read_manifest(run_dir, dataset)
    except IncompleteDatasetError:
        return False
    if fingerprint is None:
        return True
    if manifest["fingerprint"] != fingerprint:
        return False
    problems = damaged_parts(run_dir, dataset)
    if problems:
        reopen_damaged(run_dir, dataset, problems)
    return not problems


@dataclass(frozen=True)
class PartProblem:
    """A part that does not match its manifest entry, and how."""

    name: str
    problem: str

    def __str__(self) -> str:
        return f"{self.name}: {self.problem}"


def damaged_parts(run_dir: Path, dataset: DatasetSchema, full: bool = False) -> list[PartProblem]:
    """The manifest's parts that are missing, of another size, without a readable footer or with other
    rows; `full` also reads each part for its checksum. Empty when all match (or for no manifest)."""
    try:
        manifest = read_manifest(run_dir, dataset)
    except IncompleteDatasetError:
        return []
    folder = dataset_dir(run_dir, dataset)
    found = (_part_problem(folder / entry["name"], entry, full) for entry in manifest["parts"])
    return [p for p in found if p is not None]


def _part_problem(path: Path, entry: dict, full: bool) -> PartProblem | None:
    if not path.exists():
        return PartProblem(path.name, "missing")
    size = path.stat().st_size
    if size != entry.get("bytes", size):
        return PartProblem(path.name, f"{size} bytes, the manifest says {entry['bytes']}")
    try:
        rows = pq.read_metadata(path).num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        return PartProblem(path.name, f"unreadable Parquet footer ({exc})")
    if rows != entry["rows"]:
        return PartProblem(path.name, f"{rows} rows, the manifest says {entry['rows']}")
    if full and entry.get("sha256") and file_sha256(path) != entry["sha256"]:
        return PartProblem(path.name, "sha256 differs from the manifest's")
    return None


def reopen_damaged(run_dir: Path, dataset: DatasetSchema, problems: list[PartProblem]) -> None:
    """Take a damaged dataset back: its damaged parts and its manifest are deleted (what they were is kept
    in `_rebuilt.json` for the next manifest), so that its stage rebuilds exactly those parts."""
    folder = dataset_dir(run_dir, dataset)
    log.warning(
        "%s in %s: rebuilding damaged parts: %s", dataset.name, run_dir, "; ".join(map(str, problems))
    )
    atomic_write_text(folder / REBUILT, json.dumps([str(p) for p in problems]))
    for problem in problems:
        (folder / problem.name).unlink(missing_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)


def verify_run(run_dir: Path, full: bool = False) -> dict[str, list[PartProblem] | None]:
    """Every run dataset checked against its manifest: its problems (empty: intact), None: not complete."""
    return {
        name: damaged_parts(run_dir, dataset, full) if is_complete(run_dir, dataset) else None
        for name, dataset in DATASETS.items()
        if name not in CHECKPOINT_DATASETS
    }


def is_intact(run_dir: Path, dataset: DatasetSchema) -> bool:
    """Complete, and every part passes the cheap check (what a cache may trust); changes nothing."""
    return is_complete(run_dir, dataset) and not damaged_parts(run_dir, dataset)


def require_intact(run_dir: Path, dataset: DatasetSchema, stage: str) -> None:
    """For a stage's input: a clear error naming the damaged parts and the stage that rebuilds them."""
    problems = damaged_parts(run_dir, dataset)
    if problems:
        raise DamagedDatasetError(
            f"dataset {dataset.name!r} in {Path(run_dir)} is damaged: {'; '.join(map(str, problems))} "
            f"(in {dataset_dir(run_dir, dataset)})",
            fix=f"run `trelm {stage}` again: it rebuilds the damaged parts",
        )


def part_paths(run_dir: Path, dataset: DatasetSchema) -> list[Path]:
    """The parts listed by the manifest (never a stray or in-flight file)."""
    manifest = read_manifest(run_dir, dataset)
    return [dataset_dir(run_dir, dataset) / p["name"] for p in manifest["parts"]]


def iter_batches(
    path: Path, columns: list[str] | None = None, batch_size: int = 1024
) -> Iterable[pa.RecordBatch]:
    """Stream one part in record batches (bounded memory even for parts of long articles)."""
    yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)
