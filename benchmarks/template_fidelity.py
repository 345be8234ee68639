"""Do the templates that carry words reach the text? Fidelity and speed of `clean_wikitext`, before/after.

    python benchmarks/template_fidelity.py --gensim-sample [--extra-path /tmp/wikiref] [--repeat 3]
    python benchmarks/template_fidelity.py --dump FILE.xml[.bz2] [--baseline-rev REV]
    python benchmarks/template_fidelity.py --synthetic 60      # wikitext_micro's generated pages

On a real pages-articles file (the gensim excerpt: 106 enwiki articles), for the cleaner as it is and
as it was at `--baseline-rev` (loaded from git, so both run in this process):

- fidelity: the content-bearing template calls of `preprocessing.templates` found by an independent
  parser (mwparserfromhell) in running text (not inside a reference, table, heading, image, or a
  dropped template), and the share whose content appears in the page's clean text. What "content"
  is comes from a rule per template written here, not from the renderer;
- broken punctuation: spots `preprocessing.quality` finds ("( ';", "(, )", "X, , Y", ...);
- link spans: spans that fail `quality.link_errors`, and pages whose earlier links are not all kept
  (same anchors, same targets, in order);
- speed: MB/s of wikitext on one core (CPU time, collector paused), best of `--repeat` passes taken
  in turns, beside wikiextractor's `clean_text` as `benchmarks/wikitext_micro.py` runs it
  (`--extra-path` where `pip install --target DIR wikiextractor==3.1.0` put it).

mwparserfromhell is a benchmark-only dependency (the `test` extra).
"""

from __future__ import annotations

import argparse
import calendar
import gc
import importlib.util
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from realdata import gensim_sample  # noqa: E402
from wikitext_micro import dump_pages, references, synthetic_pages  # noqa: E402

from preprocessing import quality, templates, wikitext  # noqa: E402

# the cleaner before issue 18 (templates all dropped)
BASELINE_REV = "9d7e490"
# Containers whose content never reaches the text (in either cleaner).
_DROPPED_TAGS = {
    "ref",
    "references",
    "table",
    "math",
    "gallery",
    "chem",
    "ce",
    "score",
    "timeline",
    "imagemap",
}


def load_baseline(rev: str):
    """`preprocessing/wikitext.py` as it was at `rev`, imported as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:preprocessing/wikitext.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = ROOT / ".bench" / f"wikitext_{rev}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"wikitext_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def normalized(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).lower()


def plain(wikicode) -> str:
    """An argument's text without markup, whitespace collapsed (the parser's own strip_code); a
    reference in it is no part of the sentence (strip_code would keep its text)."""
    import mwparserfromhell

    code = mwparserfromhell.parse(str(wikicode))
    for tag in code.filter_tags(recursive=False, matches=lambda t: str(t.tag).lower() == "ref"):
        code.remove(tag)
    return " ".join(code.strip_code().split())


def positional(tpl) -> list[str]:
    return [str(p.value).strip() for p in tpl.params if not p.showkey]


def named(tpl, key: str) -> str:
    return str(tpl.get(key).value).strip() if tpl.has(key) else ""


def comparable(text: str) -> str:
    """Text compared without thousands separators, case, spacing, or the minus sign's typography."""
    return " ".join(text.replace(",", "").replace("−", "-").split()).lower()


def expected_pieces(name: str, tpl) -> list[str] | None:
    """What of this call the text must hold; None when the call shows nothing checkable."""
    args = positional(tpl)
    if name in {"convert", "cvt"}:
        return [args[0].replace(",", "")] if args else None
    if name == "as of":
        # "as of" and the year together, with a month or day between at most
        return [re.compile(rf"as of (?:\S+ ){{0,2}}{re.escape(args[0])}")] if args else None
    if name == "chem":
        return [plain("".join(args))]
    if name in {"'s", "nbsp", "spaces"}:
        return None  # punctuation and spaces: nothing to look for
    if name == "death date and age" or name in templates.BY_NAME and "date" in name:
        return _date_pieces(args)
    if name in {"flagicon", "flag icon", "flagdeco"}:
        return None  # a flag picture: nothing to read
    content = {
        "lang": lambda: args[1] if len(args) > 1 else "",
        "transl": lambda: args[-1] if len(args) > 1 else "",
        "nihongo": lambda: args[0] or (args[1] if len(args) > 1 else ""),
        "quote": lambda: named(tpl, "text") or (args[0] if args else ""),
    }.get(name, lambda: named(tpl, "text") or (args[0] if args else ""))()
    text = plain(content)
    return [text[:60]] if text else None


