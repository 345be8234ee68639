"""Text -> token ids as the text reads inside a sentence: the one rule for every id list made from a label.

`instances` hold token ids, so a label turned into ids by one stage (a CKA target in `select`) must be
the ids another stage finds in the text (a mention's tokens) and a third one scores (a probe object).
Tokenizers disagree about a word at the start of a text: WordPiece drops the space before a word
(`Paris` -> `paris` either way), byte-level BPE keeps it as part of the token (`ĠParis` inside a
sentence, `Paris` at the very start of a text), SentencePiece marks it (`▁Paris`). A label is
therefore encoded after a one-word carrier (`"a " + label`), and its tokens are those whose character
span overlaps the label: the same overlap rule `preprocessing.sequences` uses to find a mention's
tokens, so a label and a mention of it get the same ids under every tokenizer family.

Both `preprocessing` (CKA targets) and `trelm` (probe objects, candidates) use it; they share nothing but
`storage`, so it lives here. It needs a fast tokenizer (character offsets), as the sequences do.
"""

from __future__ import annotations

from collections.abc import Sequence

_CARRIER = "a "  # one short word and a space: the label then starts a word in the middle of a text


def in_text_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text as it reads after a space inside a sentence (no special tokens)."""
    if not texts:
        return []
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: labels need character offsets "
            "(load the model's tokenizer with use_fast=True)"
        )
    labels = [text.strip() for text in texts]
    encoded = tokenizer(
        [_CARRIER + label for label in labels],
        add_special_tokens=False,
        return_offsets_mapping=True,
        verbose=False,
    )
    start = len(_CARRIER)
    return [
        [i for i, (a, b) in zip(ids, offsets, strict=True) if b > start and a < start + len(label)]
        for ids, offsets, label in zip(encoded["input_ids"], encoded["offset_mapping"], labels, strict=True)
    ]


def in_text_id(tokenizer, text: str) -> int | None:
    """The id of `text` when it is exactly one known vocabulary token after a space, else None."""
    ids = in_text_ids(tokenizer, [text])[0]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        return None
    return ids[0]
