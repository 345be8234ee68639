"""Session fixtures shared by several test modules: the production-shaped stand-ins of
`production_fixtures` (built once per session: the tokenizer trains in ~10 s, the full-size KG is 118 MB)
and the one whole pipeline run of the suite (`rehearsal_run`), which the README's commands query too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from production_fixtures import SAMPLE, byte_bpe_roberta, enwiki_rehearsal, hub_kg, override_args

REPO = Path(__file__).resolve().parents[1]

# `make test` runs the suite on 2 pytest-xdist workers (`-n 2 --dist loadfile`): about half of a serial
# run's wall time is spent waiting on subprocesses and servers, which the other worker fills.
if WORKER := os.environ.get("PYTEST_XDIST_WORKER"):
    # a Prefect database per worker: flows run in-process without a harness use PREFECT_HOME's, and two
    # workers' ephemeral servers migrating one fresh database at once can fail
    os.environ["PREFECT_HOME"] = str(Path(tempfile.gettempdir()) / f"trelm-tests-prefect-{WORKER}")
os.environ.pop("PREFECT_API_URL", None)  # never a live server of `make serve` (each test starts its own)

REHEARSAL = "rehearsal"  # the group of the files that read the whole run: it is built once, on one worker
SLOW_FIRST = [REPO / "tests" / f"test_{name}.py" for name in ("deployment", "e2e_sample", "pretrain")]


@cache
def worker_group(test_file: Path) -> str:
    """The tests that share a worker: a file's (its module fixtures are built once), and all the files
    that take `rehearsal_run` (a second worker would build the 3-minute run again). Decided from the
    file's text: xdist's controller, which hands out the groups, collects no tests (and xdist's own
    `xdist_group` marks are lost on pytest 9.2, whose node ids it can no longer rewrite)."""
    try:
        text = test_file.read_text(encoding="utf-8")
    except OSError:  # not a file of ours (a doctest's module, say): a group of its own
        text = ""
    return REHEARSAL if "rehearsal_run" in text else str(test_file)


def _group_rank(test_file: Path) -> int:
    order = (REHEARSAL, *map(str, SLOW_FIRST))
    group = worker_group(test_file)
    return order.index(group) if group in order else len(order)


def pytest_collection_modifyitems(items):
    """The longest groups first (stable within), so that no worker ends the suite running one alone."""
    items.sort(key=lambda item: _group_rank(item.path))


@pytest.hookimpl(optionalhook=True)  # xdist's hook: a run without xdist has no such hook
def pytest_xdist_make_scheduler(config, log):
    """Whichever load mode `-n N` gets, whole groups of `worker_group` go to one worker each."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(config.rootpath / nodeid.split("::")[0])

    load_modes = ("load", "loadscope", "loadfile")
    return GroupScheduling(config, log) if config.getvalue("dist") in load_modes else None


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


def free_port() -> int:
    """A port no process of this machine listens on now (tests that start servers or ranks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class WholeRun:
    run_dir: Path
    settings: dict  # the rehearsal's overrides of the enwiki preset, each with its reason
    model: Path  # the byte-level BPE RoBERTa stand-in
    stdout: str  # what `trelm run` printed: a line per stage, then its epilogue
    stderr: str
    prefect_home: Path  # the ephemeral server's database: the run's flow runs and artifacts


@pytest.fixture(scope="session")
def rehearsal_run(tiny_roberta, hub_kg_rehearsal, tmp_path_factory) -> WholeRun:
    """`trelm run --config enwiki`, download -> evaluate, with only the settings of
    `production_fixtures.enwiki_rehearsal` changed (tests/test_rehearsal.py checks that)."""
    root = tmp_path_factory.mktemp("rehearsal")
    settings = enwiki_rehearsal(SAMPLE / "mirror", hub_kg_rehearsal, tiny_roberta, root / "eval-data")
    settings["pretrain.train.master_port"] = (free_port(), "location: a free port of this machine")
    data = root / "data"
    command = [sys.executable, "-m", "flows.cli", "run", "--config", "enwiki", "--data-root", str(data)]
    command += override_args(settings)
    env = {**os.environ, "TRELM_EVAL_DATA": str(root / "eval-data"), "PREFECT_HOME": str(root / "prefect")}
    env.pop("PREFECT_API_URL", None)  # the run's own ephemeral server, whose database stays in PREFECT_HOME
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    log = root / "stderr.log"  # the ranks' logs too: a failure's cause is often early in them
    log.write_text(done.stderr)
    assert done.returncode == 0, f"{done.stdout[-2000:]}{done.stderr[-4000:]}\nthe whole log: {log}"
    (run_dir,) = (data / "runs").iterdir()
    return WholeRun(run_dir, settings, tiny_roberta, done.stdout, done.stderr, root / "prefect")