def _date_pieces(args: list[str]) -> list[str] | None:
    try:
        year, month = int(args[0]), int(args[1]) if len(args) > 1 else 0
    except ValueError:
        return None
    return [str(year), calendar.month_name[month]] if 1 <= month <= 12 else [str(year)]


def in_running_text(code, node) -> bool:
    """No ancestor that takes its content out of the text: a reference, a table, a heading, an
    image, or a template the cleaner drops."""
    for parent in code.get_ancestors(node):
        kind = type(parent).__name__
        if kind == "Template" and templates.lookup(normalized(parent.name)) is None:
            return False
        if kind == "Tag" and str(parent.tag).lower() in _DROPPED_TAGS:
            return False
        if kind == "Heading":
            return False
        if kind == "Wikilink" and re.match(r"\s*:?\s*(file|image)\s*:", str(parent.title), re.I):
            return False
    return True


def letters(text: str) -> str:
    """Letters and digits only, lower case: what a rendering must show whatever its spacing and marks."""
    return _NON_WORD_RE.sub("", text.lower().replace("_", ""))


_NON_WORD_RE = re.compile(r"\W+")
# What ends the text a call follows in its source line: a line break, a template (its end, or the
# start or a parameter of the one it is nested in), a link's start or pipe, a tag.
_CONTEXT_STOP_RE = re.compile(r"\n|\}\}|\{\{|\||\[\[|>")


def context_before(page: str, pos: int) -> str:
    """The last letters of the plain text right before the call at `pos`, back to the nearest line
    break, template, link start or tag; empty when fewer than 4 (the call then is checked on its own)."""
    window = page[max(0, pos - 300) : pos]
    stops = [m.end() for m in _CONTEXT_STOP_RE.finditer(window)]
    tail = letters(plain(window[stops[-1] if stops else 0 :]))[-12:]
    return tail if len(tail) >= 4 else ""


class Tally:
    """Per template: calls in running text, found in the text anywhere, found in their place."""

    def __init__(self) -> None:
        self.calls, self.anywhere, self.in_place, self.placed = Counter(), Counter(), Counter(), Counter()
        self.misses: list[str] = []

    def add(self, key: str, call: str, anywhere: bool, in_place: bool | None) -> None:
        self.calls[key] += 1
        self.anywhere[key] += anywhere
        if in_place is not None:
            self.placed[key] += 1
        # a call with no text before it in its line can only be checked anywhere
        found = anywhere if in_place is None else in_place
        self.in_place[key] += found
        if not found and len(self.misses) < 40:
            self.misses.append(call[:100])


def fidelity(pages: list[str], clean) -> Tally:
    """Each content-bearing call in running text, looked for in the page's clean text: its content
    anywhere, and its content right after the text it follows in the source."""
    import mwparserfromhell

    tally = Tally()
    for page in pages:
        text = clean(page)[0]
        flat, word_chars = comparable(text), letters(text)
        code = mwparserfromhell.parse(page)
        cursor: dict[str, int] = {}
        for tpl in code.filter_templates(recursive=True):
            source = str(tpl)
            pos = page.find(source, cursor.get(source, 0))
            cursor[source] = pos + 1
            name = normalized(tpl.name)
            if templates.lookup(name) is None or not in_running_text(code, tpl):
                continue
            pieces = expected_pieces(name, tpl)
            if not pieces:
                continue
            wanted = [p if isinstance(p, re.Pattern) else comparable(p) for p in pieces]
            anywhere = all(w.search(flat) if isinstance(w, re.Pattern) else w in flat for w in wanted)
            before = context_before(page, pos) if pos >= 0 and len(pieces) == 1 else ""
            head = "asof" if name == "as of" else letters(str(pieces[0]))[:24]
            in_place = (before + head in word_chars) if before and head else None
            tally.add("lang-xx" if name.startswith("lang-") else name, source, anywhere, in_place)
    return tally


def punctuation_and_links(pages: list[str], clean, baseline) -> dict[str, int]:
    spots = bad_spans = lost = 0
    for page in pages:
        text, links = clean(page)
        spots += len(quality.broken_punctuation(text))
        bad_spans += len(quality.link_errors(text, links))
        lost += not keeps_links(baseline(page), (text, links))
    return {"broken punctuation spots": spots, "bad link spans": bad_spans, "pages losing a link": lost}


def keeps_links(old: tuple, new: tuple) -> bool:
    """Every earlier link's target is still linked, in order. Anchors may change: a template rendered
    in a label (`[[29th parallel north|{{nowrap|29° N}}]]`) shows its text where the old cleaner fell
    back to the title; `quality.link_errors` checks each span itself."""
    remaining = iter(t for _, _, t in new[1])
    return all(any(t == target for t in remaining) for _, _, target in old[1])


