"""One error taxonomy (storage.errors): every exception class of ours is a TrelmError, and the CLI's one
handler prints its message and fix and exits with its kind's code."""

import importlib
import inspect
import pickle
import pkgutil

import pytest
from typer.testing import CliRunner

import flows
import preprocessing
import storage
import trelm
from flows import stages
from flows.cli import app
from preprocessing.download import DownloadRetriesSpent
from storage.errors import TrelmError

runner = CliRunner()


def _exception_classes() -> list[type]:
    """Every exception class defined in our packages, found by importing each module."""
    classes = []
    for package in (flows, preprocessing, storage, trelm):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            classes += [
                cls
                for _, cls in inspect.getmembers(module, inspect.isclass)
                if cls.__module__ == module.__name__ and issubclass(cls, BaseException)
            ]
    return classes


CLASSES = _exception_classes()


def test_every_exception_class_of_ours_is_a_trelm_error():
    assert len(CLASSES) > 20  # the walk reaches the stages' modules, not only storage.errors
    assert [f"{c.__module__}.{c.__qualname__}" for c in CLASSES if not issubclass(c, TrelmError)] == []


def _stderr_lines(result) -> list[str]:
    return result.output.splitlines()  # CliRunner's output holds stderr too


def test_a_missing_dump_file_exits_2_with_the_fix(tmp_path):
    dump = tmp_path / "enwiki-20260301-pages-articles.xml.bz2"
    result = runner.invoke(app, ["ingest", "--dump", str(dump), "--data-root", str(tmp_path)])
    assert result.exit_code == 2
    lines = _stderr_lines(result)
    assert f"error: {dump}: no such file" in lines
    assert any(line.startswith("fix: pass a pages-articles .xml or .xml.bz2") for line in lines)


def test_a_bad_config_value_exits_2_naming_the_key(tmp_path):
    result = runner.invoke(app, ["select", "--data-root", str(tmp_path), "--set", "ingest.workers=many"])
    assert result.exit_code == 2
    assert "ingest.workers" in result.output
    assert "fix: correct the settings named above, in the YAML file or with --set section.key=value" in (
        _stderr_lines(result)
    )


def test_a_bad_statement_names_the_views(tmp_path):
    run_dir = tmp_path / "runs" / "enwiki-20260301"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("{}\n")
    result = runner.invoke(app, ["sql", "--data-root", str(tmp_path), "SELEC 1"])
    assert result.exit_code == 2
    assert any(line.startswith("error: Parser Error") for line in _stderr_lines(result))
    assert "fix: correct the statement; the run's views: (none)" in _stderr_lines(result)


def test_a_retryable_error_exits_75(tmp_path, monkeypatch):
    def spent(cfg):
        raise DownloadRetriesSpent("http://mirror/enwiki/20260301/x.bz2", 3000, "timed out")

    monkeypatch.setattr(stages, "download", spent)
    result = runner.invoke(app, ["download", "--date", "20260301", "--data-root", str(tmp_path)])
    assert result.exit_code == 75
    assert "fix: run it again later: the download resumes where it stopped" in _stderr_lines(result)


def test_an_unexpected_exception_keeps_its_traceback(tmp_path, monkeypatch):
    def bug(cfg):
        raise KeyError("a bug")

    monkeypatch.setattr(stages, "download", bug)
    result = runner.invoke(app, ["download", "--date", "20260301", "--data-root", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)
    assert "error:" not in result.output


@pytest.mark.parametrize(
    "cls", [c for c in CLASSES if c.__init__ is TrelmError.__init__], ids=lambda c: c.__name__
)
def test_message_and_fix_survive_str_and_pickle(cls):
    """Logs and Prefect's failure messages carry str(exc): the fix must not be lost there (a builtin base
    listed before the TrelmError one would put OSError's str() first); a worker process's error reaches
    the parent pickled."""
    error = cls("what failed", fix="what to do")
    assert str(error) == "what failed: what to do"
    back = pickle.loads(pickle.dumps(error))
    assert (type(back), back.message, back.fix, back.exit_code) == (
        cls,
        "what failed",
        "what to do",
        cls.exit_code,
    )
