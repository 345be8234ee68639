"""`trelm inspect`'s session on prompt_toolkit's real line editor (keys sent through a pipe): history
across sessions, Tab completion of the run's names, Ctrl-C clearing the line, errors that do not end the
session; and the float precision of `trelm sql`'s tables."""

from __future__ import annotations

import threading
import time

import duckdb
import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from flows import shell

UP, TAB, CTRL_C, CTRL_D, ENTER = "\x1b[A", "\t", "\x03", "\x04", "\r"


@pytest.fixture
def session() -> shell.Session:
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t AS SELECT 7 AS answer, 'Paris' AS title, 3.41::FLOAT AS score")
    conn.execute("CREATE VIEW redirects AS SELECT * FROM t")
    return shell.Session(conn, ["redirects"])


def _type(session: shell.Session, history, *keys: str) -> None:
    """Each piece of `keys` sent 0.2 s after the one before (completion answers between key presses, as a
    person types), then Ctrl-D."""

    def typist(pipe) -> None:
        for piece in (*keys, CTRL_D):
            time.sleep(0.2)
            pipe.send_text(piece)

    with create_pipe_input() as pipe:
        sender = threading.Thread(target=typist, args=(pipe,))
        sender.start()
        shell.run_terminal(session, history, input=pipe, output=DummyOutput())
        sender.join()


def test_up_arrow_recalls_the_last_session_and_tab_completes_names(session, tmp_path, capsys):
    history = tmp_path / "root" / ".trelm_history"
    _type(session, history, "SELECT answer * 6 AS six FROM redirects;" + ENTER)
    assert "42" in capsys.readouterr().out
    # a new session: Up brings back the statement of the one before, Enter runs it again
    _type(shell.Session(session.conn, session.views), history, UP + ENTER)
    assert "42" in capsys.readouterr().out
    # Tab completes a view name and a column name
    _type(session, history, "SELECT titl", TAB, " FROM redir", TAB, ";" + ENTER)
    assert "Paris" in capsys.readouterr().out


def test_ctrl_c_clears_the_line_and_the_unfinished_statement(session, tmp_path, capsys):
    _type(session, tmp_path / "h", "SELECT 1 +" + ENTER, "nonsense", CTRL_C, "SELECT 5 AS five;" + ENTER)
    captured = capsys.readouterr()
    assert "five" in captured.out and "error" not in captured.err  # not `SELECT 1 + nonsense SELECT 5`


def test_errors_are_reported_and_the_session_goes_on(session, capsys):
    shell.run_plain(session, [".schema nosuch", "SELECT nope FROM redirects;", ".schema redirects", ".quit"])
    captured = capsys.readouterr()
    assert "no view 'nosuch'; the run's views: redirects" in captured.err
    assert 'Referenced column "nope" not found' in captured.err
    assert "title" in captured.out and "VARCHAR" in captured.out  # the session went on to `.schema`


def test_completions_offer_dot_commands_views_and_columns(session):
    assert shell.completions(session, ".sc") == [".schema"]
    assert shell.completions(session, ".schema re") == ["redirects"]
    assert shell.completions(session, "SELECT sc") == ["score"]
    assert "redirects" in shell.completions(session, "SELECT * FROM r")


def test_float_columns_print_at_six_significant_digits(session, capsys):
    shell.run_plain(session, ["SELECT score, 1.0 / 3 AS third, answer FROM redirects;"])
    out = capsys.readouterr().out
    assert "3.41 " in out and "3.4100000858" not in out  # a FLOAT reaches Python as the nearest double
    assert "0.333333 " in out and " 7 " in out
    assert shell.cell(None) == "NULL" and shell.cell(123456789.0) == "1.23457e+08"