def examples_in(pages: list[str]) -> list[str]:
    """The table's example calls that do not occur in these pages (each should)."""
    joined = "\n".join(pages)
    entries = [*templates.TEMPLATES, templates.LANG_PREFIX]
    return [e.example[0] for e in entries if e.example[0] not in joined]


def report_fidelity(pages: list[str], baseline) -> None:
    after = fidelity(pages, wikitext.clean_wikitext)
    before = fidelity(pages, baseline.clean_wikitext)
    total = sum(after.calls.values())
    print(
        f"\ncontent-bearing template calls in running text: {total} "
        f"({sum(after.placed.values())} checked in their place, the rest anywhere in the page)"
    )
    print(f"{'template':22s} {'calls':>6s} {'before':>7s} {'after':>7s}   (anywhere: before after)")
    for name, n in after.calls.most_common():
        print(
            f"{name:22s} {n:6d} {before.in_place[name]:7d} {after.in_place[name]:7d}"
            f"   {before.anywhere[name]:16d} {after.anywhere[name]:5d}"
        )
    share = sum(after.in_place.values()) / max(total, 1)
    was = sum(before.in_place.values()) / max(total, 1)
    print(f"{'rendered (share)':22s} {total:6d} {was:7.1%} {share:7.1%}")
    for miss in after.misses[:12]:
        print("  miss:", repr(miss))


def clear_caches(module) -> None:
    """Empty a cleaner's memo tables: each pass starts as a fresh ingest worker does."""
    for name in ("_classify_cached", "_template_name", "_render_flat"):
        if hasattr(module, name):
            getattr(module, name).cache_clear()


def cpu_seconds(fn, pages: list[str], module=None) -> float:
    """CPU time of one pass, the collector paused: on a shared machine wall time measures the neighbours,
    and a pass must not pay for the garbage an earlier one (or the fidelity parse) left."""
    if module is not None:
        clear_caches(module)
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        for page in pages:
            fn(page)
        return time.process_time() - start
    finally:
        gc.enable()


def report_speed(pages: list[str], baseline, repeat: int) -> None:
    """MB/s, best of `repeat` passes taken in turns (after, before, references), so a slow spell of the
    machine hits every extractor alike."""
    size = sum(len(p.encode()) for p in pages)
    extractors = {
        "trelm clean_wikitext (after)": wikitext.clean_wikitext,
        "trelm clean_wikitext (before)": baseline.clean_wikitext,
        **references(),
    }
    modules = {"trelm clean_wikitext (after)": wikitext, "trelm clean_wikitext (before)": baseline}
    best = dict.fromkeys(extractors, float("inf"))
    for _ in range(repeat):
        for name, fn in extractors.items():
            best[name] = min(best[name], cpu_seconds(fn, pages, modules.get(name)))
    ours = best["trelm clean_wikitext (after)"]
    print(f"\n{'extractor':32s} {'MB/s':>8s} {'after is':>12s}")
    for name, seconds in best.items():
        print(f"{name:32s} {size / 1e6 / seconds:8.2f} {seconds / ours:11.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--dump", type=Path, help="a pages-articles .xml[.bz2]")
    source.add_argument("--gensim-sample", action="store_true", help="the enwiki excerpt in gensim's wheel")
    source.add_argument("--synthetic", type=int, metavar="N", help="N generated pages (wikitext_micro's)")
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of the 'before' cleaner")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes of each; the best one counts")
    ap.add_argument("--extra-path", action="append", default=[], help="where wikiextractor is installed")
    args = ap.parse_args()
    sys.path.extend(args.extra_path)
    if args.synthetic:
        pages = synthetic_pages(args.synthetic)
    else:
        pages = dump_pages(gensim_sample() if args.gensim_sample else args.dump)
    baseline = load_baseline(args.baseline_rev)
    print(f"{len(pages)} articles, {sum(len(p.encode()) for p in pages) / 1e6:.2f} MB of wikitext")
    print(f"table examples not found in these pages: {examples_in(pages) or 'none'}")
    report_speed(pages, baseline, args.repeat)
    report_fidelity(pages, baseline)
    print(f"\n{'check':28s} {'before':>8s} {'after':>8s}")
    before = punctuation_and_links(pages, baseline.clean_wikitext, baseline.clean_wikitext)
    after = punctuation_and_links(pages, wikitext.clean_wikitext, baseline.clean_wikitext)
    for key, value in after.items():
        print(f"{key:28s} {before[key]:8d} {value:8d}")


if __name__ == "__main__":
    main()
