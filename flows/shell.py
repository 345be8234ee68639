"""What `trelm sql` and `trelm inspect` print, and `inspect`'s interactive session.

The session runs on prompt_toolkit's line editor when stdin is a terminal: editing keys, a history kept
per data root (`storage.layout.inspect_history`, so the Up arrow recalls the last session's queries),
Tab completion of view names, column names and dot commands, Ctrl-C to clear the line (or stop a
running query) and Ctrl-D or `.quit` to leave. A piped script is read line by line through the same
`Session`. Every DuckDB error is printed and the session goes on: a typo never ends it.

prompt_toolkit and rich are imported where they are used, so `trelm sql` starts fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path

import duckdb
import typer

from storage import duck

DOT_HELP = "commands: .tables, .schema VIEW, .quit; SQL statements end with ';' (Ctrl-C clears the line)"
DOT_COMMANDS = (".tables", ".schema", ".quit", ".exit", ".help")
# offered by completion besides the run's names: what starts and joins the queries one writes here
SQL_WORDS = (
    "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "LIMIT", "JOIN", "ON", "unnest", "count", "DESCRIBE",
)  # fmt: skip
PROMPT, CONTINUATION = "trelm> ", "   ...> "


# ----------------------------------------------------------------------------- tables


def print_table(columns: list[str], rows: list[tuple]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, show_lines=False)
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    Console(width=max(120, sum(len(c) + 3 for c in columns))).print(table)
    typer.echo(f"({len(rows)} rows)")


def cell(value: object, limit: int = 200) -> str:
    """A value as a table shows it: floats at 6 significant digits (a FLOAT column reaches Python as the
    nearest double, 3.41 as 3.4100000858306885), NULL for None, long texts cut."""
    if value is None:
        return "NULL"
    text = format(value, ".6g") if isinstance(value, float) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------- the session


class Session:
    """Lines in, statements run: a statement may span lines and runs at its ';'; dot commands are lines."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, views: list[str]):
        self.conn, self.views = conn, views
        self.buffer = ""

    @property
    def prompt(self) -> str:
        return CONTINUATION if self.buffer else PROMPT

    def columns(self, view: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.conn.execute(f"DESCRIBE {view}").fetchall()]

    @cached_property
    def names(self) -> list[str]:
        """Every view's name and column names, for completion (read once: completion runs per key)."""
        names = list(self.views)
        for view in self.views:
            names += [name for name, _ in self.columns(view) if name not in names]
        return names

    def clear(self) -> None:
        self.buffer = ""

    def feed(self, line: str) -> bool:
        """One line of input; True when the user leaves."""
        line = line.strip()
        if not self.buffer and line.startswith("."):
            return self._dot(line)
        self.buffer = f"{self.buffer} {line}".strip()
        if self.buffer.endswith(";"):
            statement, self.buffer = self.buffer, ""
            self._run(lambda: self._execute(statement))
        return False

    def _execute(self, statement: str) -> None:
        result = duck.run_statement(self.conn, statement)  # queries only: the datasets are read-only here
        if result is not None and result.description:
            print_table([d[0] for d in result.description], result.fetchall())

    def _dot(self, line: str) -> bool:
        cmd, _, arg = line.partition(" ")
        if cmd in (".quit", ".exit"):
            return True
        if cmd == ".tables":
            typer.echo("\n".join(self.views) or "(no views: no stage has finished in this run)")
        elif cmd == ".schema" and arg.strip() in self.views:
            self._run(lambda: print_table(["column", "type"], self.columns(arg.strip())))
        elif cmd == ".schema" and arg:
            _error(f"no view {arg.strip()!r}; the run's views: {', '.join(self.views) or '(none)'}")
        else:
            typer.echo(DOT_HELP)
        return False

    def _run(self, work: Callable[[], None]) -> None:
        """Run a statement: its error is printed, Ctrl-C stops it; the session goes on either way."""
        try:
            work()
        except (duckdb.Error, duck.QueryError) as exc:  # a typo, a missing view, a refused write
            _error(str(exc))
        except KeyboardInterrupt:
            self.conn.interrupt()
            _error("interrupted")


def _error(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)


def word_before(text: str) -> str:
    """The word completion replaces: a dot command being typed, else the identifier at the end."""
    return text if text.startswith(".") and " " not in text else re.search(r"\w*$", text).group(0)


def completions(session: Session, text: str) -> list[str]:
    """What Tab offers for the line so far: dot commands, view names after `.schema`, else the run's view
    and column names and a few SQL words; those that start with the word being typed."""
    word = word_before(text).lower()
    if word.startswith("."):
        pool: Iterable[str] = DOT_COMMANDS
    elif text.startswith(".schema "):
        pool = session.views
    else:
        pool = (*session.names, *SQL_WORDS)
    return [name for name in pool if name.lower().startswith(word) and name.lower() != word]


def run_plain(session: Session, lines: Iterable[str]) -> None:
    """A piped script: each line fed in order, until `.quit` or the end."""
    for line in lines:
        if session.feed(line):
            return


def run_terminal(session: Session, history: Path, **io) -> None:
    """The interactive loop on prompt_toolkit; `io` (input=, output=) replaces the terminal in tests."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    history.parent.mkdir(parents=True, exist_ok=True)
    prompt = PromptSession(history=FileHistory(str(history)), completer=_completer(session), **io)
    while True:
        try:
            line = prompt.prompt(session.prompt)
        except KeyboardInterrupt:  # Ctrl-C: drop the line and any unfinished statement
            session.clear()
            continue
        except EOFError:  # Ctrl-D
            return
        if session.feed(line):
            return


def _completer(session: Session):
    """`completions` as a prompt_toolkit completer (defined here, where prompt_toolkit is imported)."""
    from prompt_toolkit.completion import Completer, Completion

    class RunCompleter(Completer):
        def get_completions(self, document, complete_event):
            text = document.text_before_cursor
            start = -len(word_before(text))
            for name in completions(session, text):
                yield Completion(name, start_position=start)

    return RunCompleter()
