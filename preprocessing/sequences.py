"""Pages -> model input sequences of whole sentences, with the exact token span of every mention.

A page is tokenized once, without special tokens, by a fast (Rust) tokenizer that reports the
character span of every token. Everything after that is arithmetic on two sorted integer arrays,
token starts and token ends, done with `np.searchsorted`:

- A mention [start, end) covers the tokens whose character span overlaps it: the first token that
  ends after `start` up to the last token that starts before `end`. Overlap (not containment) is
  what makes this exact for both token styles: WordPiece pieces (`##ing`) carry the span of their
  characters, while byte-level BPE tokens carry their leading space (`Ġparis` spans " paris")
  unless the tokenizer trims offsets; either way the overlap picks the same tokens, and an empty
  whitespace token (trimmed to zero width) never overlaps anything.
- A sentence starts at the first token that ends after its first character, so the sentence
  starts cut the token array into consecutive units. Only the starts are used: text between two
  sentences (a line break, which byte-level vocabularies keep as a token) stays with the sentence
  before it and no token is lost.
- Units are packed greedily, in order, into sequences of at most `max_seq_len` tokens counting the
  special tokens; a unit longer than the budget is cut at token boundaries into budget-sized
  pieces. That can split a word between two WordPiece pieces, but only a sentence longer than a
  whole sequence is cut (rare at 128 tokens), and every token is kept.

A mention whose tokens do not all fall in one sequence is dropped and listed in `Sequence.cut` of
the sequence where it starts; a mention that covers no token at all (only whitespace or characters
the normalizer removes) is listed in `Sequence.untokenized` of the sequence at its position. Every
mention is therefore in exactly one of `mentions`, `cut`, `untokenized` of one sequence, and the
caller counts the drops by reason. (A page without a single token has no sequence to hold them:
an empty text has no mentions either.)

Special tokens come from the tokenizer's own post-processor (CLS/SEP for BERT, <s>/</s> for
RoBERTa): a probe text is encoded once with them and the special tokens before and after its
content are kept as the prefix and suffix of every sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from storage.errors import ConfigError
from storage.tokens import model_location


@dataclass
class SequenceMention:
    tok_start: int  # token span [tok_start, tok_end) into Sequence.input_ids, special tokens included
    tok_end: int
    mention: int  # index into the page's mention list


@dataclass
class Sequence:
    page_id: int
    input_ids: list[int]
    mentions: list[SequenceMention]
    cut: list[int] = field(default_factory=list)  # mentions starting here, dropped: they end in the next one
    untokenized: list[int] = field(default_factory=list)  # mentions here covering no token, dropped


def load_tokenizer(name: str = "minilm"):
    """A fast tokenizer: "minilm" (the packaged encoder), a local folder, or a hub id."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_location(name))
    if not tokenizer.is_fast:
        raise ConfigError(
            f"{name}: no fast tokenizer, and only a fast one reports character offsets",
            fix="set select.si.encoder to a model with a fast tokenizer",
        )
    return tokenizer


@lru_cache(maxsize=8)
def special_tokens(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special token ids the tokenizer puts before and after one sequence's content (cached: the
    probe is a tokenizer call, and `page_sequences` should make one per page)."""
    probe = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True, verbose=False)
    ids, special = probe["input_ids"], probe["special_tokens_mask"]
    first = special.index(0)
    last = len(special) - special[::-1].index(0)
    return tuple(ids[:first]), tuple(ids[last:])


def page_sequences(
    tokenizer,
    page_id: int,
    text: str,
    sentences: list[tuple[int, int]],
    mentions: list[tuple[int, int]],
    max_seq_len: int,
) -> list[Sequence]:
    """Sequences of whole sentences of one page, each with the token spans of the mentions inside it."""
    prefix, suffix = special_tokens(tokenizer)
    budget = max_seq_len - len(prefix) - len(suffix)
    if budget < 1:
        specials = len(prefix) + len(suffix)
        raise ConfigError(
            f"max_seq_len {max_seq_len} leaves no room beside {specials} special tokens",
            fix="raise select.max_seq_len",
        )
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids = encoding["input_ids"]
    if not ids:
        return []
    offsets = np.array(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    sentence_starts = np.array([s for s, _ in sentences], dtype=np.int64)
    windows = pack(np.searchsorted(offsets[:, 1], sentence_starts, side="right"), len(ids), budget)
    sequences = [Sequence(page_id, [*prefix, *ids[a:b], *suffix], []) for a, b in windows]
    _place(sequences, windows, *token_spans(offsets, mentions), len(prefix))
    return sequences


def token_spans(offsets: np.ndarray, mentions: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token spans [first, stop) of character spans: the tokens overlapping each (see the module doc)."""
    spans = np.array(mentions, dtype=np.int64).reshape(-1, 2)
    first = np.searchsorted(offsets[:, 1], spans[:, 0], side="right")
    stop = np.searchsorted(offsets[:, 0], spans[:, 1], side="left")
    # an empty span would "overlap" the token around it: make it cover nothing, so it counts as untokenized
    return first, np.where(spans[:, 1] > spans[:, 0], stop, first)


def pack(unit_starts: np.ndarray, n_tokens: int, budget: int) -> list[tuple[int, int]]:
    """Token windows [a, b) of at most `budget` tokens: whole units, greedily; long units in pieces.

    Units start at `unit_starts` (sorted, duplicates allowed); the first one starts at token 0
    whatever they say, so the windows tile [0, n_tokens) and no token is lost."""
    bounds = np.unique(np.concatenate([[0], unit_starts[unit_starts < n_tokens], [n_tokens]])).tolist()
    windows = []
    start = 0
    for a, b in zip(bounds, bounds[1:], strict=False):
        if b - start <= budget:
            continue
        if a > start:
            windows.append((start, a))
            start = a
        while b - start > budget:
            windows.append((start, start + budget))
            start += budget
    windows.append((start, n_tokens))
    return windows


def _place(sequences: list[Sequence], windows, tok_start: np.ndarray, tok_end: np.ndarray, shift: int):
    """Put every mention in the sequence where its first token is: kept, cut or untokenized.

    `shift` (the number of leading special tokens) turns page token indices into input_ids indices."""
    window_starts = np.array([a for a, _ in windows])
    home = np.searchsorted(window_starts, tok_start, side="right") - 1
    order = np.lexsort((tok_start, home)).tolist()
    home, first, stop = home.tolist(), tok_start.tolist(), tok_end.tolist()
    for m in order:
        seq, (a, b) = sequences[home[m]], windows[home[m]]
        if stop[m] <= first[m]:
            seq.untokenized.append(m)
        elif stop[m] > b:
            seq.cut.append(m)
        else:
            seq.mentions.append(SequenceMention(first[m] - a + shift, stop[m] - a + shift, m))
