"""Code versions from the imports (storage.code): a stage's version covers every module of ours it
imports, however it imports it, and nothing it does not import."""

from pathlib import Path

import pytest

from storage import code

FILES = {
    "storage/__init__.py": "",
    "storage/base.py": "X = 1\n",
    "preprocessing/__init__.py": "",
    "preprocessing/stage.py": (
        "import json\nfrom storage import base\nfrom . import helper\n\n"
        "def run():\n    from preprocessing.lazy import later  # imported only when it runs\n"
    ),
    "preprocessing/helper.py": "from .deep.inner import thing\n",
    "preprocessing/deep/__init__.py": "",
    "preprocessing/deep/inner.py": "from ..leaf import value\nthing = value\n",
    "preprocessing/leaf.py": "value = 2\n",
    "preprocessing/lazy.py": "later = 3\n",
    "preprocessing/unrelated.py": "import preprocessing.stage\n",
}


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(code, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(code, "PROJECT_PACKAGES", ("preprocessing", "storage"))
    return tmp_path


def _names(project: Path, paths: list[Path]) -> set[str]:
    return {str(p.relative_to(project)) for p in paths}


def test_closure_follows_absolute_relative_submodule_and_lazy_imports(project):
    assert _names(project, code.module_closure("preprocessing.stage")) == {
        "preprocessing/__init__.py",
        "preprocessing/stage.py",
        "preprocessing/helper.py",  # `from . import helper`: a submodule, not a name in __init__
        "preprocessing/deep/__init__.py",
        "preprocessing/deep/inner.py",  # `from .deep.inner import thing`
        "preprocessing/leaf.py",  # `from ..leaf import value`, two levels up from deep.inner
        "preprocessing/lazy.py",  # imported inside a function
        "storage/__init__.py",
        "storage/base.py",
    }


def _edit(project: Path, name: str) -> None:
    with open(project / name, "a") as f:
        f.write("# edited\n")


@pytest.mark.parametrize("edited", ["preprocessing/leaf.py", "storage/base.py", "preprocessing/lazy.py"])
def test_editing_an_imported_module_changes_the_version(project, edited):
    before = code.module_code_version("preprocessing.stage")
    _edit(project, edited)
    assert code.module_code_version("preprocessing.stage") != before


def test_editing_a_module_the_stage_does_not_import_keeps_the_version(project):
    before = code.module_code_version("preprocessing.stage")
    leaf = code.module_code_version("preprocessing.leaf")
    _edit(project, "preprocessing/unrelated.py")  # it imports the stage, not the other way round
    _edit(project, "preprocessing/stage.py")  # and the stage is not imported by leaf
    assert code.module_code_version("preprocessing.leaf") == leaf
    assert code.module_code_version("preprocessing.stage") != before


def test_same_file_name_in_two_packages_counts_twice(project):
    (project / "storage/leaf.py").write_text("value = 2\n")  # same name and bytes as preprocessing/leaf.py
    one = code.code_version([project / "preprocessing/leaf.py"])
    assert code.code_version([project / "storage/leaf.py"]) != one


def test_unknown_module_is_an_error(project):
    with pytest.raises(ValueError, match="json"):
        code.module_code_version("json")


def test_real_stages_cover_the_modules_the_issue_named():
    """The bug this replaces: ingest hashed a hand list and select only select.py."""
    ingest = _names(code.PROJECT_ROOT, code.module_closure("preprocessing.ingest"))
    select = _names(code.PROJECT_ROOT, code.module_closure("preprocessing.select"))
    assert {"preprocessing/wikitext.py", "storage/shards.py"} <= ingest
    assert {"preprocessing/importance.py", "preprocessing/sequences.py", "storage/tokens.py"} <= select
    assert "preprocessing/importance.py" not in ingest


def test_a_checkout_elsewhere_has_the_same_version(project, tmp_path_factory, monkeypatch):
    import shutil

    before = code.module_code_version("preprocessing.stage")
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "checkout"
    shutil.copytree(project, elsewhere)
    monkeypatch.setattr(code, "PROJECT_ROOT", elsewhere)
    assert code.module_code_version("preprocessing.stage") == before
