"""The code version of a stage: its module plus every module of ours that it imports, found from the
import statements (read with `ast`, nothing is imported), so that editing any file a stage runs
invalidates what the stage made, and editing a file it does not run leaves its outputs alone.

Imports anywhere in a file count (module level, inside functions, under `TYPE_CHECKING`): a stage
that imports lazily still runs that code. Only our own packages are followed; third-party versions
are the lock file's business. A package's `__init__.py` counts for every module under it, since
importing the module runs it.

Parsed imports and file hashes are cached per (path, size, mtime), so a long-lived worker sees an
edit and a cache key costs a few `stat` calls.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PROJECT_PACKAGES = ("flows", "preprocessing", "storage", "trelm")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """The source file of our module `name` (a package's `__init__.py`); None for anything else."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imported_names(node: ast.AST, package: str) -> list[str]:
    """Every dotted name an import statement may load: `from a import b` may be module a.b."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: `from ..x import y` climbs level-1 packages above this one
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


@lru_cache(maxsize=4096)
def _imports(path: Path, package: str, _stamp: tuple[int, int]) -> tuple[str, ...]:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    names = (n for node in ast.walk(tree) for n in _imported_names(node, package))
    return tuple(sorted({n for n in names if module_file(n) is not None}))


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def module_closure(*names: str) -> list[Path]:
    """The files of modules `names`, their packages' `__init__`s and everything of ours they import."""
    seen: dict[str, Path] = {}
    todo = [p for n in names for p in _with_parents(n)]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        imported = _imports(path, _package_of(name, path), _stamp(path))
        todo.extend(p for n in imported for p in _with_parents(n))
    return sorted(set(seen.values()))


@lru_cache(maxsize=4096)
def _file_digest(path: Path, _stamp: tuple[int, int]) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def _package_path(path: Path) -> str:
    """`flows/config.py` for .../flows/config.py: the path below the outermost package, wherever the
    checkout lives (two `config.py` in two packages are two files, a moved checkout is the same code)."""
    top = path.parent
    while (top / "__init__.py").is_file() and (top.parent / "__init__.py").is_file():
        top = top.parent
    return str(path.relative_to(top.parent if (top / "__init__.py").is_file() else top))


def code_version(sources: list[Path]) -> str:
    """A hash of source files, each named by its place in its package."""
    digest = hashlib.sha256()
    for path in sorted(Path(p).resolve() for p in sources):
        digest.update(_package_path(path).encode() + b"\0" + _file_digest(path, _stamp(path)))
    return digest.hexdigest()[:16]


def module_code_version(*names: str) -> str:
    """The code version of what modules `names` run: their files and every module of ours they import."""
    missing = [n for n in names if module_file(n) is None]
    if missing:
        raise ValueError(f"not a module of this project: {', '.join(missing)}")
    return code_version(module_closure(*names))
