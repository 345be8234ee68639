"""A capacity plan for the full English Wikipedia, from measured stage runs.

    python benchmarks/capacity.py                 # the measurements (about 90 min on 2 cores), then the plan
    python benchmarks/capacity.py --quick         # small sizes only (a few minutes): checks the script
    python benchmarks/capacity.py --replan        # the plan again from the saved measurements
    python benchmarks/capacity.py --replan --cores 64 --memory-gb 512 --gpus 8 --machines 4

Each measurement runs the stage's own code in a fresh process; its wall time, CPU time (every
process of its tree: each one's CPU seconds sampled every 0.1 s, or the kernel's rusage of reaped
children where that is more) and peak memory (PSS summed over the tree, and the largest single
process's RSS, sampled every 0.1 s) are recorded.

1. **Input-driven stages, on the real excerpt** (gensim's 2016 enwiki excerpt, `realdata.gensim_sample`)
   and its 4x and 16x multistream copies (`ingest.repeated_multistream`): `trelm ingest` (enwiki
   preset, 200-page parts as in `benchmarks/ingest.py`), the anchor dictionary's build
   (`build_dictionary`, both passes over the pages), `trelm link` (enwiki preset: local TAGME, no KG),
   the `select` stage's sequences (`page_sequences`, 512 tokens, every mention) and SI scoring
   (`si_scores` on CPU, the packaged MiniLM and a BERT-base-shaped encoder, roberta-base's size).
2. **Size-driven memory, at enwiki size** (`enwiki_shapes`): the dictionary's DuckDB merge on
   generated staging files (15M anchors, 25M candidates, 180M links, 9M targets at scale 1; 1/16 to 1) and
   `load_dictionary` of its output; ingest's resolve (`resolve_links`) with 6.9M article titles,
   10M redirects and page_props at full size; one link worker's models at that size (dictionary +
   the alignment tables of `_alignment_db`; and the dictionary with the KG aliases of Wikidata5M's
   4.6M entities, `enwiki_shapes.kg_alias_rows`); `load_kg` on `kg_load`'s generated Wikidata5M.
3. **Fits**: least squares of seconds, CPU seconds and memory against the input (MB of XML, words of
   text) or the generated size, and the plan for full enwiki on one machine and on a cluster, each
   number marked measured (m), fitted from measurements and extrapolated (f), or projected from an
   assumption that the plan names (p).

Measurements are saved in `.bench/capacity/measured.json` (keyed by stage and size, reused by
`--replan`); the printed tables also go to `--out` (default `benchmarks/results/capacity/`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realdata import BENCH  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = BENCH / "capacity"
SAVED = WORK / "measured.json"
RUN = "benchwiki-20260101"
MARK = (
    "capacity-result: "  # a child's result line on stdout  # the run name trelm gives the copies' file name
)

# Full enwiki, the plan's input (not measured here; sources in the README's section):
# Wikipedia:Size of Wikipedia, April 2024: 6,816,939 articles, "over 4.5 billion words", all current
# articles about 22.14 GB compressed (July 2023); 2025: 7.03M articles, 5B words, 24 GB.
ENWIKI = {"articles": 6.9e6, "words": 4.7e9, "xml_mb": 95_000, "bz2_mb": 22_000}
PAPER_SEQUENCES = 26e6  # TRELM's pre-training corpus (paper, section 4.1)


# ---------------------------------------------------------------- measuring a process tree


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return [proc]


def _sample(procs: list[psutil.Process], cpu: dict[int, float]) -> tuple[int, int]:
    """(PSS summed over the tree, largest RSS of one process): PSS splits the pages forked workers
    share between them, so the sum is what the tree really holds. Records each process's CPU
    seconds in `cpu`: a forkserver's workers are reaped by the forkserver, which outlives the
    command unreaped, so the kernel's rusage of children never sees them (`trelm ingest`: 4.3 CPU s
    by rusage, 10.8 s summed over its processes)."""
    pss = rss = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            info = p.memory_full_info()
            pss += info.pss
            rss = max(rss, info.rss)
            times = p.cpu_times()
            cpu[p.pid] = times.user + times.system
    return pss, rss


def measure(cmd: list[str], timeout: float = 3600) -> dict:
    """Run `cmd`; wall and CPU seconds, peak MiB, and the JSON its last stdout line holds (if any)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}"}
    proc = psutil.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_pss = peak_rss = 0
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        pss, rss = _sample(_tree(proc), cpu)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        time.sleep(0.1)
        if time.perf_counter() - start > timeout:
            proc.kill()
    out, err = proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{err[-3000:]}")
    lines = [ln[len(MARK) :] for ln in out.splitlines() if ln.startswith(MARK)]
    return {
        "seconds": time.perf_counter() - start,
        # the larger of the two: rusage misses orphaned processes, sampling the last 0.1 s of each
        "cpu_s": max(
            (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), sum(cpu.values())
        ),
        "peak_pss_mib": peak_pss / 2**20,
        "peak_rss_mib": peak_rss / 2**20,
        **(json.loads(lines[-1]) if lines else {}),
    }


def child(name: str, *args) -> list[str]:
    """This script in a fresh interpreter, running one `--child` function."""
    return [sys.executable, str(Path(__file__).resolve()), "--child", name, *map(str, args)]


def trelm(*args) -> list[str]:
    return [str(Path(sys.executable).with_name("trelm")), *map(str, args), "--set", "progress=false"]


class Store:
    """The measurements, saved after each one, so a long run keeps what it measured."""

    def __init__(self, path: Path, reuse: bool):
        self.path = path
        self.rows = json.loads(path.read_text()) if path.exists() else {}
        self.reuse = reuse

    def get(self, key: str, cmd: list[str], clean: Path | None = None) -> dict:
        """The measurement of `cmd` under `key` (`clean`: a folder emptied before it runs)."""
        if not (self.reuse and key in self.rows):
            print(f"  measuring {key} ...", file=sys.stderr, flush=True)
            if clean is not None:
                shutil.rmtree(clean, ignore_errors=True)
                clean.mkdir(parents=True)
            self.rows[key] = measure(cmd)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.rows, indent=1))
        return self.rows[key]


# ---------------------------------------------------------------- children (each in a fresh process)


def child_dictionary(run_dir: str) -> dict:
    """Both passes and the merge of the anchor dictionary, as `trelm link` builds it (enwiki preset)."""
    from flows.config import load_config
    from preprocessing.anchors import build_dictionary

    cfg = load_config("enwiki").link
    start = time.perf_counter()
    manifest = build_dictionary(cfg.tagme, Path(run_dir), 2, cfg.duckdb_memory_limit, progress=False)
    return {"in_child_s": time.perf_counter() - start, "anchors": manifest["rows"]}


