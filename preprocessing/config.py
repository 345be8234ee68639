"""Every config of the `preprocessing` stages in one module (pydantic only, no stage code): what
`flows.config` assembles into the pipeline's config and what each stage takes as its argument. The
stage modules import their section from here; defaults and the reasons for them are in the fields'
descriptions.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse, urlsplit

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage.duck import MemoryLimit
from storage.errors import ConfigError

# Wikimedia asks dump downloaders for a User-Agent with a way to reach the operator: the person
# running the pipeline gives theirs in TRELM_CONTACT (an e-mail or URL) or in download.user_agent.
CONTACT_ENV = "TRELM_CONTACT"


_WIKIMEDIA_HOSTS = ("dumps.wikimedia.org", "dumps.wikimedia.your.org")


def _package_version() -> str:
    try:
        return version("trelm-pipeline")
    except PackageNotFoundError:
        return "0+unknown"


def _default_user_agent() -> str:
    contact = os.environ.get(CONTACT_ENV, "").strip()
    who = f"contact: {contact}" if contact else f"no contact given: set {CONTACT_ENV}"
    return f"trelm-pipeline/{_package_version()} (Wikipedia dumps downloader; {who})"


class DownloadConfig(pydantic.BaseModel):
    """Where to download a dump run from and how politely."""

    model_config = pydantic.ConfigDict(extra="forbid")

    mirror: str = Field(
        "https://dumps.wikimedia.org",
        pattern=r"^(https?|file)://",
        description="Dump mirror base URL: http(s)://host[/path] or file:///local/mirror (a folder laid "
        "out like the mirror: {wiki}/{date}/dumpstatus.json).",
    )
    wiki: str = Field("enwiki", pattern=r"^[a-z][a-z0-9_]*$", description="Wiki database name, e.g. enwiki.")
    date: str = Field(
        "latest",
        pattern=r"^(latest|\d{8})$",
        description="Dump run date YYYYMMDD, or 'latest' for the newest run whose needed jobs are all done.",
    )
    layout: Literal["split", "recombined"] = Field(
        "split",
        description="'split': the multistream files in parts (pages-articles-multistreamN + indexN), which "
        "ingest can read in parallel; 'recombined': the single multistream file and its index.",
    )
    max_connections: int = Field(
        2, ge=1, description="Files downloaded at once. Wikimedia etiquette: at most 2 per client."
    )
    user_agent: str = Field(
        default_factory=_default_user_agent,
        min_length=1,
        description="User-Agent header; Wikimedia requires a descriptive one with contact information.",
    )
    retries: int = Field(5, ge=0, description="Retries per request after a network error or a bad transfer.")
    backoff_s: float = Field(2.0, ge=0, description="First retry delay in seconds; doubles with each retry.")
    timeout_s: float = Field(60.0, gt=0, description="Connect and read timeout of each request, in seconds.")
    chunk_bytes: int = Field(1 << 20, ge=1, description="Read/write/hash chunk size in bytes.")

    @pydantic.field_validator("mirror")
    @classmethod
    def _strip_slash(cls, mirror: str) -> str:
        return mirror.rstrip("/")

    @pydantic.model_validator(mode="after")
    def _etiquette(self) -> DownloadConfig:
        # Other mirrors set their own limits; Wikimedia's own servers ask for at most 2 connections.
        if urlparse(self.mirror).hostname in _WIKIMEDIA_HOSTS and self.max_connections > 2:
            raise ValueError("max_connections must be at most 2 for Wikimedia's dump servers")
        return self


class IngestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="Extraction processes."
    )
    pages_per_part: int = Field(
        20_000,
        ge=1,
        description="Pages (all namespaces, redirects included) per output part: the unit of resume.",
    )
    rows_per_row_group: int = Field(
        512, ge=1, description="Articles per Parquet row group (bounds writer memory)."
    )
    duckdb_memory_limit: MemoryLimit = Field(
        "2GB", description="DuckDB memory limit for the link-resolution join."
    )
    keep_staging: bool = Field(False, description="Keep the unresolved staged parts after a successful run.")
    html_part_mb: int = Field(
        256,
        ge=1,
        description="Enterprise HTML dumps: a part also ends after this many MB of article JSON (an "
        "article's HTML is several times its wikitext, and a worker holds its part in memory).",
    )
    max_lost_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Largest share of the input that damage may lose before ingest fails: pages of "
        "streams that are cut or corrupt (counted by the index), pages cut or left without </page>, "
        "and, read in one pass, the bytes after a corrupt spot. 0: any damage fails the stage; what is "
        "allowed is counted by reason in the pages manifest.",
    )
    convert_output: bool = Field(
        False,
        description="Wikitext dumps: render {{convert}} with its conversion, '5 kilometres (3.1 mi)', "
        "instead of the value and unit alone. HTML dumps always have it (MediaWiki rendered them).",
    )


class KGConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(
        None,
        description="Folder of the Wikidata5M files (plain or .gz). None: no KG; linking still runs and "
        "every kg_id is null.",
    )
    triples: str = Field(
        "all",
        pattern=r"^(all|(transductive|inductive)_(train|valid|test))$",
        description="Triple file: `all` (wikidata5m_all_triplet.txt) or a split such as "
        "`transductive_train` (wikidata5m_transductive_train.txt).",
    )
    rows_per_part: int = Field(2_000_000, ge=1, description="Rows per output Parquet part.")
    duckdb_memory_limit: MemoryLimit = Field(
        "4GB", description="DuckDB memory limit; past it, tables spill to a temp folder under the run."
    )


class TagmeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_anchor_tokens: int = Field(
        6, ge=1, description="Longest anchor, in tokens (TAGME drops longer ones)."
    )
    min_link_count: int = Field(
        1,
        ge=1,
        description="Anchors linked fewer times are not in the dictionary. TAGME used 2 on a whole "
        "Wikipedia; on a dump where most anchors are linked once (an excerpt, one split file) 2 drops most.",
    )
    min_link_prob: float = Field(
        0.001,
        ge=0,
        le=1,
        description="Spotting threshold on lp(a) (0.001 in TAGME v1.1; later versions 0.02-0.1).",
    )
    link_prob_per_article: bool = Field(
        False,
        description="lp(a) = articles linking a / articles containing a (Wikify's keyphraseness), instead of "
        "per occurrence: an article links an entity once however often it names it, so per occurrence an "
        "often-named entity gets a small lp everywhere and rho prunes its mentions.",
    )
    max_candidates: int = Field(
        10, ge=1, description="Most common targets of an anchor that take part in voting."
    )
    tau: float = Field(
        0.02, ge=0, le=1, description="tau: candidates with commonness below it cannot be chosen."
    )
    epsilon: float = Field(
        0.3,
        gt=0,
        le=1,
        description="epsilon: top fraction by relatedness vote kept before the commonness pick.",
    )
    rho_threshold: float = Field(
        0.1, ge=0, le=1, description="rho: mentions scoring below it are pruned (0.1-0.3 useful)."
    )
    name_pieces: bool = Field(
        True,
        description="Drop a capitalized one-word spot that is only a piece of a longer capitalized name in "
        "the text (`Fort` of `Fort Riley`): the whole name is an entity the dictionary lacks.",
    )
    compound_pieces: bool = Field(
        True,
        description="Drop a lower-case spot followed by a content word (`decimal` of `decimal point`), "
        "unless its lp reaches `compound_min_link_prob`: the compound is the mention, the spot modifies it.",
    )
    compound_min_link_prob: float = Field(
        0.3, ge=0, le=1, description="Link probability at which a compound piece is spotted anyway."
    )
    discourse: bool = Field(
        True,
        description="One sense per discourse: later mentions of a surface the article links take its target "
        "(source `discourse`), unless TAGME's own pick is much more coherent (`discourse_veto`).",
    )
    short_forms: bool = Field(
        True,
        description="Discourse also spots the short forms of the article's linked names: a person's surname, "
        "a title without its parenthetical (capitalized in the text, unambiguous in the article).",
    )
    discourse_veto: float = Field(
        0.3,
        ge=0,
        le=1,
        description="TAGME's pick overrides the discourse sense when its coherence with the window exceeds "
        "the discourse sense's by more than this (1: never).",
    )
    kg_aliases: bool = Field(
        True,
        description="KG aliases (kg_entities) as spots and candidates of the entities they name (source "
        "`kg-alias`), ranked below anchor evidence by `kg_alias_prior`.",
    )
    kg_alias_prior: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Commonness given to a KG-alias candidate, and link probability of an alias that is no "
        "anchor: below what the dump's anchors give, so anchor evidence ranks first.",
    )
    context_tokens: int = Field(
        300,
        ge=10,
        description="Voting window: TAGME was made for short texts, so a long article is cut at line breaks "
        "into windows of about this many tokens, each disambiguated on its own (cost linear in length).",
    )


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class RemoteTagmeConfig(pydantic.BaseModel):
    """Where the TAGME web API is, how to authenticate to it and how politely to call it."""

    # A validation error must not echo a token that someone pasted into api_url.
    model_config = pydantic.ConfigDict(extra="forbid", hide_input_in_errors=True)

    api_url: str = Field(
        "https://tagme.d4science.org/tagme/tag",
        pattern=r"^https?://[^?#]+$",
        description="The TAGME /tag endpoint, without a query string: the token goes in the POST body.",
    )
    lang: str = Field("en", min_length=2, description="Wikipedia language of the service: en, de or it.")
    token_env: str = Field(
        "TAGME_GCUBE_TOKEN",
        min_length=1,
        description="Environment variable holding the D4Science gcube token.",
    )
    token_secret_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the token, used when the variable is unset."
    )
    min_rho: float = Field(0.0, ge=0, description="Keep annotations whose rho (confidence) is at least this.")
    max_chars: int = Field(
        4000,
        ge=1,
        description="Longest text sent in one request; longer texts go in pieces cut at sentences.",
    )
    rate_limit_per_s: float = Field(5.0, gt=0, description="Requests per second, across all threads.")
    retries: int = Field(
        3, ge=0, description="Retries after a network error, a timeout, HTTP 408, 429 or 5xx."
    )
    backoff_s: float = Field(1.0, ge=0, description="First retry delay in seconds; doubles with each retry.")
    timeout_s: float = Field(30.0, gt=0, description="Connect and read timeout of each request, in seconds.")

    @field_validator("api_url")
    @classmethod
    def _https_for_the_token(cls, url: str) -> str:
        """The token travels in the request body: only over https, or plain http to this machine."""
        parsed = urlsplit(url)
        if parsed.scheme != "https" and parsed.hostname not in _LOOPBACK:
            raise ConfigError(
                f"link.remote.api_url {parsed.scheme}://{parsed.hostname}: the token would travel "
                "unencrypted",
                fix="use an https:// endpoint (plain http:// only to localhost or 127.0.0.1)",
            )
        return url


class LinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    linker: Literal["local", "remote"] = Field(
        "local",
        description="`local`: TAGME over the run's own anchor dictionary; `remote`: the TAGME web API.",
    )
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="Linking processes.")
    tagme: TagmeConfig = Field(default_factory=TagmeConfig, description="Local TAGME parameters.")
    remote: RemoteTagmeConfig = Field(
        default_factory=RemoteTagmeConfig, description="The TAGME web API (linker: remote)."
    )
    duckdb_memory_limit: MemoryLimit = Field(
        "2GB", description="DuckDB memory limit for the dictionary merges and alignment."
    )
    max_error_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Largest share of pages the remote linker may fail on (after its retries) for the "
        "stage to complete; past it the stage fails and nothing is sealed. Failed pages are retried on "
        "the next run either way, unless the stage completed with them allowed.",
    )


class KGEConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["train", "graphvite"] = Field(
        "train",
        description="`train`: TransE (PyKEEN) on the run's KG triples; `graphvite`: a pretrained GraphVite "
        "Wikidata5M model (graphvite_path).",
    )
    graphvite_path: Path | None = Field(
        None, description="A GraphVite Wikidata5M pickle, e.g. transe_wikidata5m.pkl (source `graphvite`)."
    )
    dim: int = Field(64, ge=1, description="TransE dimension when training (GraphVite's models have 512).")
    epochs: int = Field(100, ge=1, description="Training epochs over the KG triples.")
    batch_size: int = Field(
        1024,
        ge=1,
        description="Training triples per batch. Every step also updates and re-normalises the whole entity "
        "matrix, so a large KG wants large batches.",
    )
    learning_rate: float = Field(0.01, gt=0, description="Adam learning rate.")
    seed: int = Field(0, description="Seed of the split, the initialisation and the batch order.")
    eval_triples: int = Field(
        1000,
        ge=0,
        description="Triples held out for link-prediction evaluation (at most a tenth of them; 0: none). "
        "They are not trained on.",
    )
    device: str = Field(
        "auto", description="Torch device for training: `auto` (cuda when available), cpu, cuda."
    )

    @model_validator(mode="after")
    def _graphvite_needs_a_path(self) -> KGEConfig:
        if self.source == "graphvite" and self.graphvite_path is None:
            raise ValueError("kge.source 'graphvite' needs kge.graphvite_path (e.g. transe_wikidata5m.pkl)")
        return self


class SIConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    encoder: str = Field(
        "minilm",
        description='Encoder for SI: "minilm" (the packaged all-MiniLM-L6-v2), a local folder or a hub id.',
    )
    replacement: Literal["mask", "unk", "drop"] = Field(
        "mask",
        description="How the mention is replaced in h_rep: every token to the mask token, to the unknown "
        "token, or the tokens removed.",
    )
    pooling: Literal["mean", "cls"] = Field(
        "mean",
        description="Sentence representation: mean of the last hidden states over non-padding tokens, "
        "or the first token.",
    )
    batch_size: int = Field(64, ge=1, description="Rows per forward pass (a sequence or one replaced copy).")
    device: str = Field("auto", description='Torch device; "auto": cuda when available, else cpu.')
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Compute precision (autocast): auto is bfloat16 on a GPU that has it (float16 on "
        "one that does not) and float32 on CPU.",
    )


class SelectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_seq_len: int = Field(128, ge=8, description="Tokens per training sequence, special tokens included.")
    policy: Literal["both", "long_tail", "frequent"] = Field(
        "both",
        description="Which entities may be injected (paper Figure 3): long-tail, frequent, or both.",
    )
    si_top_k: int = Field(
        2, ge=0, description="Important entities per sequence: the top k by SI (0: no limit)."
    )
    si_threshold: float | None = Field(
        None, description="Also require SI >= this (None: top-k alone decides)."
    )
    long_tail_max_freq: int | None = Field(
        None,
        ge=1,
        description="Entities mentioned at most this often are long-tail; None: from long_tail_quantile.",
    )
    long_tail_quantile: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Cut-off as a quantile of the entity frequencies (0.8: the rarest 80% of entities).",
    )
    long_tail_word_max_count: int = Field(
        100,
        ge=1,
        description="Tokens seen at most this often (and at least word_min_count) are long-tail words.",
    )
    word_min_count: int = Field(5, ge=1, description="Tokens rarer than this are noise, not long-tail words.")
    max_tail_tokens: int = Field(
        8, ge=1, description="CKA target: at most this many tokens of the tail's label."
    )
    target_policy: Literal["uniform", "highest_degree"] = Field(
        "uniform",
        description="Which triple of an important entity is its CKA target: a seeded uniform choice among "
        "its (not held-out) triples, or the one whose tail has the highest KG degree (hub tails).",
    )
    target_seed: int = Field(0, description="Seed of the uniform target choice and of the held-out split.")
    held_out_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of each head's triples held out (stochastic rounding per head, at least one "
        "triple kept): never a CKA target, not trained by the KG embeddings; see `held_out_triples`.",
    )
    phrase_max_words: int = Field(
        8,
        ge=1,
        description="Relation phrases (`relation_phrases`): the longest text, in words, between a head's "
        "mention and its tail's that counts as a wording of their relation.",
    )
    phrase_min_count: int = Field(
        2, ge=1, description="Relation phrases: a wording seen fewer times than this is noise, not kept."
    )
    phrases_per_relation: int = Field(
        5, ge=1, description="Relation phrases: the most frequent wordings kept per relation (rank 1 first)."
    )
    phrase_content_words: bool = Field(
        True,
        description="Relation phrases: drop a wording whose words are all function words (spaCy's English "
        "stop words: 'and', ', of the'), else coordination ('X and Y') wins for symmetric relations.",
    )
    duckdb_memory_limit: MemoryLimit = Field(
        "2GB", description="DuckDB memory limit of the relation-phrase count (spills under the stage folder)."
    )
    si: SIConfig = Field(default_factory=SIConfig, description="Encoder and SI scoring.")
    kge: KGEConfig = Field(
        default_factory=KGEConfig, description="Knowledge embeddings h_e of the KG entities in use."
    )
