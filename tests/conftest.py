"""Session fixtures shared by several test modules: the production-shaped stand-ins of
`production_fixtures` (built once per session: the tokenizer trains in ~10 s, the full-size KG is 118 MB)."""

from __future__ import annotations

import pytest
from production_fixtures import byte_bpe_roberta, hub_kg


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory):
    """A local RoBERTa folder: byte-level BPE trained on the sample, random 2-layer RobertaForMaskedLM."""
    return byte_bpe_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def hub_kg_full(tmp_path_factory):
    """Wikidata5M's entity count and hub tails of degree 10,000 around the sample KG."""
    return hub_kg(tmp_path_factory.mktemp("hub-kg"))


@pytest.fixture(scope="session")
def hub_kg_small(tmp_path_factory):
    """Hub tails of degree 3,000 (past the 2,148 where INT32 `degree * 10**6` overflowed), 20k entities."""
    return hub_kg(tmp_path_factory.mktemp("hub-kg-small"), n_entities=20_000, hub_degree=3_000)


@pytest.fixture(scope="session")
def hub_kg_rehearsal(tmp_path_factory):
    """The rehearsal's KG: hub tails of degree 10,000 among 600k entities (see `enwiki_rehearsal`)."""
    from production_fixtures import REHEARSAL_KG_ENTITIES

    return hub_kg(tmp_path_factory.mktemp("hub-kg-rehearsal"), n_entities=REHEARSAL_KG_ENTITIES)