def child_sequences(run_dir: str) -> dict:
    """`select`'s sequences (`page_sequences`, 512 tokens) of every page, with every mention of the
    link stage (the excerpt has no QIDs, so none would be KG-aligned: all are kept as if they were)."""
    import pyarrow.parquet as pq

    from preprocessing.sequences import load_tokenizer, page_sequences
    from storage.schemas import MENTIONS, PAGES
    from storage.shards import part_paths

    tokenizer = load_tokenizer("minilm")
    counts = dict.fromkeys(("sequences", "mentions", "tokens", "pages"), 0)
    start = time.perf_counter()
    run = Path(run_dir)
    for pages_path, mentions_path in zip(part_paths(run, PAGES), part_paths(run, MENTIONS), strict=True):
        pages = pq.read_table(pages_path, columns=["page_id", "text"]).to_pylist()
        rows = pq.read_table(mentions_path, columns=["sentences", "mentions"]).to_pylist()
        for page, row in zip(pages, rows, strict=True):
            sentences = [(s["start"], s["end"]) for s in row["sentences"]]
            spans = [(m["start"], m["end"]) for m in row["mentions"]]
            seqs = page_sequences(tokenizer, page["page_id"], page["text"], sentences, spans, 512)
            counts["pages"] += 1
            counts["sequences"] += len(seqs)
            counts["mentions"] += sum(len(s.mentions) for s in seqs)
            counts["tokens"] += sum(len(s.input_ids) for s in seqs)
    return {"in_child_s": time.perf_counter() - start, **counts}


def child_si(run_dir: str, encoder: str, n_sequences: str, per_seq: str) -> dict:
    """SI of `per_seq` mentions in each of `n_sequences` full 512-token sequences of the run, on CPU."""
    import torch

    from preprocessing.config import SIConfig
    from preprocessing.importance import load_encoder, si_scores

    torch.set_num_threads(2)
    cfg = SIConfig(encoder="minilm", device="cpu", batch_size=16)
    tokenizer, model = load_encoder(cfg)
    if encoder == "base":  # roberta-base's shape (12 layers, 768, 3072), random weights: the same FLOPs
        from transformers import BertConfig, BertModel

        shape = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=514,
        )
        model = BertModel(shape, add_pooling_layer=False).eval()
    sequences, spans = _si_sample(Path(run_dir), tokenizer, int(n_sequences), int(per_seq))
    si_scores(model, tokenizer, sequences[:1], spans[:1], cfg)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    si_scores(model, tokenizer, sequences, spans, cfg)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    forwards = len(sequences) + sum(len(s) for s in spans)  # an original and a copy per mention
    tokens = sum(len(s) * (1 + len(p)) for s, p in zip(sequences, spans, strict=True))
    return {"in_child_s": seconds, "in_child_cpu_s": cpu, "forwards": forwards, "tokens": tokens}


def _si_sample(run: Path, tokenizer, n: int, per_seq: int):
    """The first `n` sequences of at least 400 tokens with `per_seq` mentions, from the first part."""
    import pyarrow.parquet as pq

    from preprocessing.sequences import page_sequences
    from storage.schemas import MENTIONS, PAGES
    from storage.shards import part_paths

    pages = pq.read_table(part_paths(run, PAGES)[0], columns=["page_id", "text"]).to_pylist()
    rows = pq.read_table(part_paths(run, MENTIONS)[0], columns=["sentences", "mentions"]).to_pylist()
    sequences, spans = [], []
    for page, row in zip(pages, rows, strict=True):
        sentences = [(s["start"], s["end"]) for s in row["sentences"]]
        mentions = [(m["start"], m["end"]) for m in row["mentions"]]
        for seq in page_sequences(tokenizer, page["page_id"], page["text"], sentences, mentions, 512):
            if len(seq.input_ids) >= 400 and len(seq.mentions) >= per_seq and len(sequences) < n:
                sequences.append(seq.input_ids)
                spans.append([(m.tok_start, m.tok_end) for m in seq.mentions[:per_seq]])
    return sequences, spans


def child_dict_merge(staging: str, run_dir: str) -> dict:
    """`build_dictionary` after its two per-part passes: the same DuckDB merge and writes, in order,
    on generated staging files (`enwiki_shapes.dictionary_staging`), under the enwiki preset's limit."""
    from flows.config import load_config
    from preprocessing import anchors
    from storage.duck import scratch, sql_files

    cfg = load_config("enwiki").link
    staging, run = Path(staging), Path(run_dir)
    (staging / "duckdb-tmp").mkdir(exist_ok=True)
    times, start = {}, time.perf_counter()
    provenance = anchors.dictionary_provenance(cfg.tagme, run)
    conn = scratch(cfg.duckdb_memory_limit, staging / "duckdb-tmp")
    drops = anchors._merge_link_counts(conn, staging, cfg.tagme)
    # the kept anchors for pass 2, as build_dictionary writes them (each pass-2 worker loads them)
    conn.execute(f"COPY (SELECT anchor FROM kept) TO {sql_files(staging / 'keys.parquet')} (FORMAT parquet)")
    times["merge_links_s"] = time.perf_counter() - start
    anchors._number_targets(conn, staging)
    times["number_targets_s"] = time.perf_counter() - start - sum(times.values())
    manifest = anchors._write_anchors(conn, staging, run, provenance, drops, cfg.tagme.link_prob_per_article)
    times["write_anchors_s"] = time.perf_counter() - start - sum(times.values())
    targets = anchors._write_link_targets(conn, run, provenance)
    conn.close()
    shutil.rmtree(staging / "duckdb-tmp", ignore_errors=True)
    return {
        "in_child_s": time.perf_counter() - start,
        **times,
        "anchors": manifest["rows"],
        "targets": targets["rows"],
        "drops": drops,
    }


def child_dict_load(run_dir: str) -> dict:
    """`load_dictionary` as a link worker calls it; the process's RSS once loaded, and the sizes."""
    import gc

    from preprocessing import anchors

    me, run = psutil.Process(), Path(run_dir)
    base = me.memory_info().rss
    keys = run.parent / "staging" / "keys.parquet"
    keys_mib = None
    if keys.exists():  # what a pass-2 worker holds: the kept anchors as a key dict (then freed)
        anchors._kept_anchors(keys)
        keys_mib = (me.memory_info().rss - base) / 2**20
        anchors._kept_anchors.cache_clear()
        gc.collect()
    start = time.perf_counter()
    dictionary, relatedness = anchors.load_dictionary(run)
    return {
        "in_child_s": time.perf_counter() - start,
        "rss_loaded_mib": me.memory_info().rss / 2**20,
        "pass2_keys_mib": keys_mib,
        "anchors": len(dictionary),
        "keys": len(dictionary.index),
        "candidates": len(dictionary.entities),
        "edges": int(relatedness.matrix.nnz),
        "targets": int(relatedness.matrix.shape[0]),
    }


