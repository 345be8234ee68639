"""What `trelm ingest` pays before it reads the dump: no Prefect import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a stage command's path to its run folder's lock, in a fresh interpreter
_LOCK_AND_REPORT = """
import json, sys
from pathlib import Path
from flows import ops, stages
from flows.config import load_config
with stages.locked(load_config("sample"), Path(sys.argv[1])):
    holder = json.loads((Path(sys.argv[1]) / ops.HOLDER_NAME).read_text())
print(json.dumps({"prefect": "prefect" in sys.modules, "holder": holder}))
"""


def test_a_stage_command_takes_its_lock_without_importing_prefect(tmp_path):
    # `from prefect.runtime import flow_run`, to learn that there is no flow run, cost 1.5 s of CPU
    out = subprocess.run(
        [sys.executable, "-c", _LOCK_AND_REPORT, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = json.loads(out)
    assert report["prefect"] is False
    assert "flow_run" not in report["holder"] and report["holder"]["pid"] > 0


_IMPORTED = """
import json, sys
import flows.stages
print(json.dumps(sorted(m for m in sys.modules if m.startswith("preprocessing.") or m == "scipy")))
"""


def test_the_stage_calls_import_no_other_stage_than_ingest():
    # link's, select's, the KG's and the download's imports (scipy among them) cost `trelm ingest` 0.4 s of
    # serial start-up before its workers started
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTED], cwd=ROOT, capture_output=True, text=True, check=True
    )
    imported = set(json.loads(out.stdout))
    assert "preprocessing.ingest" in imported
    assert not imported & {
        "preprocessing.link",
        "preprocessing.select",
        "preprocessing.kg",
        "preprocessing.download",
    }
    assert "scipy" not in imported
