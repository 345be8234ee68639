"""`trelm`: the command line. Stage commands call the same functions as the Prefect flows.

Heavy imports (prefect, torch, spacy) happen inside the commands that need them, so `trelm sql`
starts fast. A `TrelmError` from any command ends in one place (`_Commands.invoke`): its message and
fix on stderr, and its kind's exit code (storage.errors); anything else keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from storage.errors import InputError, TrelmError

# `trelm run` starts Prefect's ephemeral API server in a subprocess; its default 20 s start-up limit is
# too short on a busy 2-core machine (the import alone takes ~10 s there), and a timeout kills the run
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# that server would send usage telemetry: offline it logs an error twice a run, and nobody asked for it
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


class _Commands(TyperGroup):
    """The `trelm` command group: every command runs inside its one error handler."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TrelmError as exc:
            typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
            if exc.fix:
                typer.secho(f"fix: {exc.fix}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    help="TRELM pipeline: Wikipedia dump -> entities -> knowledge-enhanced LM.",
    no_args_is_help=True,
    cls=_Commands,
)

DataRoot = Annotated[
    Path, typer.Option("--data-root", envvar="TRELM_DATA_ROOT", help="Root of dumps/ and runs/.")
]
RunName = Annotated[str | None, typer.Option("--run", help="Run folder under runs/ (default: the newest).")]
ConfigOpt = Annotated[str, typer.Option("--config", help="Preset name (sample, enwiki) or a .yaml file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")]


def _config(config: str, overrides: list[str] | None, data_root: Path, run: str | None, **sections):
    from flows.config import load_config

    extra = [
        f"{section}.{key}={json.dumps(value)}"
        for section, kv in sections.items()
        for key, value in kv.items()
        if value is not None
    ]
    cfg = load_config(config, [*(overrides or []), *extra])
    return cfg.model_copy(update={"data_root": data_root, "run": run or cfg.run})


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def run(
    data_root: DataRoot = Path("data"),
    run: RunName = None,
    config: ConfigOpt = "sample",
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with the result as JSON.")] = False,
) -> None:
    """Run the whole `trelm` flow in-process (ephemeral Prefect): one line per stage, then a summary.

    A dump already processed with the same config ends at once ("nothing new");
    `--set orchestration.force=true` runs it again, `--set orchestration.run_until=link` stops early.
    """
    from flows import ops

    cfg = _config(config, set_, data_root, run)  # a bad config fails here, before anything starts
    if not os.environ.get(ops.SUPERVISED_ENV):  # run in a child that is stopped whole (flows.ops.supervise)
        again = ["--data-root", str(data_root), "--config", config, *(["--run", run] if run else [])]
        again += [arg for setting in set_ or [] for arg in ("--set", setting)]
        again += ["--json"] if as_json else []
        raise typer.Exit(ops.supervise([sys.executable, "-m", "flows.cli", "run", *again]))
    # Prefect's console shows warnings and errors only; the stage lines come from `report.announce`
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from flows import report
    from flows.pipeline import trelm

    with _printing_stage_lines():
        result = trelm(config=cfg)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(report.run_epilogue(result, data_root, cfg.preset))


@contextmanager
def _printing_stage_lines():
    """The flow's `report.announce` lines printed on stdout while the flow runs."""
    from flows.report import SUMMARY

    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(lambda record: all(getattr(record, k, None) == v for k, v in SUMMARY.items()))
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@app.command()
def download(
    wiki: Annotated[str | None, typer.Option(help="Wiki database name, e.g. enwiki.")] = None,
    date: Annotated[str | None, typer.Option(help="YYYYMMDD or latest.")] = None,
    mirror: Annotated[str | None, typer.Option(help="Mirror base URL: http(s):// or file://.")] = None,
    data_root: DataRoot = Path("data"),
    run: RunName = None,
    config: ConfigOpt = "sample",
    set_: SetOpt = None,
) -> None:
    """Download a dump run (resumable, verified against the published md5/sha1)."""
    from flows import stages

    _setup_logging()
    cfg = _config(config, set_, data_root, run, download={"wiki": wiki, "date": date, "mirror": mirror})
    report = stages.download(stages.resolved(cfg))
    typer.echo(report.model_dump_json(indent=2))