def child_resolve(run_dir: str, page_props: str) -> dict:
    """Ingest's resolve phase (`resolve_links`, enwiki preset's `ingest` settings, 2 workers) on
    generated staged parts; the title map's build and each part's join timed by wrapping them."""
    from flows.config import load_config
    from preprocessing import resolve
    from preprocessing.ingest import IngestInputs
    from storage.shards import Provenance, dataset_dir, read_part_info

    cfg = load_config("enwiki").ingest.model_copy(update={"workers": 2})
    run = Path(run_dir)
    staged = sorted(dataset_dir(run, resolve.STAGED_PAGES).glob("part-*.parquet"))
    infos = [read_part_info(p) for p in staged]
    times: dict[str, list] = {"map": [], "parts": [], "map_cpu": [0.0, 0.0]}
    build, write = resolve.build_title_map, resolve._write_resolved

    def timed_build(*a):
        t, cpu = time.perf_counter(), time.process_time()
        build(*a)
        times["map"].append(time.perf_counter() - t)
        times["map_cpu"] = [cpu, time.process_time()]  # DuckDB's threads are this process's

    def timed_write(cursor, writer, run_dir, info, map_hash):
        t = time.perf_counter()
        out = write(cursor, writer, run_dir, info, map_hash)
        times["parts"].append((info.name, time.perf_counter() - t))
        return out

    resolve.build_title_map, resolve._write_resolved = timed_build, timed_write
    start = time.perf_counter()
    manifest = resolve.resolve_links(
        cfg, IngestInputs((), Path(page_props)), run, Provenance("g", (), "g"), infos, progress=False
    )
    linked = {p.name for p in infos if p.stats.get("linked")}
    # the parts run two at a time, so their CPU is shared out by their wall times
    parts_cpu = time.process_time() - times["map_cpu"][1]
    wall = dict(times["parts"])
    linked_share = sum(wall[n] for n in linked) / sum(wall.values())
    return {
        "in_child_s": time.perf_counter() - start,
        "map_s": sum(times["map"]),
        "map_cpu_s": times["map_cpu"][1] - times["map_cpu"][0],
        "linked_part_cpu_s": parts_cpu * linked_share / max(1, len(linked)),
        "linked_part_s": [s for n, s in times["parts"] if n in linked],
        "plain_part_s": [s for n, s in times["parts"] if n not in linked],
        "memory_limit": cfg.duckdb_memory_limit,
        "rows": manifest["rows"],
        "stats": {k: v for k, v in manifest["stats"].items() if k.startswith("links")},
    }


def child_worker(dict_run: str, title_run: str) -> dict:
    """One link worker's models: the dictionary (`load_dictionary`) and the alignment tables
    (`link._alignment_db`: the run's titles, redirects and link targets in DuckDB) at enwiki size."""
    from flows.config import load_config
    from preprocessing import link
    from preprocessing.anchors import load_dictionary
    from storage.schemas import LINK_TARGETS
    from storage.shards import read_manifest

    me = psutil.Process()
    base = me.memory_info().rss
    _held = load_dictionary(Path(dict_run))  # held, as a worker's model cache holds it, while measured
    after_dictionary = me.memory_info().rss
    link._alignment_db(Path(title_run), load_config("enwiki").link.duckdb_memory_limit)
    after_alignment = me.memory_info().rss
    return {
        "dictionary_mib": (after_dictionary - base) / 2**20,
        "alignment_mib": (after_alignment - after_dictionary) / 2**20,
        "rss_mib": after_alignment / 2**20,
        "link_targets": read_manifest(Path(title_run), LINK_TARGETS)["rows"],
    }


WIKIDATA5M_ENTITIES = 4_594_485


def child_aliases_build(dict_run: str, title_run: str, rows_file: str) -> dict:
    """Link's prepare keying the KG aliases of Wikidata5M's entities once for every worker
    (`aliases.write`, as `link.build_kg_aliases` calls it): the rows (`enwiki_shapes.kg_alias_rows`)
    streamed from their file as `_kg_alias_rows` streams them from DuckDB, with the alignment tables
    open as the query holds them (the query's own working memory, under `link.duckdb_memory_limit`,
    is not in this measurement)."""
    from enwiki_shapes import stream_rows

    from flows.config import load_config
    from preprocessing import aliases, link
    from preprocessing.tagme import TagmeConfig
    from storage.schemas import LINK_TARGETS
    from storage.shards import Provenance, read_manifest

    limit = load_config("enwiki").link.duckdb_memory_limit
    conn = link._alignment_tables(Path(title_run), limit)
    start = time.perf_counter()
    n_targets = read_manifest(Path(dict_run), LINK_TARGETS)["rows"]
    provenance = Provenance("capacity", (), "capacity")
    rows = stream_rows(Path(rows_file))
    manifest = aliases.write(Path(dict_run), rows, n_targets, TagmeConfig(), provenance, limit)
    conn.close()
    return {"in_child_s": time.perf_counter() - start, "keys": manifest["rows"], "stats": manifest["stats"]}


def child_aliases_query(run_dir: str) -> dict:
    """The same keying with the alias query itself (`link._kg_alias_rows`: Wikidata5M's entities
    unnested, joined to the 17M titles and the link targets, deduplicated and sorted by DuckDB under
    `link.duckdb_memory_limit`), on `enwiki_shapes.kg_alias_run`: all of `link.build_kg_aliases` but
    its provenance checks."""
    from flows.config import load_config
    from preprocessing import aliases, link
    from storage.schemas import LINK_TARGETS
    from storage.shards import Provenance, read_manifest

    cfg, run = load_config("enwiki").link, Path(run_dir)
    start = time.perf_counter()
    n_targets = read_manifest(run, LINK_TARGETS)["rows"]
    rows = link._kg_alias_rows(run, cfg)
    provenance = Provenance("capacity", (), "capacity")
    manifest = aliases.write(run, rows, n_targets, cfg.tagme, provenance, cfg.duckdb_memory_limit)
    return {"in_child_s": time.perf_counter() - start, "keys": manifest["rows"], "stats": manifest["stats"]}


