"""Cost of SI scoring beside the encoder's plain forward over the same inputs.

    python benchmarks/select_si.py [--sequences 256] [--seq-len 128] [--mentions-per-seq 4]
                                [--encoder minilm] [--device auto] [--batch-size 64] [--replacement mask]

Sequences are real text: the bundled sample's articles (`sample/src/articles/*.wiki`) cleaned by
`clean_wikitext`, cut into sentences by the link stage's sentencizer and packed by `page_sequences`
into sequences of at most `--seq-len` tokens; the mentions are the articles' own links. Every
sequence with at least `--mentions-per-seq` mentions is taken, with its first that many, until
`--sequences` are collected (cycling through them again if the sample runs short).

Two timings, each the best of 3 after a warm-up run, taking turns:
(a) `si_scores`: everything, from the Python lists to the per-sequence SI arrays;
(b) the encoder's forward alone over exactly the batches SI encodes (the originals plus one replaced
    copy per mention, the same batch size, length sorting and padding), prebuilt by
    `replaced_batches` outside the timing, under the same inference mode and autocast.
The ratio (a)/(b) is what SI costs beyond the forward passes it cannot avoid (target <= 1.25).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from preprocessing import tagme
from preprocessing.importance import (
    Rows,
    SIConfig,
    compute_dtype,
    load_encoder,
    replaced_batches,
    si_scores,
)
from preprocessing.sequences import page_sequences
from preprocessing.wikitext import clean_wikitext

ARTICLES = Path(__file__).resolve().parents[1] / "sample" / "src" / "articles"


def sample_sequences(tokenizer, n: int, seq_len: int, per_seq: int) -> tuple[list, list, int]:
    """(input_ids, spans) of `n` sequences with `per_seq` mentions each, and how many were distinct."""
    found = []
    for page_id, path in enumerate(sorted(ARTICLES.glob("*.wiki"))):
        text, links = clean_wikitext(path.read_text(encoding="utf-8"))
        doc = tagme.nlp()(text)
        _, starts, ends, _ = tagme.token_arrays(doc)
        sentences = tagme.sentence_spans(doc, starts, ends)
        mentions = [(ln.start, ln.end) for ln in links]
        for seq in page_sequences(tokenizer, page_id, text, sentences, mentions, seq_len):
            if len(seq.mentions) >= per_seq:
                found.append((seq.input_ids, [(m.tok_start, m.tok_end) for m in seq.mentions[:per_seq]]))
    if not found:
        raise SystemExit(f"no sequence of the sample has {per_seq} mentions")
    picked = [found[i % len(found)] for i in range(n)]
    return [ids for ids, _ in picked], [spans for _, spans in picked], min(n, len(found))


def best_times(runs: int, fns: dict, sync) -> dict[str, float]:
    """Best of `runs` for each function after a warm-up (allocator, kernels, caches). The functions
    take turns, so a burst of load from another process slows both alike rather than one of them."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(runs):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sequences", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--mentions-per-seq", type=int, default=4)
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--replacement", default="mask", choices=["mask", "unk", "drop"])
    args = ap.parse_args()

    import torch

    cfg = SIConfig(
        encoder=args.encoder, device=args.device, batch_size=args.batch_size, replacement=args.replacement
    )
    tokenizer, model = load_encoder(cfg)
    device = next(model.parameters()).device
    dtype = compute_dtype(cfg, device)
    sequences, spans, distinct = sample_sequences(
        tokenizer, args.sequences, args.seq_len, args.mentions_per_seq
    )
    rows = Rows.build(sequences, spans, tokenizer.pad_token_id, cfg.replacement == "drop")
    batches = list(replaced_batches(tokenizer, rows, cfg, device))
    n_rows = len(rows.seq)
    real = sum(int(b["attention_mask"].sum()) for _, b in batches)
    padded = sum(b["input_ids"].numel() for _, b in batches)

    def forward_only() -> None:
        autocast = (
            torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            for _, batch in batches:
                model(**batch)

    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    times = best_times(
        3,
        {
            "si_scores": lambda: si_scores(model, tokenizer, sequences, spans, cfg),
            "forward only": forward_only,
        },
        sync,
    )

    print(f"encoder {args.encoder} on {device} ({dtype}, {torch.get_num_threads()} CPU threads)", end=", ")
    print(f"replacement {cfg.replacement}, batch {cfg.batch_size}")
    print(f"{len(sequences)} sequences ({distinct} distinct) of <= {args.seq_len} tokens", end=", ")
    print(f"{args.mentions_per_seq} mentions each: {n_rows} rows, {real / padded:.1%} of padded tokens real")
    print()
    print("| run | seconds | sequences/s | forwards/s |")
    print("|---|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t:.3f} | {len(sequences) / t:,.1f} | {n_rows / t:,.1f} |")
    print()
    print(f"SI time / forward time: {times['si_scores'] / times['forward only']:.3f} (target <= 1.25)")


if __name__ == "__main__":
    main()
