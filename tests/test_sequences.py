"""Page -> sequences: exact mention token spans for WordPiece and byte-level BPE, packing, drops."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from preprocessing.sequences import load_tokenizer, pack, page_sequences

SENTENCES = [
    "Zürich hosted Pyotr Ilyich Tchaikovsky in 1870.",
    "Later, Anne-Marie Duchêne moved to St. Louis, Missouri.",
    "The São Paulo (Brazil) orchestra played Électricité!",
    "Nobody  noticed.",
]
SURFACES = [
    "Zürich",  # at the start of the page and of a sentence, accented
    "Pyotr Ilyich Tchaikovsky",  # multi-piece words
    "Anne-Marie Duchêne",  # inner punctuation
    "St. Louis, Missouri",  # punctuation inside
    "São Paulo",
    "(Brazil)",  # mention with its brackets
    "Électricité",  # at the end, before punctuation
]
TEXT = "\n".join(SENTENCES)


def _spans(pieces: list[str], text: str) -> list[tuple[int, int]]:
    return [(text.index(p), text.index(p) + len(p)) for p in pieces]


def _sentence_spans() -> list[tuple[int, int]]:
    return _spans(SENTENCES, TEXT)


def _bpe_tokenizer(trim_offsets: bool):
    """A RoBERTa-style byte-level BPE trained here: 5 specials + 256 bytes + about 300 merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=560, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [*SENTENCES, "the orchestra moved to the city and played music in the hall"] * 10
    tok.train_from_iterator(corpus, trainer)
    bos, eos = ("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))
    tok.post_processor = processors.RobertaProcessing(eos, bos, trim_offsets=trim_offsets)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


@pytest.fixture(scope="module")
def minilm():
    return load_tokenizer("minilm")


@pytest.fixture(scope="module", params=[True, False], ids=["bpe-trimmed", "bpe-untrimmed"])
def bpe(request):
    return _bpe_tokenizer(request.param)


def _plain(text: str, uncased: bool) -> str:
    """Text without whitespace; lower-cased and accent-free for an uncased vocabulary."""
    if uncased:
        text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if not unicodedata.combining(c))
    return "".join(text.split())


def _check_spans(tokenizer, sequences, mentions, uncased: bool, first: int, last: int) -> None:
    for seq in sequences:
        assert seq.input_ids[0] == first and seq.input_ids[-1] == last
        for m in seq.mentions:
            start, end = mentions[m.mention]
            decoded = tokenizer.decode(seq.input_ids[m.tok_start : m.tok_end])
            assert _plain(decoded, uncased) == _plain(TEXT[start:end], uncased), (decoded, TEXT[start:end])


@pytest.mark.parametrize("max_seq_len", [512, 24, 16])
def test_wordpiece_spans_decode_to_the_mentions(minilm, max_seq_len):
    mentions = _spans(SURFACES, TEXT)
    sequences = page_sequences(minilm, 7, TEXT, _sentence_spans(), mentions, max_seq_len)
    assert all(seq.page_id == 7 for seq in sequences)
    _check_spans(minilm, sequences, mentions, True, minilm.cls_token_id, minilm.sep_token_id)
    kept = [m.mention for seq in sequences for m in seq.mentions]
    assert len(kept) >= 4  # at 16 tokens the long sentences are cut, and so are some mentions
    if max_seq_len == 512:  # everything fits: nothing is dropped
        assert len(sequences) == 1 and kept == list(range(len(SURFACES)))
    pieces = {minilm.convert_ids_to_tokens(i) for seq in sequences for i in seq.input_ids}
    assert any(p.startswith("##") for p in pieces)  # the multi-piece case is really exercised


@pytest.mark.parametrize("max_seq_len", [512, 20])
def test_byte_level_spans_decode_to_the_mentions(bpe, max_seq_len):
    mentions = _spans(SURFACES, TEXT)
    sequences = page_sequences(bpe, 3, TEXT, _sentence_spans(), mentions, max_seq_len)
    _check_spans(bpe, sequences, mentions, False, bpe.bos_token_id, bpe.eos_token_id)
    if max_seq_len == 512:
        assert [m.mention for m in sequences[0].mentions] == list(range(len(SURFACES)))
        # the mention after a space starts at the token carrying that space ("Ġ"), never before it
        m = sequences[0].mentions[SURFACES.index("São Paulo")]
        assert bpe.convert_ids_to_tokens(sequences[0].input_ids[m.tok_start]).startswith("Ġ")


def test_packing_keeps_whole_sentences_and_every_token(minilm):
    counts = [len(minilm(s, add_special_tokens=False)["input_ids"]) for s in SENTENCES]
    # room for the first two sentences but not three: the sequences are exactly 1+2, 3+4
    max_seq_len = counts[0] + counts[1] + 2
    assert counts[2] + counts[3] + 2 <= max_seq_len
    sequences = page_sequences(minilm, 1, TEXT, _sentence_spans(), [], max_seq_len)
    assert [len(s.input_ids) - 2 for s in sequences] == [counts[0] + counts[1], counts[2] + counts[3]]
    assert all(len(s.input_ids) <= max_seq_len for s in sequences)
    whole = minilm(TEXT, add_special_tokens=False)["input_ids"]
    assert [i for s in sequences for i in s.input_ids[1:-1]] == whole


def test_pack_greedy_and_long_units():
    # units [0,3) [3,5) [5,9) [9,12), budget 5: 0-5 holds two units, 5-9 one, 9-12 the last
    assert pack(np.array([0, 3, 5, 9]), 12, 5) == [(0, 5), (5, 9), (9, 12)]
    # one unit of 12 tokens is cut at token boundaries; a unit start missing at 0 is implied
    assert pack(np.array([4]), 12, 3) == [(0, 3), (3, 4), (4, 7), (7, 10), (10, 12)]
    assert pack(np.array([], dtype=np.int64), 2, 5) == [(0, 2)]


def test_mention_across_a_cut_is_dropped_and_reported(minilm, bpe):
    text = "Pyotr Ilyich Tchaikovsky wrote music. Then he rested."
    mentions = [*_spans(["Pyotr Ilyich Tchaikovsky", "music", "rested"], text), (20, 20)]  # last: empty
    # the tiny BPE splits "rested" in 3 pieces: "he Ġ r | est ed ." cuts it too
    for tokenizer, expect_cut in ((minilm, [0]), (bpe, [0, 2])):
        # the name is 5+ tokens and a sequence of 5 holds 3: the first sentence is cut inside it
        sequences = page_sequences(tokenizer, 1, text, _spans(["Pyotr", "Then"], text), mentions, 5)
        assert all(len(s.input_ids) <= 5 for s in sequences)
        kept = [m.mention for s in sequences for m in s.mentions]
        cut = [m for s in sequences for m in s.cut]
        untokenized = [m for s in sequences for m in s.untokenized]
        assert sequences[0].cut[0] == 0  # reported by the sequence where the mention starts
        assert cut == expect_cut and untokenized == [3] and sorted(kept + cut + untokenized) == [0, 1, 2, 3]


def test_whitespace_mention_covers_no_wordpiece(minilm):
    text = "Then  he rested."
    (seq,) = page_sequences(minilm, 1, text, [(0, len(text))], [(5, 6), (6, 8)], 16)
    assert seq.untokenized == [0] and [m.mention for m in seq.mentions] == [1]


def test_max_seq_len_must_leave_room(minilm):
    with pytest.raises(ValueError, match="no room"):
        page_sequences(minilm, 1, TEXT, _sentence_spans(), [], 2)
    assert page_sequences(minilm, 1, "", [], [], 8) == []