def child_worker_aliases(dict_run: str, title_run: str) -> dict:
    """One link worker's models with `kg_aliases` (the default), in `link._local_annotator`'s order:
    the plain dictionary loaded and extended by the keyed aliases that `aliases-build` wrote, then the
    alignment tables opened (by its first part's gold targets); the RSS held with both."""
    from flows.config import load_config
    from preprocessing import link
    from preprocessing.tagme import TagmeConfig

    start = time.perf_counter()
    dictionary, _, extra = link.kg_aliased_model(Path(dict_run), TagmeConfig())
    built = time.perf_counter() - start
    link._alignment_db(Path(title_run), load_config("enwiki").link.duckdb_memory_limit)
    return {
        "in_child_s": built,
        "rss_loaded_mib": psutil.Process().memory_info().rss / 2**20,
        "keys": len(dictionary.index),
        "extra_entities": len(extra),
    }


CHILDREN = {
    "dictionary": child_dictionary,
    "sequences": child_sequences,
    "si": child_si,
    "dict-merge": child_dict_merge,
    "dict-load": child_dict_load,
    "resolve": child_resolve,
    "worker": child_worker,
    "aliases-build": child_aliases_build,
    "aliases-query": child_aliases_query,
    "worker-aliases": child_worker_aliases,
}


# ---------------------------------------------------------------- the measurements


def text_facts(run_dir: Path) -> dict:
    """Articles, words and characters of a run's `pages` text: the unit linking and select scale with."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from storage.schemas import PAGES
    from storage.shards import part_paths

    words = chars = articles = 0
    for path in part_paths(run_dir, PAGES):
        text = pq.read_table(path, columns=["text"]).column("text")
        words += pc.sum(pc.list_value_length(pc.utf8_split_whitespace(text))).as_py() or 0
        chars += pc.sum(pc.utf8_length(text)).as_py() or 0
        articles += len(text)
    return {"articles": articles, "words": words, "chars": chars}


def measure_copies(store: Store, copies: list[int], si_sequences: int) -> None:
    """Ingest, dictionary build, link and select's sequences on the excerpt and its copies."""
    from ingest import input_facts, repeated_multistream
    from realdata import gensim_sample

    src = gensim_sample()
    for k in copies:
        folder = WORK / f"x{k}"
        dumps = sorted(folder.glob("*-multistream1.xml-*.bz2"))
        if not dumps:
            folder.mkdir(parents=True, exist_ok=True)
            dumps = [repeated_multistream(src, k, folder)]
        dump, data_root = dumps[0], folder / "data"
        run_dir = data_root / "runs" / RUN
        xml_bytes, _, _ = input_facts(dump)
        store.rows[f"input x{k}"] = {"xml_mb": xml_bytes / 1e6, "bz2_mb": dump.stat().st_size / 1e6}
        if not store.reuse:
            shutil.rmtree(data_root, ignore_errors=True)
        ingest = ["ingest", "--dump", dump, "--workers", 2, "--data-root", data_root, "--config", "enwiki"]
        store.get(f"ingest x{k}", trelm(*ingest, "--set", "ingest.pages_per_part=200"))
        store.rows[f"input x{k}"].update(text_facts(run_dir))
        store.get(f"dictionary x{k}", child("dictionary", run_dir))
        link = ["link", "--data-root", data_root, "--run", RUN, "--config", "enwiki", "--workers", 2]
        store.get(f"link x{k}", trelm(*link))
        store.get(f"sequences x{k}", child("sequences", run_dir))
        if k == copies[0]:
            for encoder, n in (("minilm", 4 * si_sequences), ("base", si_sequences)):
                store.get(f"si {encoder}", child("si", run_dir, encoder, n, 3))


def measure_dictionary(store: Store, scales: list[float]) -> Path:
    """The dictionary's merge and load at fractions of enwiki's size; the largest one's run folder."""
    from enwiki_shapes import dictionary_staging, fake_pages_manifest

    for s in scales:
        folder = WORK / f"dict-{s:g}"
        run = folder / "run"
        facts = dictionary_staging(folder / "staging", s)
        store.rows[f"dict-input {s:g}"] = facts
        if not store.reuse:
            shutil.rmtree(run, ignore_errors=True)
        fake_pages_manifest(run, facts["articles"])
        store.get(f"dict-merge {s:g}", child("dict-merge", folder / "staging", run))
        store.get(f"dict-load {s:g}", child("dict-load", run))
    return WORK / f"dict-{max(scales):g}" / "run"


def measure_resolve(store: Store, scale: float, linked_parts: int) -> Path:
    from enwiki_shapes import resolve_inputs

    run = WORK / f"resolve-{scale:g}" / "runs" / "generated"
    store.rows[f"resolve-input {scale:g}"] = resolve_inputs(run, scale, linked_parts)
    if not (store.reuse and f"resolve {scale:g}" in store.rows):
        shutil.rmtree(run / "pages", ignore_errors=True)  # else the parts of an earlier run are kept
    props = run.parent / "generated-page_props.sql.gz"
    store.get(f"resolve {scale:g}", child("resolve", run, props))
    return run


def measure_worker(store: Store, dict_run: Path, title_run: Path, key: str) -> None:
    """One link worker's models: the largest dictionary, the alignment tables of the full title map
    (its link targets are the dictionary's, linked into the title run)."""
    targets = title_run / "link_targets"
    if not targets.exists():
        targets.symlink_to((dict_run / "link_targets").resolve())
    store.get(key, child("worker", dict_run, title_run))
    from enwiki_shapes import kg_alias_rows

    from storage.schemas import KG_ALIASES
    from storage.shards import is_complete

    folder = dict_run.parent / "kg-alias-rows"  # beside the dictionary its entity ids index
    store.rows["kg-alias-input"] = kg_alias_rows(folder, dict_run, WIKIDATA5M_ENTITIES)
    if not is_complete(dict_run, KG_ALIASES):  # a dictionary generated again: key its aliases again
        store.rows.pop("aliases-build", None)
    store.get("aliases-build", child("aliases-build", dict_run, title_run, folder / "rows.parquet"))
    store.get(f"{key}-aliases", child("worker-aliases", dict_run, title_run))
    from enwiki_shapes import kg_alias_run

    query_run = dict_run.parent / "kg-alias-run"
    store.rows["kg-alias-run"] = kg_alias_run(query_run, title_run, folder / "rows.parquet")
    store.get("aliases-query", child("aliases-query", query_run))


def measure_kg(store: Store, scales: list[float]) -> None:
    """`load_kg` on kg_load's generated Wikidata5M (its folders, so a graph generated before is reused)."""
    import kg_load

    for s in scales:
        out = BENCH / ("kg-full" if s == 1 else f"kg-scale{s:g}")
        entities, triples = int(4_594_485 * s), int(20_614_279 * s)
        kg_load.generate(out, entities, 822, triples)
        store.rows[f"kg-input {s:g}"] = {"entities": entities, "triples": triples}
        run_dir = WORK / "kg-run"
        store.get(f"kg {s:g}", [sys.executable, "-c", kg_load._CHILD, str(out), str(run_dir)], clean=run_dir)


