"""Float, PTQ and QAT int8 TFLite of short Fashion-MNIST runs, each file on the same test images.

    python benchmarks/qat.py                  # -> benchmarks/results/qat.{md,json}
    python benchmarks/qat.py --runs weak      # one of them

Runs (trained with skipnet-train unless --work already holds them):
- weak: the issue's weakly trained run, `--model skipnet_xs --epochs 2 --limit-train 4000
  --limit-val 1000 --seed 0`;
- weak_mbv3: the same for mobilenet_v3_small;
- ci: the accuracy-gate run of .ci/run, `--model skipnet_xs --epochs 3 --limit-train 20000`.
Each is exported as int8 PTQ and as int8 QAT (`--qat-epochs 1 --qat-limit N` for each N of
--qat-limits, default 2560 as in the issue's criterion), all checked on
--verify-samples test images; the table has the run's float top-1 and, for QAT, the sidecar's
measurements (the fine-tuned model in float, its agreement with the file, the largest logit
difference in int8 steps) and the export's wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from skipnet.bench import cpu_name, study_out, write_study
from skipnet.common.cli import run_cli

RUNS = {
    "weak": ["--model", "skipnet_xs", "--epochs", "2", "--limit-train", "4000", "--limit-val", "1000", "--seed", "0"],
    "weak_mbv3": [
        "--model",
        "mobilenet_v3_small",
        "--epochs",
        "2",
        "--limit-train",
        "4000",
        "--limit-val",
        "1000",
        "--seed",
        "0",
    ],
    "ci": ["--model", "skipnet_xs", "--epochs", "3", "--limit-train", "20000"],
}


def _run(cmd: list[str]) -> float:
    """Run a skipnet command line (``skipnet-train ...``) with this Python; its wall time."""
    module = {"skipnet-train": "skipnet.training", "skipnet-export": "skipnet.export"}[cmd[0]]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", module, *cmd[1:]], capture_output=True, text=True)
    if r.returncode not in (0, 1) or (
        r.returncode == 1 and "parity check FAILED" not in r.stderr
    ):  # a failed check: in the table
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def measure(name: str, work: Path, verify: int, qat_limits: list[int]) -> dict:
    run = work / name
    if not (run / "model.safetensors").exists():
        _run(["skipnet-train", "--data", "fashion-mnist", *RUNS[name], "--quiet", "--out", str(run), "--overwrite"])
    out = {}
    kinds = [("ptq", [])] + [(f"qat_{n}", ["--qat-epochs", "1", "--qat-limit", str(n)]) for n in qat_limits]
    for kind, extra in kinds:
        path = work / f"{name}_{kind}.tflite"
        cmd = [
            "skipnet-export",
            str(run),
            "--format",
            "tflite",
            "--int8",
            *extra,
            "--verify-samples",
            str(verify),
            "--out",
            str(path),
        ]
        seconds = _run(cmd)
        side = json.loads(path.with_name(path.name + ".json").read_text())
        out[kind] = {
            "command": " ".join(cmd),
            "seconds": round(seconds, 1),
            "parity": side["parity"],
            "qat": side.get("qat"),
        }
    return out


def _row(name: str, r: dict, kind: str) -> str:
    ptq, qat = r["ptq"]["parity"], r[kind]["parity"]
    q = r[kind]["qat"]
    ref = ptq["torch_top1"]
    recovered = (
        (qat["exported_top1"] - ptq["exported_top1"]) / (ref - ptq["exported_top1"])
        if ref > ptq["exported_top1"]
        else float("nan")
    )
    return (
        f"| {name} | {q['images']:,} | {100 * ref:.2f}% | "
        f"{100 * ptq['exported_top1']:.2f}% ({100 * (ptq['exported_top1'] - ref):+.2f}) | "
        f"{100 * q['int8_top1']:.2f}% ({100 * (q['int8_top1'] - ref):+.2f}) | {recovered:.0%} | "
        f"{100 * q['float_top1']:.2f}% | {100 * (q['int8_top1'] - q['float_top1']):+.2f} | "
        f"{100 * q['fake_quant_agreement']:.2f}% | {q['max_logit_diff_steps']} | {_held(q['holdout'])} | "
        f"{r[kind]['seconds']:.0f} s |"
    )


def _held(h: dict) -> str:
    """The keep-or-not check on held-out training images."""
    if not h["images"]:
        return "no held-out images: start kept"
    return (
        f"{'fine-tuned' if h['kept'] else 'start (PTQ)'}: {100 * h['start_top1']:.2f}% → "
        f"{100 * h['tuned_top1']:.2f}% (+{h['gained']}/−{h['lost']} of {h['images']:,})"
    )


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    p.add_argument("--work", default="runs/qat_study")
    p.add_argument("--verify-samples", type=int, default=10000)
    p.add_argument("--qat-limits", nargs="+", type=int, default=[2560], help="QAT images (one epoch), a row each")
    p.add_argument("--out", default="benchmarks/results/qat")
    args = p.parse_args(argv)
    out = study_out(args.out)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {name: measure(name, work, args.verify_samples, args.qat_limits) for name in args.runs}
    cmd = "python benchmarks/qat.py " + " ".join(sys.argv[1:])
    lines = [
        "# int8 TFLite: post-training quantisation against quantisation-aware training",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {cpu_name()}; {date.today()}. Top-1 on {args.verify_samples} "
        "Fashion-MNIST test images, each file in LiteRT.",
        "",
        "| run | QAT images | float (run) | int8 PTQ (vs float) | int8 QAT (vs float) | PTQ drop recovered | "
        "QAT fine-tuned, in float | QAT int8 vs its float | file vs fake-quant model: agreement | "
        "max logit diff (int8 steps) | weights shipped; held-out top-1 start → fine-tuned | QAT export time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(name, r, kind) for name, r in results.items() for kind in r if kind != "ptq"]
    lines += [
        "",
        "Runs: " + "; ".join(f"{n}: `skipnet-train --data fashion-mnist {' '.join(RUNS[n])}`" for n in results),
        f"QAT: `skipnet-export RUN --format tflite --int8 --qat-epochs 1 --qat-limit IMAGES "
        f"--verify-samples {args.verify_samples}` (default `--qat-lr`).",
    ]
    write_study(out, "\n".join(lines) + "\n", {"command": cmd, "cpu": cpu_name(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="qat.py"))
