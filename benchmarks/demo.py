"""Time `make demo` from a fresh clone of this repository's HEAD, set-up included, and keep its report.

    python benchmarks/demo.py            # about 12 min on 2 CPU cores; needs ~7 GB in /tmp for the clone's .venv

Writes benchmarks/results/demo.md (the command, machine, wall time and the demo's own report)
and benchmarks/results/demo/ (report.json and the two plots). The clone is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "skipnet-deploy"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        t0 = time.perf_counter()
        r = subprocess.run(["make", "demo"], cwd=clone, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
            print(f"make demo failed with exit code {r.returncode}", file=sys.stderr)
            return 1
        demo = clone / "runs" / "demo"
        report = json.loads((demo / "report.json").read_text())
        out = RESULTS / "demo"
        out.mkdir(parents=True, exist_ok=True)
        for name in ("report.json", *report["plots"]):
            shutil.copy(demo / name, out / name)
        printed = r.stdout[r.stdout.index("report: ") :].rstrip()
        cpu = report["cpu"]
        text = (
            f"# `make demo` from a fresh clone\n\nCommand ({date.today().isoformat()}, {cpu}, "
            f"{len(os.sched_getaffinity(0))} cores, commit {head}):\n\n    python benchmarks/demo.py   "
            f"# git clone, then: time make demo\n\n"
            f"**Wall time of `make demo` in the fresh clone: {wall / 60:.1f} min**, of which "
            f"{report['compute_seconds'] / 60:.1f} min in the pipeline's steps and the rest setting up `.venv` "
            "(pip install of torch 2.14.1 and the converters from this machine's local wheels).\n\n"
            f"What it printed at the end:\n\n```\n{printed}\n```\n\n"
            "The demo's report follows (its plots and report.json are in [demo/](demo/)).\n\n---\n\n"
        )
        md = (demo / "report.md").read_text().replace("](accuracy_vs", "](demo/accuracy_vs")
        (RESULTS / "demo.md").write_text(text + md.replace("# SkipNet Deploy pipeline report", "## Pipeline report"))
    print(f"make demo: {wall / 60:.1f} min; wrote {RESULTS / 'demo.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