# ---------------------------------------------------------------- fits


def fit(xs, ys) -> dict:
    """Least squares y = a + b x over the measured points; R² says how straight they are."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return {"a": float(y.mean()), "b": 0.0, "r2": float("nan"), "n": len(x)}
    b, a = np.polyfit(x, y, 1)
    residual = y - (a + b * x)
    total = ((y - y.mean()) ** 2).sum()
    return {
        "a": float(a),
        "b": float(b),
        "r2": float(1 - (residual**2).sum() / total) if total else 1.0,
        "n": len(x),
    }


def at(f: dict, x: float) -> float:
    return f["a"] + f["b"] * x


def keys_with(rows: dict, prefix: str) -> list[str]:
    return sorted(
        (k for k in rows if k.startswith(prefix + " ")), key=lambda k: float(k.split()[-1].lstrip("x"))
    )


def fits(rows: dict) -> dict[str, tuple[str, str, dict]]:
    """(x name, y name, fit) per growth law the plan uses."""
    out = {}
    copies = [k.split()[-1] for k in keys_with(rows, "ingest")]
    inp = [rows[f"input {c}"] for c in copies]
    if copies:
        mb = [i["xml_mb"] for i in inp]
        ing = [rows[f"ingest {c}"] for c in copies]
        out["ingest cpu"] = ("XML MB", "CPU s", fit(mb, [r["cpu_s"] for r in ing]))
        out["ingest wall"] = ("XML MB", "s (2 workers)", fit(mb, [r["seconds"] for r in ing]))
        out["ingest memory"] = ("XML MB", "peak PSS MiB", fit(mb, [r["peak_pss_mib"] for r in ing]))
        for stage in ("dictionary", "link", "sequences"):
            got = [
                (i["words"], rows[f"{stage} {c}"])
                for c, i in zip(copies, inp, strict=True)
                if f"{stage} {c}" in rows
            ]
            w = [x for x, _ in got]
            out[f"{stage} cpu"] = ("words", "CPU s", fit(w, [r["cpu_s"] for _, r in got]))
            out[f"{stage} memory"] = (
                "words",
                "largest process RSS MiB",
                fit(w, [r["peak_rss_mib"] for _, r in got]),
            )
        w = [x for x, _ in got]  # the sequences' points
        out["forwards"] = ("words", "SI forwards", fit(w, [r["sequences"] + r["mentions"] for _, r in got]))
        out["sequences"] = ("words", "512-token sequences", fit(w, [r["sequences"] for _, r in got]))
    for prefix, y in (
        ("dict-merge", "cpu_s"),
        ("dict-merge", "peak_rss_mib"),
        ("dict-load", "peak_rss_mib"),
        ("dict-load", "rss_loaded_mib"),
        ("dict-load", "pass2_keys_mib"),
        ("dict-load", "in_child_s"),
        ("kg", "cpu_s"),
        ("kg", "peak_rss_mib"),
    ):
        ks = [k for k in keys_with(rows, prefix) if rows[k].get(y) is not None]
        if ks:
            x_name = "scale of Wikidata5M" if prefix == "kg" else "scale of enwiki"
            xs = [float(k.split()[-1]) for k in ks]
            out[f"{prefix} {y}"] = (x_name, y, fit(xs, [rows[k][y] for k in ks]))
    return out


# ---------------------------------------------------------------- the plan


def gib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


RESERVE_MIB = 8 * 1024  # kept free on a machine: the OS, the flow's own process, page cache
PARTS = int(ENWIKI["articles"] / 20_000)
ENWIKI_TARGETS = (
    9e6  # link targets (the README's footprint paragraph)  # the enwiki preset's 20,000-page parts: 345
)


def plan(rows: dict, f: dict, m) -> list[dict]:
    """Hours and memory per stage for full enwiki on one machine of `m` and on `m.machines` of them.
    Each row: stage, where it runs, work, 1-machine and N-machine seconds, memory, basis (m/f/p).
    Times come from CPU seconds (the shared 2-core machine's wall times carry other jobs' load):
    per-part work is divided over the workers that run it, DuckDB phases are counted at their
    CPU seconds over the 2 cores they were measured on (no speed-up from more cores assumed)."""
    usable = m.memory_gb * 1e9 / 2**20 - RESERVE_MIB
    return [
        *ingest_rows(rows, f, m),
        kg_row(rows, f),
        dictionary_row(rows, f, m, usable),
        *aliases_rows(rows),
        link_row(rows, f, m, usable),
        *select_rows(rows, f, m),
        *pretrain_rows(m),
    ]


def at_full(rows: dict, f: dict, prefix: str, field: str) -> tuple[float, str]:
    """A quantity at full size: measured where scale 1 ran (m), else the fit's value at 1 (f)."""
    if f"{prefix} 1" in rows:
        return rows[f"{prefix} 1"][field], "m"
    return at(f[f"{prefix} {field}"][2], 1.0), "f"


def ingest_rows(rows: dict, f: dict, m) -> list[dict]:
    """Extraction: CPU per MB of XML (fit over 1x-16x), one worker a core; the resolve at full size."""
    cpu = at(f["ingest cpu"][2], ENWIKI["xml_mb"])
    # two workers and the parent: the tree's PSS over two is what a worker adds
    per_worker = max(r["peak_pss_mib"] for k, r in rows.items() if k.startswith("ingest ")) / 2
    key = keys_with(rows, "resolve")[-1]
    res, scale = rows[key], float(key.split()[-1])
    basis = "m" if scale == 1 else "f"
    resolve_s = res["map_cpu_s"] / 2 / scale + PARTS * res["linked_part_cpu_s"] / m.cores
    return [
        {
            "stage": "ingest: extract",
            "runs on": f"1 machine, {m.cores} workers",
            "work": f"{ENWIKI['xml_mb'] / 1000:.0f} GB of XML: {cpu / 3600:.0f} core-h (f)",
            "one": cpu / m.cores,
            "cluster": cpu / m.cores,
            "memory": f"{gib(per_worker * m.cores)}: {per_worker:.0f} MiB a worker (m, flat in the input)",
            "basis": "f",
        },
        {
            "stage": "ingest: resolve",
            "runs on": "1 machine, DuckDB",
            "work": f"17M titles: title map {res['map_cpu_s'] / 2 / scale / 60:.1f} min ({basis}), "
            f"{res['linked_part_cpu_s']:.1f} CPU s a part ({basis}) x {PARTS}",
            "one": resolve_s,
            "cluster": resolve_s,
            "memory": f"{gib(res['peak_pss_mib'] / scale)} ({basis}; DuckDB limit {res['memory_limit']})",
            "basis": basis,
        },
    ]


