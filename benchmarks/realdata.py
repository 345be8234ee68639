"""Real Wikipedia data the benchmarks can fetch from the package registry (no other network here)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / ".bench"
GENSIM_FILE = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def gensim_sample() -> Path:
    """A real enwiki pages-articles excerpt (106 full articles, 6 MB of XML) from gensim's test data."""
    target = BENCH / Path(GENSIM_FILE).name
    if not target.exists():
        BENCH.mkdir(exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "gensim==4.4.0",
                "-d",
                str(BENCH / "wheels"),
            ],
            check=True,
        )
        wheel = next((BENCH / "wheels").glob("gensim-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            target.write_bytes(zf.read(GENSIM_FILE))
    return target
