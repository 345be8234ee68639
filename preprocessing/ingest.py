"""`trelm ingest`: pages-articles XML (or a Wikimedia Enterprise HTML dump) -> `pages` and `redirects`.

Two phases, each resumable part by part:

1. extract (parallel): each part is a run of bz2 streams (multistream + index) or a run of pages (one
   pass over a file without index); a worker process (of a local pool, or of a task runner's cluster
   through `submit`) decompresses, parses and cleans it and writes a staged `pages` part (link targets
   normalized but not yet resolved) and its `redirects` part.
2. resolve: link targets go through redirects (two hops, for double redirects) to a page id and,
   through `page_props`, to a QID. The title map of a full dump (17M titles) is a DuckDB table, so
   memory is bounded by DuckDB's limit rather than by a Python dict per worker.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from preprocessing import dumpfiles, htmldump
from preprocessing.config import IngestConfig
from preprocessing.dumpfiles import DumpFileError, StreamRange
from preprocessing.htmldump import add_html_article, is_enterprise_html
from preprocessing.pages import PageRows, add_page
from preprocessing.parallel import process_pool
from preprocessing.resolve import STAGED_PAGES, resolve_links
from preprocessing.templates import RenderOptions
from storage.code import module_code_version
from storage.schemas import PAGES, REDIRECTS
from storage.shards import (
    PartInfo,
    Provenance,
    ShardWriter,
    dataset_dir,
    is_complete,
    read_manifest,
    read_part_info,
    stable_hash,
)

log = logging.getLogger(__name__)




@dataclass(frozen=True)
class IngestInputs:
    """What one ingest reads: pages-articles files (with their indexes, if any) and page_props."""

    dumps: tuple[Path, ...]
    page_props: Path | None = None

    def hashes(self) -> tuple[tuple[str, str], ...]:
        """(file name, content hash) of every input, for the manifest and the cache keys."""
        files = [*self.dumps, *[dumpfiles.index_path_for(d) for d in self.dumps], self.page_props]
        return tuple((p.name, dumpfiles.file_hash(p)) for p in files if p is not None)


@dataclass(frozen=True)
class ExtractJob:
    """One part of phase 1: the streams to read, or the page XML strings already read."""

    index: int
    run_dir: Path
    provenance: Provenance
    part_fingerprint: str
    rows_per_row_group: int
    ranges: tuple[StreamRange, ...] = ()
    pages: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    lost: tuple[tuple[str, int], ...] = ()  # losses the planner met (one-pass reading), by reason
    html: bool = False  # `pages` are Enterprise HTML dump lines (JSON), not page XML
    render: RenderOptions = RenderOptions()


def inputs_for_run(dumps_dir: Path) -> IngestInputs:
    """The inputs of a downloaded run folder: its Enterprise HTML dumps if it holds any, else its
    pages-articles files."""
    props = sorted(dumps_dir.glob("*-page_props.sql.gz"))
    html = sorted(p for p in dumps_dir.glob(f"*{htmldump.SUFFIX}") if is_enterprise_html(p))
    dumps = html or dumpfiles.multistream_files(dumps_dir)
    return IngestInputs(tuple(dumps), props[0] if props else None)


def inputs_for_file(dump: Path) -> IngestInputs:
    """The inputs of a single local file; a `page_props.sql.gz` of the same run beside it is used too."""
    if not dump.is_file():
        raise DumpFileError(
            f"{dump}: {'a directory, not a file' if dump.is_dir() else 'no such file'}",
            fix="pass a pages-articles .xml or .xml.bz2, or an Enterprise HTML dump "
            "(*-ENTERPRISE-HTML.json.tar.gz), to --dump",
        )
    props = sorted(dump.parent.glob(f"{dumpfiles.run_name_for(dump)}-page_props.sql.gz"))
    return IngestInputs((dump,), props[0] if props else None)


def ingest_provenance(cfg: IngestConfig, inputs: IngestInputs) -> Provenance:
    # only the part size and the rendering change what is written; workers, row groups and memory do not
    config_hash = stable_hash(
        {
            "pages_per_part": cfg.pages_per_part,
            "html_part_mb": cfg.html_part_mb,
            "convert_output": cfg.convert_output,
        }
    )
    return Provenance(config_hash, inputs.hashes(), module_code_version(__name__))


def pages_read(manifest: dict) -> int:
    """Pages read from the dump: the articles kept, the redirects, and every page skipped by reason."""
    return manifest["rows"] + _not_articles(manifest["stats"])


def _not_articles(stats) -> int:
    """Pages read that are no article: the redirects and every page skipped by reason."""
    return stats.get("redirects", 0) + sum(v for k, v in stats.items() if k.startswith("skipped"))


def ingest(
    cfg: IngestConfig,
    inputs: IngestInputs,
    run_dir: Path,
    progress: bool = True,
    submit: Callable[[ExtractJob], Future] | None = None,
    in_flight: int | None = None,
) -> dict:
    """Run both phases; returns the `pages` manifest. Complete parts of an earlier run are kept.

    Phase 1 runs each part's `extract_part` in a local pool of `workers` processes, or through `submit`
    (a task runner's: `submit(job)` returns a future of its PartInfo), `in_flight` parts at a time."""
    provenance = ingest_provenance(cfg, inputs)
    if is_done(run_dir, provenance):
        return read_manifest(run_dir, PAGES)  # same inputs, config and code: nothing to do
    jobs = start(cfg, inputs, run_dir, provenance)
    bar = tqdm(desc="extract", unit="part", disable=not progress)
    if submit is None:
        with process_pool(cfg.workers, ["preprocessing.ingest"]) as pool:
            staged = extract_all(jobs, partial(pool.submit, extract_part), 2 * cfg.workers, bar.update)
    else:
        staged = extract_all(jobs, submit, in_flight or 2 * cfg.workers, bar.update)
    bar.close()
    return finalize(cfg, inputs, run_dir, provenance, staged, progress)


def is_done(run_dir: Path, provenance: Provenance) -> bool:
    """Both outputs complete for this provenance (inputs, config, code)."""
    return is_complete(run_dir, REDIRECTS, provenance.fingerprint) and is_complete(
        run_dir, PAGES, provenance.fingerprint
    )


def start(cfg: IngestConfig, inputs: IngestInputs, run_dir: Path, provenance: Provenance):
    """Mark the outputs incomplete, then the extract jobs, planned lazily: a job read in one pass holds
    its pages, so only the jobs in flight are in memory."""
    for dataset in (STAGED_PAGES, PAGES, REDIRECTS):
        ShardWriter(run_dir, dataset, provenance).open()
    return _plan_jobs(cfg, inputs, run_dir, provenance)


def extract_all(
    jobs: Iterator[ExtractJob],
    submit: Callable[[ExtractJob], Future],
    in_flight: int,
    on_part: Callable[[], object] = lambda: None,
) -> list[PartInfo]:
    """Every job's staged part: kept from an earlier run when done for the same fingerprint, else
    `submit(job).result()`, with at most `in_flight` jobs submitted and not yet collected."""
    done: list[PartInfo] = []
    pending: list[Future] = []
    for job in jobs:
        info = kept_part(job)
        if info is None:
            pending.append(submit(job))
        else:
            done.append(info)
            on_part()
        while len(pending) > in_flight:
            done.append(pending.pop(0).result())  # bounded look-ahead: a one-pass job holds its pages
            on_part()
    for future in pending:
        done.append(future.result())
        on_part()
    return sorted(done, key=lambda p: p.name)


def kept_part(job: ExtractJob) -> PartInfo | None:
    """The job's staged part from an earlier run, when it and its redirects part are done for the job's
    fingerprint (a run killed in phase 1 or 2 resumes there)."""
    info = ShardWriter(job.run_dir, STAGED_PAGES, job.provenance).done_part(job.index, job.part_fingerprint)
    return info if info and _redirects_done(job.run_dir, job.provenance, job) else None


def finalize(
    cfg: IngestConfig,
    inputs: IngestInputs,
    run_dir: Path,
    provenance: Provenance,
    staged: list[PartInfo],
    progress: bool = True,
) -> dict:
    """Phase 2 over the staged parts: the loss check (nothing is sealed past it), links resolved into
    `pages`, then the `redirects` manifest; the staging folder goes. Returns the `pages` manifest."""
    staged = sorted(staged, key=lambda p: p.name)
    check_losses(cfg, inputs, staged)
    redirect_parts = [_redirects_part(run_dir, p) for p in staged]
    pages_manifest = resolve_links(cfg, inputs, run_dir, provenance, staged, progress)
    ShardWriter(run_dir, REDIRECTS, provenance).finalize(redirect_parts)
    if not cfg.keep_staging:
        shutil.rmtree(dataset_dir(run_dir, STAGED_PAGES).parent, ignore_errors=True)
    return pages_manifest


class DumpLossError(DumpFileError):
    """Damage lost more of the input than `ingest.max_lost_fraction` allows; nothing was sealed."""


def _lost_pages(stats: Counter) -> int:
    return sum(v for k, v in stats.items() if k.startswith("pages_dropped"))


def check_losses(cfg: IngestConfig, inputs: IngestInputs, staged: list[PartInfo]) -> None:
    """Fail before anything is sealed when the input is empty or damage lost more than allowed."""
    stats: Counter = Counter()
    for part in staged:
        stats.update(part.stats)
    read = stats["articles"] + _not_articles(stats)
    names = ", ".join(str(d) for d in inputs.dumps)
    if read == 0 and not _lost_pages(stats):
        raise DumpFileError(f"{names}: no page in the input", fix="pass a pages-articles dump that has pages")
    in_bytes = sum(d.stat().st_size for d in inputs.dumps)
    lost_bytes = sum(v for k, v in stats.items() if k.startswith("bytes_dropped"))
    fraction = max(_lost_pages(stats) / (read + _lost_pages(stats)), lost_bytes / max(1, in_bytes))
    if fraction <= cfg.max_lost_fraction:
        return
    first = next(e for part in staged for e in part.errors)
    raise DumpLossError(
        f"damaged input: {_lost_pages(stats)} pages and {lost_bytes} bytes lost ({fraction:.1%}, over "
        f"ingest.max_lost_fraction={cfg.max_lost_fraction:g}); first: {first}",
        fix="fetch the file again (`trelm download` verifies the published sums), or accept the loss with "
        "--set ingest.max_lost_fraction=F (it is then counted by reason in the pages manifest)",
    )


# ---------------------------------------------------------------- phase 1: extract


def _plan_jobs(
    cfg: IngestConfig, inputs: IngestInputs, run_dir: Path, provenance: Provenance
) -> Iterator[ExtractJob]:
    next_index = 0
    render = RenderOptions(convert_output=cfg.convert_output)
    for dump in inputs.dumps:
        index = dumpfiles.index_path_for(dump)
        html = is_enterprise_html(dump)
        if html:
            groups = _one_pass_groups(dump, cfg, htmldump.iter_article_lines(dump), cfg.html_part_mb)
        else:
            groups = _indexed_groups(dump, index, cfg) if index else _one_pass_groups(dump, cfg)
        for key, ranges, pages, errors, lost in groups:
            yield ExtractJob(
                next_index,
                run_dir,
                provenance,
                stable_hash([dump.name, key]),
                cfg.rows_per_row_group,
                ranges,
                pages,
                errors,
                tuple(sorted(lost.items())),
                html,
                render,
            )
            next_index += 1


def _indexed_groups(dump: Path, index: Path, cfg: IngestConfig):
    """Consecutive streams holding about `pages_per_part` pages each."""
    group: list[StreamRange] = []
    pages = 0
    for rng, n_pages in dumpfiles.stream_ranges(dump, index):
        group.append(rng)
        pages += n_pages
        if pages >= cfg.pages_per_part:
            yield [(r.start, r.end) for r in group], tuple(group), (), (), {}
            group, pages = [], 0
    if group:
        yield [(r.start, r.end) for r in group], tuple(group), (), (), {}


def _one_pass_groups(dump: Path, cfg: IngestConfig, pages: Iterator[str] | None = None, max_mb: int = 0):
    """Runs of `pages_per_part` page strings (XML, or HTML dump lines) read in one pass, or of `max_mb`
    MB of them when that comes first (a job holds its run in memory); a damaged file ends the last,
    which carries the error. Each run carries what damage lost while it was read."""
    batch: list[str] = []
    number = size = 0
    lost: Counter = Counter()
    errors: list[str] = []
    pages = dumpfiles.iter_page_xml(dump, lost=lost, errors=errors) if pages is None else pages
    size_cap = ["mb", max_mb] if max_mb else []  # in the part keys only where it applies
    while True:
        try:
            batch.append(next(pages))
        except StopIteration:
            break
        except DumpFileError as exc:
            log.error("%s", exc)
            lost.update(exc.lost or {"pages_dropped_truncated": 1})
            key = ["pages", number, cfg.pages_per_part, "truncated", *size_cap]
            yield key, (), tuple(batch), (*errors, str(exc)), dict(lost)
            return
        size += len(batch[-1])
        if len(batch) == cfg.pages_per_part or (max_mb and size >= max_mb * 1_000_000):
            key = ["pages", number, cfg.pages_per_part, *size_cap]
            yield key, (), tuple(batch), tuple(errors), dict(lost)
            batch, number, size = [], number + 1, 0
            lost.clear()
            errors.clear()
    if batch or lost:
        yield ["pages", number, cfg.pages_per_part, *size_cap], (), tuple(batch), tuple(errors), dict(lost)


def extract_part(job: ExtractJob) -> PartInfo:
    """Phase-1 worker: parse and clean one part, write its staged pages and its redirects."""
    rows = PageRows()
    rows.stats.update(dict(job.lost))
    errors = list(job.errors)
    # lz4: staged parts are read once and deleted; zstd is paid once, on the final parts
    staged = ShardWriter(job.run_dir, STAGED_PAGES, job.provenance, compression="lz4")
    info = staged.write_part(
        job.index,
        _article_batches(_job_pages(job, rows, errors), rows, job),
        stats=rows.stats,
        errors=errors,
        part_fingerprint=job.part_fingerprint,
    )
    redirects = pa.table(
        {"title": [t for t, _ in rows.redirects], "target": [t for _, t in rows.redirects]}, REDIRECTS.schema
    )
    ShardWriter(job.run_dir, REDIRECTS, job.provenance).write_part(
        job.index, [redirects], part_fingerprint=job.part_fingerprint
    )
    return info


def _job_pages(job: ExtractJob, rows: PageRows, errors: list[str]) -> Iterator[str]:
    yield from job.pages
    for rng in job.ranges:
        try:
            data = dumpfiles.read_stream(rng)
        except DumpFileError as exc:
            errors.append(str(exc))
            rows.stats.update(exc.lost)
            continue
        unclosed: list[int] = []
        yield from dumpfiles.split_pages(_decode(data, rows), unclosed)
        if unclosed:
            rows.stats["pages_dropped_unclosed"] += len(unclosed)
            where = f"in the stream at byte offset {rng.start}"
            errors.append(f"{rng.path}: {len(unclosed)} <page> without </page> {where}")


def _decode(data: bytes, rows: PageRows) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        rows.stats["streams_with_invalid_utf8"] += 1
        return data.decode("utf-8", errors="replace")


def _article_batches(pages: Iterator[str], rows: PageRows, job: ExtractJob) -> Iterator[pa.Table]:
    """Articles as tables of `rows_per_row_group` rows; redirects and stats accumulate in `rows`."""
    for page in pages:
        if job.html:
            add_html_article(rows, page)
        else:
            add_page(rows, page, job.render)
        if len(rows) >= job.rows_per_row_group:
            yield rows.take_articles()
    yield rows.take_articles()


def _redirects_done(run_dir: Path, provenance: Provenance, job: ExtractJob) -> bool:
    return ShardWriter(run_dir, REDIRECTS, provenance).done_part(job.index, job.part_fingerprint) is not None


def _redirects_part(run_dir: Path, staged: PartInfo) -> PartInfo:
    return read_part_info(dataset_dir(run_dir, REDIRECTS) / staged.name)
