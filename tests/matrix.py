"""`make test-matrix`: the tests whose outcome rests on the host's floating point (marker `numeric`,
conftest.py) under other CPUs' kernels and thread counts, on this one machine.

The project's machines differ (Intel Xeon with AVX-512 VNNI and AMX, AMD EPYC with AVX-512 VNNI or
AVX2 only), and trained weights differ with them in the last digits. oneDNN picks its kernels by
ONEDNN_MAX_CPU_ISA, PyTorch its own vector kernels by ATEN_CPU_CAPABILITY, and the thread count
changes the order of reductions: each cell sets one of them, so a threshold that holds only on this
host's kernels fails here, not on the next CI machine. Every cell must pass.

    python tests/matrix.py [--cells host-1,avx2-2] [--out benchmarks/results/test_matrix] [pytest args]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name: (what it stands for, environment)
KERNELS = {
    "host": ("this host's kernels", {}),
    "onednn-avx2": ("oneDNN limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "aten-avx2": ("PyTorch's own kernels at AVX2 (ATEN_CPU_CAPABILITY=avx2)", {"ATEN_CPU_CAPABILITY": "avx2"}),
}
THREADS = (1, 2)
CELLS = [f"{k}-{t}" for k in KERNELS for t in THREADS]


def run_cell(cell: str, extra: list[str]) -> dict:
    kernels, threads = cell.rsplit("-", 1)
    env = {**os.environ, **KERNELS[kernels][1], "SKIPNET_TEST_THREADS": threads}
    # 1 thread: two pytest workers share the 2 cores; 2 threads: one worker with both.
    workers = max(1, len(os.sched_getaffinity(0)) // int(threads))
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=env,
        capture_output=True,
        text=True,
    )
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "numeric",
            "-n",
            str(workers),
            "--dist",
            "worksteal",
            "-p",
            "no:cacheprovider",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", tail)}
    failed = [line.split(" - ")[0] for line in r.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {
        "cell": cell,
        "kernels": KERNELS[kernels][0],
        "threads": int(threads),
        "aten_capability": probe.stdout.strip(),
        "passed": r.returncode == 0,
        "counts": counts,
        "failed": failed,
        "minutes": round((time.perf_counter() - t0) / 60, 1),
        "summary": tail,
    }


def markdown(rows: list[dict], cpu: str, command: str) -> str:
    lines = [
        f"# make test-matrix on {cpu}",
        "",
        f"Command: `{command}`, {time.strftime('%Y-%m-%d')}.",
        "",
        "| cell | kernels | threads | ATen capability | result | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        counts = ", ".join(f"{v} {k}" for k, v in r["counts"].items())
        lines.append(
            f"| {r['cell']} | {r['kernels']} | {r['threads']} | {r['aten_capability']} | "
            f"{'passed' if r['passed'] else '**FAILED**'} ({counts}) | {r['minutes']} |"
        )
    failed = [f"- {r['cell']}: {name}" for r in rows for name in r["failed"]]
    return "\n".join(lines + ([""] + failed if failed else [])) + "\n"


def main(argv: list[str] | None = None) -> int:
    from skipnet.bench import cpu_name
    from skipnet.common import atomic_write_text, write_json
    from skipnet.common.contract.paths import check_output_file

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated, of: {', '.join(CELLS)}")
    p.add_argument("--out", help="also write OUT.md and OUT.json")
    args, extra = p.parse_known_args(argv)
    cells = args.cells.split(",")
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        p.error(f"unknown cell {unknown[0]}; choose from {', '.join(CELLS)}")
    if args.out:
        for suffix in (".md", ".json"):
            check_output_file(args.out + suffix, "--out")
    rows = []
    for cell in cells:
        rows.append(run_cell(cell, extra))
        print(f"{cell}: {rows[-1]['summary']} ({rows[-1]['minutes']} min)", *rows[-1]["failed"], sep="\n  ", flush=True)
    command = " ".join(["python tests/matrix.py", *(sys.argv[1:] if argv is None else argv)])
    text = markdown(rows, cpu_name(), command)
    print(text)
    if args.out:
        atomic_write_text(args.out + ".md", text)
        write_json(args.out + ".json", {"cpu": cpu_name(), "command": command, "rows": rows})
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