@app.command()
def ingest(
    dump: Annotated[
        Path | None,
        typer.Option(
            help="A local pages-articles .xml or .xml.bz2 file, or a Wikimedia Enterprise HTML dump "
            "(*-ENTERPRISE-HTML.json.tar.gz)."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Extraction processes.")] = None,
    data_root: DataRoot = Path("data"),
    run: RunName = None,
    config: ConfigOpt = "sample",
    set_: SetOpt = None,
) -> None:
    """Extract `pages` and `redirects` shards from the downloaded run or from --dump FILE."""
    from flows import stages
    from storage import layout

    _setup_logging()
    cfg = _config(config, set_, data_root, run, ingest={"workers": workers})
    if dump is None and cfg.download.date == "latest":
        cfg = _downloaded_run_config(cfg, layout)
    stages.ingest_inputs(cfg, dump)  # a missing input fails before the run folder is made
    run_dir = stages.run_dir_for(cfg, dump)
    with stages.locked(cfg, run_dir):
        manifest = stages.run_ingest(cfg, run_dir, dump)
    typer.echo(
        json.dumps(
            {"rows": manifest["rows"], "parts": len(manifest["parts"]), "stats": manifest["stats"]}, indent=2
        )
    )


@app.command()
def link(
    workers: Annotated[int | None, typer.Option(help="Linking processes.")] = None,
    linker: Annotated[
        str | None, typer.Option(help="local (TAGME on the run's dictionary) or remote (web API).")
    ] = None,
    data_root: DataRoot = Path("data"),
    run: RunName = None,
    config: ConfigOpt = "sample",
    set_: SetOpt = None,
) -> None:
    """Link entities (TAGME) in the run's pages against the KG into `mentions` shards."""
    from flows import stages
    from storage import layout

    _setup_logging()
    cfg = _config(config, set_, data_root, run, link={"workers": workers, "linker": linker})
    run_dir = layout.resolve_run(cfg.data_root, cfg.run)
    with stages.locked(cfg, run_dir):
        manifest = stages.run_link(cfg, run_dir)
    typer.echo(
        json.dumps(
            {"rows": manifest["rows"], "parts": len(manifest["parts"]), "stats": manifest["stats"]}, indent=2
        )
    )


@app.command("select")
def select_cmd(
    data_root: DataRoot = Path("data"),
    run: RunName = None,
    config: ConfigOpt = "sample",
    set_: SetOpt = None,
) -> None:
    """Score mentions by semantic importance, select important entities, write `instances`."""
    from flows import stages
    from storage import layout

    _setup_logging()
    cfg = _config(config, set_, data_root, run)
    run_dir = layout.resolve_run(cfg.data_root, cfg.run)
    with stages.locked(cfg, run_dir):
        manifest = stages.run_select(cfg, run_dir)
    typer.echo(
        json.dumps({"rows": manifest["rows"], "stats": manifest["stats"], **manifest["select"]}, indent=2)
    )


@app.command()
def pretrain(
    data_root: DataRoot = Path("data"),
    run: RunName = None,
    config: ConfigOpt = "sample",
    set_: SetOpt = None,
    ranks: Annotated[
        int | None, typer.Option(help="Local ranks (>1 starts them with the deepspeed launcher).")
    ] = None,
    variant: Annotated[
        str | None, typer.Option(help="trelm, mlm_only, no_injection, no_memory or no_routing.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Step budget (optimizer steps).")] = None,
) -> None:
    """Pre-train on the run's `instances` with DeepSpeed; resumes from the latest checkpoint."""
    from flows import stages
    from storage import layout
    from trelm.launch import pretrain as run_pretrain

    _setup_logging()
    cfg = _config(config, set_, data_root, run, pretrain={"variant": variant})
    train = cfg.pretrain.train.model_copy(
        update={k: v for k, v in {"ranks": ranks, "max_steps": max_steps}.items() if v is not None}
    )
    run_dir = layout.resolve_run(cfg.data_root, cfg.run)
    runs = [p.model_copy(update={"train": train}) for p in cfg.pretrain.runs()]
    with stages.locked(cfg, run_dir):
        results = [run_pretrain(p, run_dir, cfg.progress) for p in runs]
    typer.echo(json.dumps(results, indent=2))


@app.command()
def evaluate(
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(help="HF folder, hub id, `minilm` or a run checkpoint name (repeatable)."),
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option(help="NAME=PATH, e.g. lama-trex=LAMA/data (repeatable); default: the config's."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    data_root: DataRoot = Path("data"),
    run: RunName = None,
    config: ConfigOpt = "sample",
    set_: SetOpt = None,
) -> None:
    """Evaluate checkpoints (LAMA, KG probe, Open Entity, TACRED, GLUE); without --checkpoint, the run's
    checkpoints, with the report written to {run}/eval/ and the `eval_results` dataset."""
    from contextlib import nullcontext

    from flows import stages
    from storage import layout
    from trelm.evaluate.runner import evaluate_run, parse_tasks

    _setup_logging()
    cfg = _config(config, set_, data_root, run)
    tasks = parse_tasks(task) if task else cfg.evaluate.tasks
    run_dir = _evaluated_run(layout, cfg, required=not checkpoint)
    settings = cfg.evaluate.model_copy(update={"tasks": tasks})
    with stages.locked(cfg, run_dir) if run_dir is not None else nullcontext():
        results, report = evaluate_run(settings, run_dir, checkpoint, write=not checkpoint)
    if as_json:
        payload = results[0] if checkpoint and len(results) == 1 else {"checkpoints": results}
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        from trelm.evaluate.report import markdown

        typer.echo(report.read_text() if report else markdown(results, "evaluation"))


def _evaluated_run(layout, cfg, required: bool):
    """The run folder (for the KG probe and run checkpoints); optional when checkpoints are given."""
    try:
        return layout.resolve_run(cfg.data_root, cfg.run)
    except layout.RunNotFoundError:
        if required:
            raise
        return None


def _downloaded_run_config(cfg, layout):
    """Without --dump: the run's own config (which names the downloaded date), else the newest download."""
    from flows.config import load_config

    try:
        run_dir = layout.resolve_run(cfg.data_root, cfg.run)
        saved = load_config(str(run_dir / layout.RUN_CONFIG))
        return cfg.model_copy(update={"download": saved.download, "run": run_dir.name})
    except layout.RunNotFoundError:
        pass
    dates = layout.downloaded_dates(cfg.data_root, cfg.download.wiki)
    if not dates:
        wiki_dir = layout.dumps_root(cfg.data_root) / cfg.download.wiki
        raise InputError(
            f"nothing downloaded under {wiki_dir}", fix="run `trelm download` first, or pass --dump FILE"
        )
    return cfg.model_copy(update={"download": cfg.download.model_copy(update={"date": dates[-1]})})


# the stage whose next run rebuilds a dataset's damaged parts (select: the others)
_REBUILT_BY = {
    **dict.fromkeys(["pages", "redirects"], "ingest"),
    **dict.fromkeys(
        [
            "mentions",
            "anchors",
            "link_targets",
            "kg_aliases",
            "kg_alias_entities",
            "kg_entities",
            "kg_relations",
            "kg_triples",
        ],
        "link",
    ),
    "eval_results": "evaluate",
}


@app.command()
def verify(
    full: Annotated[bool, typer.Option("--full", help="Also compare every part's sha256.")] = False,
    data_root: DataRoot = Path("data"),
    run: RunName = None,
    config: ConfigOpt = "sample",
    set_: SetOpt = None,
) -> None:
    """Check every dataset of the run against its manifest (part sizes, footers, rows; --full: checksums).
    Damaged parts are taken back, so that the next run of their stage rebuilds exactly them."""
    from flows import stages
    from flows.config import STAGES
    from storage import layout, shards

    cfg = _config(config, set_, data_root, run)
    run_dir = layout.resolve_run(cfg.data_root, cfg.run)
    with stages.locked(cfg, run_dir):
        results = shards.verify_run(run_dir, full)
        damaged = {name: problems for name, problems in results.items() if problems}
        for name, problems in results.items():
            typer.echo(f"{name}: {_verdict(problems)}")
        for name, problems in damaged.items():
            shards.reopen_damaged(run_dir, shards.DATASETS[name], problems)
    if damaged:
        stages_to_run = {_REBUILT_BY.get(name, "select") for name in damaged}
        redo = [stage for stage in STAGES if stage in stages_to_run]
        raise shards.DamagedDatasetError(
            f"damaged datasets in {run_dir}: {', '.join(damaged)}; their damaged parts were taken back",
            fix=f"run `trelm run` (or `trelm {' then trelm '.join(redo)}`): it rebuilds those parts only",
        )


def _verdict(problems) -> str:
    if problems is None:
        return "not complete (skipped)"
    return "damaged: " + "; ".join(map(str, problems)) if problems else "ok"


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One SQL statement; every dataset of the run is a view.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of row objects.")] = False,
    data_root: DataRoot = Path("data"),
    run: RunName = None,
) -> None:
    """Query the run's datasets with DuckDB."""
    from flows.shell import print_table
    from storage import duck, layout

    columns, rows = duck.query(layout.resolve_run(data_root, run), query)
    if as_json:
        typer.echo(
            json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str, ensure_ascii=False)
        )
    else:
        print_table(columns, rows)


@app.command()
def inspect(data_root: DataRoot = Path("data"), run: RunName = None) -> None:
    """Interactive DuckDB over the run: every dataset a view. `.tables`, `.schema NAME`, `.quit`.

    On a terminal: line editing, history (Up arrow), Tab completion of views and columns, Ctrl-C clears
    the line; a piped script runs line by line."""
    from flows import shell
    from storage import duck, layout

    run_dir = layout.resolve_run(data_root, run)
    conn, views = duck.connect(run_dir)
    typer.echo(
        f"run {run_dir}: views {', '.join(views) or '(none)'}; end statements with ';', .quit to leave"
    )
    session = shell.Session(conn, views)
    if sys.stdin.isatty():
        shell.run_terminal(session, layout.inspect_history(data_root))
    else:
        shell.run_plain(session, sys.stdin)


def main() -> None:  # pragma: no cover - the console script entry is `app`
    app()


if __name__ == "__main__":
    main()