# `benchmarks/kg_load.py` at full Wikidata5M size (the README's table): 22-31 s in three runs, 3.04 GiB
# peak RSS; 70.5 s and 4.17 GiB with abstract-length descriptions (the real text file's)
KG_LOAD = {"seconds": 70.5, "peak_rss_mib": 4.17 * 1024}


def kg_row(rows: dict, f: dict) -> dict:
    if "kg 1" in rows or len(keys_with(rows, "kg")) > 1:
        cpu, basis = at_full(rows, f, "kg", "cpu_s")
        mem, _ = at_full(rows, f, "kg", "peak_rss_mib")
        seconds = cpu / 2
    else:  # not measured in this run: kg_load.py's measurement at full size, with long descriptions
        seconds, mem, basis = KG_LOAD["seconds"], KG_LOAD["peak_rss_mib"], "m (kg_load.py)"
    return {
        "stage": "link: KG load",
        "runs on": "1 process, DuckDB",
        "work": "Wikidata5M: 4.6M entities, 20.6M triples",
        "one": seconds,
        "cluster": seconds,
        "memory": f"{gib(mem)} ({basis})",
        "basis": basis,
    }


def dictionary_row(rows: dict, f: dict, m, usable: float) -> dict:
    """Two per-part passes over the text (CPU per word, fit over 1x-16x), then the DuckDB merge at
    enwiki size (fit over the generated fractions). A pass-2 worker holds the kept anchors."""
    passes = at(f["dictionary cpu"][2], ENWIKI["words"])
    merge_cpu, basis = at_full(rows, f, "dict-merge", "cpu_s")
    merge_mem, _ = at_full(rows, f, "dict-merge", "peak_rss_mib")
    # DuckDB spills past its limit (the enwiki preset's link.duckdb_memory_limit, 8 GB), so the
    # straight line stops there: the limit plus the process's own 0.5 GiB
    merge_mem = min(merge_mem, 8e9 / 2**20 + 512)
    keys_mib, _ = at_full(rows, f, "dict-load", "pass2_keys_mib")
    workers = max(1, min(m.cores, int(usable // keys_mib)))
    return {
        "stage": "link: dictionary",
        "runs on": f"1 machine: {workers} pass workers, then DuckDB",
        "work": f"passes {passes / 3600:.0f} core-h (f); merge {merge_cpu / 3600:.1f} CPU-h ({basis})",
        "one": passes / workers + merge_cpu / 2,
        "cluster": passes / workers + merge_cpu / 2,
        "memory": f"merge {gib(merge_mem)} ({basis}); a pass-2 worker {gib(keys_mib)} ({basis})",
        "basis": "f",
    }


def aliases_rows(rows: dict) -> list[dict]:
    """Link's prepare keys the KG aliases once for every worker (measured at full size, in one
    process: its CPU seconds, most of them the one-core keying, bound its wall time); with the alias
    query itself where that was measured."""
    built = rows.get("aliases-query") or rows.get("aliases-build")
    if built is None:  # measurements from before the aliases were keyed once a run
        return []
    query = ", the alias query included" if "aliases-query" in rows else ""
    return [
        {
            "stage": "link: KG aliases, keyed once",
            "runs on": "1 process, then DuckDB",
            "work": f"{built['stats']['kg_aliases_read'] / 1e6:.1f}M aliases into "
            f"{built['keys'] / 1e6:.1f}M keys (m{query})",
            "one": built["cpu_s"],
            "cluster": built["cpu_s"],
            "memory": f"{gib(built['peak_rss_mib'])} peak RSS, the alignment tables open (m)",
            "basis": "m",
        }
    ]


def link_rss(rows: dict, f: dict) -> dict[str, float]:
    """One link worker at enwiki size: its dictionary (the load's peak, and what it holds once loaded;
    with the KG aliases of `kg_aliases`, the default, where they were measured), its alignment
    tables, its working set."""
    dictionary, basis = at_full(rows, f, "dict-load", "peak_rss_mib")
    loaded, _ = at_full(rows, f, "dict-load", "rss_loaded_mib")
    aliased = rows.get("worker-aliases")
    if aliased:  # dictionary, aliases and alignment tables, measured together
        dictionary, loaded, basis = aliased["peak_rss_mib"], aliased["rss_loaded_mib"], "m, with KG aliases"
    working = rows[keys_with(rows, "link")[0]]["peak_rss_mib"]  # the 1x worker: interpreter, spaCy, a part
    key = keys_with(rows, "resolve")[-1]
    titles = rows[f"resolve-input {key.split()[-1]}"]["titles"]
    measured = rows["worker"]["alignment_mib"]
    # the worker ran with the excerpt's link targets beside the full title map: the 9M of enwiki
    # add their rows to the `entity` table at the title map's bytes a row
    targets = rows["worker"].get("link_targets", 0)
    alignment = measured * (titles + ENWIKI_TARGETS) / (titles + targets)
    return {
        "dictionary": dictionary,
        "loaded": loaded,
        "aliased": bool(aliased),
        "alignment": alignment,
        "alignment_measured": measured,
        "working": working,
        "basis": basis,
    }


def link_row(rows: dict, f: dict, m, usable: float) -> dict:
    """TAGME per part: CPU per word (fit over 1x-16x), over the workers that fit in memory: each
    worker loads its own dictionary and alignment tables after the fork (lru_cache in the worker),
    so nothing of them is shared. A worker's peak is the dictionary's load transient or, after it, the
    loaded dictionary beside the alignment tables (`_local_annotator` opens them second); with the KG
    aliases both are measured together: the extension from the keyed aliases, then the tables."""
    rss = link_rss(rows, f)
    after = rss["loaded"] + (0 if rss["aliased"] else rss["alignment"])
    per_worker = max(rss["dictionary"], after) + rss["working"]
    fit_workers = int(usable // per_worker)
    workers = max(1, min(m.cores, fit_workers))
    cpu = at(f["link cpu"][2], ENWIKI["words"])
    # every worker loads its models at the start, all at once: wall time before the first part
    startup = rows["worker-aliases"]["seconds"] if rss["aliased"] else rows["dict-load 1"]["seconds"]
    return {
        "stage": "link: TAGME per part",
        "runs on": f"{workers} workers a machine (memory: {fit_workers}, cores: {m.cores})",
        "work": f"{cpu / 3600:.0f} core-h (f), {PARTS} parts; a worker's models {startup / 60:.0f} min (m)",
        "one": startup + cpu / workers,
        "cluster": startup + cpu / workers / m.machines,
        "memory": f"{gib(per_worker)} a worker: {link_memory(rss)}, the rest {gib(rss['working'])} (m)",
        "basis": "f",
    }


def link_memory(rss: dict) -> str:
    alignment = f"{gib(rss['alignment_measured'])} m with 17M titles and 9M link targets"
    if rss["aliased"]:
        return (
            f"the dictionary's load {gib(rss['dictionary'])} peak; extended by the KG aliases, beside the "
            f"alignment tables, {gib(rss['loaded'])} held ({rss['basis']}; alignment alone {alignment})"
        )
    return (
        f"dictionary {gib(rss['dictionary'])} peak, {gib(rss['loaded'])} loaded ({rss['basis']}), "
        f"then alignment {gib(rss['alignment'])} ({alignment})"
    )


# a 512-token forward of roberta-base: 2 FLOPs per weight per token (85M weights outside the
# embeddings: 12 layers x (4 x 768^2 + 2 x 768 x 3072)) plus attention's two T x T x 768 products a layer
BASE_WEIGHTS = 12 * (4 * 768**2 + 2 * 768 * 3072)


def forward_flops(tokens: float) -> float:
    return 2 * BASE_WEIGHTS * tokens + 12 * 2 * 2 * tokens**2 * 768


def select_rows(rows: dict, f: dict, m) -> list[dict]:
    seq_cpu = at(f["sequences cpu"][2], ENWIKI["words"])
    forwards = at(f["forwards"][2], ENWIKI["words"])
    sequences = at(f["sequences"][2], ENWIKI["words"])
    si = rows["si base"]
    tokens = si["tokens"] / si["forwards"]
    cpu_per_forward = si["in_child_cpu_s"] / si["forwards"]
    gpu_s = forwards * forward_flops(tokens) / (m.gpu_tflops * 1e12 * m.mfu)
    # on the Dask or Ray runner each select part runs on a worker holding one GPU (one worker per GPU,
    # `orchestration.resources.select.gpus: 1`), which tokenizes and scores its own parts; the default
    # `threads` runner runs the parts in turn in one process on one GPU
    workers = m.gpus * m.machines
    default_h = (seq_cpu + gpu_s) / 3600
    runs_on = f"{m.gpus} GPU workers a machine, a part each (Dask/Ray; `threads`: 1 GPU, {default_h:.0f} h)"
    return [
        {
            "stage": "select: sequences",
            "runs on": runs_on,
            "work": f"{sequences / 1e6:.0f}M sequences of <= 512 tokens (f; the paper: 26M)",
            "one": seq_cpu / m.gpus,
            "cluster": seq_cpu / workers,
            "memory": "-",
            "basis": "f",
        },
        {
            "stage": "select: SI",
            "runs on": runs_on,
            "work": f"{forwards / 1e6:.0f}M forwards of {tokens:.0f} tokens (f); CPU: "
            f"{forwards * cpu_per_forward / 3600 / 1e3:.0f}k core-h (f)",
            "one": gpu_s / m.gpus,
            "cluster": gpu_s / workers,
            "memory": "-",
            "basis": f"p ({m.gpu_tflops:g} TFLOPS x MFU {m.mfu:g})",
        },
    ]


def pretrain_rows(m) -> list[dict]:
    """The enwiki preset's budget: 100k steps of 32 x 8 accumulation x 8 ranks = 2,048 sequences of
    512 tokens; 6 FLOPs per weight per token (forward + backward) plus attention; trelm's step ~1.03x
    a full one (routed step 0.84x, IG 19 steps' worth a refresh every 100: routing_step.py's
    768 x 12 row on CPU), and the preset's compare variant mlm_only at 1x."""
    tokens = 100_000 * 32 * 8 * 8 * 512
    per_variant = tokens * (6 * (BASE_WEIGHTS + 50265 * 768) + 3 * 12 * 2 * 2 * 512 * 768)
    seconds = 2.03 * per_variant / (m.gpus * m.gpu_tflops * 1e12 * m.mfu)
    return [
        {
            "stage": "pretrain: trelm + mlm_only",
            "runs on": f"{m.gpus} GPUs a machine (DeepSpeed)",
            "work": f"{tokens / 1e9:.0f}B tokens a variant, {2.03 * per_variant:.2g} FLOPs",
            "one": seconds,
            "cluster": seconds / m.machines,
            "memory": "not measured (no GPU)",
            "basis": f"p ({m.gpu_tflops:g} TFLOPS x MFU {m.mfu:g})",
        }
    ]


# ---------------------------------------------------------------- tables


def measured_table(rows: dict) -> list[str]:
    lines = [
        "| stage | input | seconds | CPU s | peak PSS MiB (tree) | largest process RSS MiB | what |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for key, r in rows.items():
        if "seconds" not in r:
            continue
        stage, size = key.rsplit(" ", 1) if " " in key else (key, "")
        lines.append(
            f"| {stage} | {describe(rows, stage, size)} | {r['seconds']:.1f} | {r['cpu_s']:.1f} "
            f"| {r['peak_pss_mib']:.0f} | {r['peak_rss_mib']:.0f} | {what(r)} |"
        )
    return lines


def describe(rows: dict, stage: str, size: str) -> str:
    if size.startswith("x"):
        i = rows[f"input {size}"]
        words, xml = i.get("words", 0) / 1e6, i["xml_mb"]
        return f"{size[1:]}x excerpt: {i.get('articles', 0):,} articles, {xml:.0f} MB XML, {words:.1f}M words"
    if stage in ("dict-merge", "dict-load"):
        i = rows[f"dict-input {size}"]
        links = i["parts"] * 520_000 / 1e6  # 26 links a page, 20,000 pages a part
        return f"{size} of enwiki: {i['anchors'] / 1e6:.2f}M anchors, {links:.0f}M links, {i['parts']} parts"
    if stage == "resolve":
        i = rows[f"resolve-input {size}"]
        linked = f"{i['linked_parts']} of {i['parts']} parts linked"
        return f"{size} of enwiki: {i['titles'] / 1e6:.1f}M titles, {linked}"
    if stage == "kg":
        i = rows[f"kg-input {size}"]
        return f"{size} of Wikidata5M: {i['entities'] / 1e6:.1f}M entities, {i['triples'] / 1e6:.1f}M triples"
    return size or "-"


def what(r: dict) -> str:
    skip = {
        "seconds",
        "cpu_s",
        "peak_pss_mib",
        "peak_rss_mib",
        "linked_part_s",
        "plain_part_s",
        "stats",
        "drops",
    }
    cells = [f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items() if k not in skip]
    if "linked_part_s" in r:
        cells.append(
            f"linked part {np.mean(r['linked_part_s']):.2f} s, plain part {np.mean(r['plain_part_s']):.2f} s"
        )
    return ", ".join(cells)


def fits_table(f: dict) -> list[str]:
    lines = ["| law | x | y | intercept | slope (per x) | R² | points |", "|---|---|---|---:|---:|---:|---:|"]
    for name, (x, y, g) in f.items():
        lines.append(f"| {name} | {x} | {y} | {g['a']:.4g} | {g['b']:.4g} | {g['r2']:.3f} | {g['n']} |")
    return lines


def plan_table(p: list[dict], m) -> list[str]:
    lines = [
        f"| stage | runs on | work | 1 machine | {m.machines} machines | memory | basis |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for r in p:
        lines.append(
            f"| {r['stage']} | {r['runs on']} | {r['work']} | {hours(r['one'])} | {hours(r['cluster'])} "
            f"| {r['memory']} | {r['basis']} |"
        )
    total_one, total_n = sum(r["one"] for r in p), sum(r["cluster"] for r in p)
    lines.append(f"| **total** | | | **{hours(total_one)}** | **{hours(total_n)}** | | |")
    bound = max(p, key=lambda r: r["one"])
    bound_n = max(p, key=lambda r: r["cluster"])
    lines.append("")
    lines.append(
        f"Bounded by **{bound['stage']}** on one machine and by **{bound_n['stage']}** on {m.machines}."
    )
    return lines


# ---------------------------------------------------------------- main

FULL = {"copies": [1, 4, 16], "dict": [0.0625, 0.125, 0.25, 1.0], "resolve": 1.0, "kg": [0.25, 1.0], "si": 6}
QUICK = {"copies": [1, 4], "dict": [1 / 64, 1 / 32], "resolve": 1 / 16, "kg": [0.05, 0.1], "si": 2}


def machine_line(m) -> str:
    return (
        f"{m.cores} cores, {m.memory_gb} GB, {m.gpus} GPUs of {m.gpu_tflops:g} dense bf16 TFLOPS "
        f"(A100 80GB: 312) at an assumed MFU of {m.mfu:g}; cluster: {m.machines} such machines"
    )


def notes(rows: dict, f: dict) -> list[str]:
    """What the plan's per-word basis means next to per-article figures, and the SI encoders' speed."""
    key = keys_with(rows, "link")[-1]
    big, link = rows[f"input {key.split()[-1]}"], rows[key]
    out = [
        f"- Words per article: the excerpt {big['words'] / big['articles']:,.0f}, enwiki "
        f"{ENWIKI['words'] / ENWIKI['articles']:,.0f} (4.7B words / 6.9M articles): link and select are "
        "planned per word of text, not per article.",
        f"- Link at the largest copy: {big['articles'] / link['cpu_s']:.1f} excerpt articles per CPU s "
        f"(the whole `trelm link` process tree, start-up and loading included), "
        f"{big['words'] / link['cpu_s']:,.0f} words per CPU s.",
        f"- XML of the excerpt per bz2 byte: {big['xml_mb'] / big['bz2_mb']:.1f}; 22 GB of bz2 at that ratio "
        f"would be {22 * big['xml_mb'] / big['bz2_mb']:.0f} GB of XML (the plan uses 95 GB).",
    ]
    for enc in ("minilm", "base"):
        if f"si {enc}" in rows:
            si = rows[f"si {enc}"]
            out.append(
                f"- SI on CPU ({enc}): {si['forwards'] / si['in_child_cpu_s']:.2f} forwards per CPU s, "
                f"{si['tokens'] / si['forwards']:.0f} tokens a forward (2 threads)"
            )
    return out


def report(rows: dict, m, sizes: dict, seconds: float | None) -> str:
    f = fits(rows)
    p = plan(rows, f, m)
    head = [
        f"# Capacity plan for full enwiki ({time.strftime('%Y-%m-%d')})",
        "",
        f"Sizes: {json.dumps(sizes)}" + (f"; measured in {seconds / 60:.0f} min" if seconds else ""),
        f"Full enwiki (input, not measured): {json.dumps(ENWIKI)}",
        "",
        "## Measured",
        "",
    ]
    body = [
        *head,
        *measured_table(rows),
        "",
        "## Fits (least squares over the measured points)",
        "",
        *fits_table(f),
        "",
        f"## Plan: {machine_line(m)}",
        "",
        "basis: m = measured at that size, f = fitted on measurements and extrapolated, p = projected "
        "from the named assumption",
        "",
        *plan_table(p, m),
        "",
        *notes(rows, f),
    ]
    return "\n".join(body) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only: a check of the script")
    ap.add_argument(
        "--replan", action="store_true", help="no measuring: the plan from the saved measurements"
    )
    ap.add_argument(
        "--reuse", action="store_true", help="keep saved measurements, measure only what is missing"
    )
    ap.add_argument("--only", nargs="*", default=["copies", "dict", "resolve", "worker", "kg"])
    ap.add_argument("--cores", type=int, default=32)
    ap.add_argument("--memory-gb", type=int, default=256)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--gpu-tflops", type=float, default=312.0, help="dense bf16 peak of one GPU (A100: 312)")
    ap.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilization on the GPUs")
    ap.add_argument("--machines", type=int, default=8, help="machines of the cluster row")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "capacity")
    ap.add_argument(
        "--store", type=Path, help="the measurements' file (default .bench/capacity/measured.json)"
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(MARK + json.dumps(CHILDREN[args.child[0]](*args.child[1:])))
        return
    sizes = QUICK if args.quick else FULL
    # --replan reads the committed measurements unless told another file; a measuring run its own
    committed = args.out / "measured.json" if args.replan else None
    saved = args.store or committed or WORK / ("measured-quick.json" if args.quick else "measured.json")
    store = Store(saved, reuse=args.reuse or args.replan)
    started = time.perf_counter()
    if not args.replan:
        measure_all(store, sizes, args.only)
    seconds = None if args.replan else time.perf_counter() - started
    text = report(store.rows, args, sizes, seconds)
    print(text)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "plan.md").write_text(text)
        (args.out / "measured.json").write_text(json.dumps(store.rows, indent=1))


def measure_all(store: Store, sizes: dict, only: list[str]) -> None:
    if "copies" in only:
        measure_copies(store, sizes["copies"], sizes["si"])
    if "dict" in only:
        dict_run = measure_dictionary(store, sizes["dict"])
    if "resolve" in only:
        title_run = measure_resolve(store, sizes["resolve"], linked_parts=16)
    if "worker" in only and "dict" in only and "resolve" in only:
        measure_worker(store, dict_run, title_run, "worker")
    if "kg" in only:
        measure_kg(store, sizes["kg"])


if __name__ == "__main__":
    main()
