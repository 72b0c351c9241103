"""The Fashion-MNIST accuracy table: SkipNet-XS/S/M against MobileNetV3-S/L, float and int8 (PTQ
and QAT), with parameters, MACs and int8 LiteRT latency, every model trained the same way.

    python benchmarks/fashion_mnist.py                       # the full recipe: hours on 2 CPU cores
    python benchmarks/fashion_mnist.py --recipe fast         # 3 epochs: the partial table
    python benchmarks/fashion_mnist.py --resume ...          # continue an interrupted study
    python benchmarks/fashion_mnist.py --models skipnet_m,mobilenet_v3_large   # the key pair first, then
    python benchmarks/fashion_mnist.py --models skipnet_xs,skipnet_s,mobilenet_v3_small   # the rest, later

It is the pipeline (skipnet-pipeline) with five models and the int8 TFLite exports PTQ and QAT,
each checked on all 10,000 test images; its work directory keeps every step, so --resume
continues where an interrupted study stopped (a half-trained model from its last checkpoint), and
models added on a later --resume are trained, exported and gated alone (only the latency rounds,
which time every file side by side, run again).
Writes benchmarks/results/fashion_mnist.md and .json. A run that measures only some models adds
their rows to the table already there when that table was made with the same settings (recipe,
epochs, images, exports, gates), so the study can be done in pieces on different days or hosts:
each row then names its run (date, CPU, commit, command), and latency ratios are compared only
within a run. Rows made with other settings are replaced. A table from anything but the full
recipe on all 60,000 training images, or with a model missing, is marked partial.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

from skipnet.common import UserError, atomic_write_text, read_json, write_json
from skipnet.common.cli import run_cli
from skipnet.pipeline import Interrupted, load_config, run_pipeline
from skipnet.pipeline.config import with_new_keys
from skipnet.training import RECIPES

FULL_EPOCHS = RECIPES["full"]["epochs"]

MODELS = "skipnet_xs,skipnet_s,skipnet_m,mobilenet_v3_small,mobilenet_v3_large"
BASELINE = "mobilenet_v3_large"  # the table's latency column: each row against it, timed in the same run
RESULTS = Path(__file__).parent / "results"
HOST_LATENCY = RESULTS / "host_latency.json"


def _latency_224() -> dict[str, float]:
    """int8 LiteRT p50 at 224x224, 1 thread, from host_latency.py's committed results."""
    if not HOST_LATENCY.exists():
        return {}
    rows = json.loads(HOST_LATENCY.read_text())["rows"]
    return {
        r["model"]: r["p50_ms"]
        for r in rows
        if r.get("format") == "tflite-int8" and r.get("threads") == 1 and "p50_ms" in r
    }


def _settings(report: dict) -> dict:
    """What makes two studies' rows comparable: the data, recipe, exports, gates and timing settings
    (export keys added since a run at their defaults: what that run did without them)."""
    config = with_new_keys(report["config"])
    return {k: config[k] for k in ("data", "train", "export", "gate", "bench")}


def load_runs(path: Path) -> list[dict]:
    """The runs behind a table this script wrote earlier, oldest first ([] when there is none)."""
    if not path.exists():
        if path.with_suffix(".md").exists():
            raise UserError(
                f"{path.with_suffix('.md')} exists without the {path.name} this script writes beside it; "
                "choose another --out"
            )
        return []
    data = read_json(path, fix="restore it from git or choose another --out")
    try:
        if "runs" in data:
            runs = data["runs"]
        else:  # the one-run layout of tables written before rows from several runs were merged
            report_md = path.parent / f"{path.stem}_report.md"
            runs = [
                {
                    "command": data["command"],
                    "date": data["date"],
                    "commit": None,
                    "report": data["report"],
                    "report_md": report_md.read_text() if report_md.exists() else "",
                }
            ]
        for run in runs:
            _settings(run["report"]), run["report"]["models"], run["command"]
    except (KeyError, TypeError):
        raise UserError(f"{path} is not a table written by fashion_mnist.py; choose another --out") from None
    return runs


def merge(runs: list[dict], new: dict) -> tuple[list[dict], list[dict]]:
    """The new run, after the earlier runs' rows for the models it did not measure, where those runs used the same
    settings (a table never mixes recipes). Returns (runs kept, runs dropped for their settings)."""
    kept, dropped = [], []
    for run in runs:
        if _settings(run["report"]) != _settings(new["report"]):
            dropped.append(run)
            continue
        models = {m: v for m, v in run["report"]["models"].items() if m not in new["report"]["models"]}
        if models:
            failures = [f for f in run["report"]["failures"] if f.split(" ", 1)[0] in models]
            kept.append({**run, "report": {**run["report"], "models": models, "failures": failures}})
    return kept + [new], dropped


def _run_line(i: int, run: dict) -> str:
    r = run["report"]
    commit = f", commit {run['commit']}" if run.get("commit") else ""
    return (
        f"{i}. {run['date']}, {r['cpu']}, {r['cores']} cores{commit}; "
        f"{r['compute_seconds'] / 3600:.2f} h of compute summed over its steps; "
        f"models {', '.join(r['models'])}:\n\n        {run['command']}"
    )


def table(runs: list[dict], partial: str | None, report_name: str = "fashion_mnist_report.md") -> str:
    lat224 = _latency_224()
    latest = runs[-1]["report"]
    m0 = next(iter(latest["models"].values()))
    t = m0["train"]
    images = f"{t['limit_train']:,}" if t["limit_train"] else "all 60,000"
    export = latest["config"]["export"]
    lines = ["# Fashion-MNIST accuracy table" + (" (PARTIAL)" if partial else ""), ""]
    if partial:
        lines += [f"**Partial:** {partial}", ""]
    if len(runs) == 1:
        r = latest
        lines += [
            f"Command ({runs[0]['date']}, {r['cpu']}, {r['cores']} cores; "
            f"{r['compute_seconds'] / 3600:.2f} h of compute summed over its steps):",
            "",
            f"    {runs[0]['command']}",
            "",
        ]
    else:  # rows measured in separate runs, with the same settings: each row names its run
        lines += ["Runs (the column `run` says which one measured a row; latency is compared only within a run):", ""]
        lines += [_run_line(i, run) for i, run in enumerate(runs, 1)] + [""]
    lines += [
        f"Every model: recipe `{t['recipe']}`, {t['epochs']} epochs, "
        f"{images} training images, "
        f"{'Bias Loss' if t['loss'] == 'bias' else 'cross-entropy'}, {m0['img_size']}x{m0['img_size']} input. "
        "Top-1 on the 10,000 test images: float = PyTorch; PTQ = int8 TFLite after post-training "
        "quantisation; QAT = int8 TFLite after quantisation-aware fine-tuning "
        f"({export['qat_epochs']} epoch"
        + (f" of {export['qat_limit']:,} images" if export["qat_limit"] else "")
        + "). MACs at the trained input size. Latency: int8 LiteRT (XNNPACK), 1 thread, p50 on "
        f"the run's host at the trained size ({latest['bench']['runs']} interleaved rounds, ratio paired per "
        f"round against {BASELINE} in the same run, - where that run did not time it) and at 224x224 from "
        "`benchmarks/results/host_latency.md`. QAT weights shipped: the fine-tuned weights, or the "
        "starting point (the PTQ file's) when fine-tuning did not get significantly more of 10,000 "
        "held-out training images right (their top-1: start → fine-tuned).",
        "",
    ]
    multi = len(runs) > 1
    head = [
        "model",
        "params",
        "MACs",
        "float top-1",
        "PTQ int8 top-1",
        "QAT int8 top-1",
        "QAT weights shipped",
        "int8 latency",
        f"vs {BASELINE}",
        "int8 latency @224",
    ] + (["run"] if multi else [])
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    rows = {
        name: (i, m, run["report"]["baseline"])
        for i, run in enumerate(runs, 1)
        for name, m in run["report"]["models"].items()
    }
    order = [m for m in MODELS.split(",") if m in rows] + [m for m in rows if m not in MODELS.split(",")]
    for name in order:
        i, m, run_baseline = rows[name]
        ptq, qat = m["exports"]["tflite-int8"], m["exports"].get("tflite-int8-qat", {})
        qat_top1 = (qat.get("parity") or {}).get("exported_top1")
        # A run without mobilenet_v3_large has another baseline: its ratios do not belong in this column.
        ratio = ptq.get("latency_vs_baseline") if run_baseline == BASELINE else None
        cells = [
            name,
            f"{m['params'] / 1e6:.2f} M",
            f"{m['macs'] / 1e6:.1f} M",
            f"{100 * m['float_top1']:.2f}%",
            f"{100 * m['gated_top1']:.2f}%",
            f"{100 * qat_top1:.2f}%" if qat_top1 is not None else "-",
            _kept(qat),
            f"{ptq['p50_ms']:.3f} ms",
            f"{ratio:.2f}x" if ratio else "-",
            f"{lat224[name]:.2f} ms" if name in lat224 else "-",
        ] + ([str(i)] if multi else [])
        lines.append("| " + " | ".join(cells) + " |")
    failures = [f for run in runs for f in run["report"]["failures"]]
    if failures:  # the pipeline's verdicts: a figure from a file that failed its check must say so
        lines += [
            "",
            f"**Failed checks:** {'; '.join(failures)} (the top-1 above is still that file's, "
            "measured on all 10,000 test images; the criterion and figures are in the report beside this file).",
        ]
    lines += [
        "",
        "Reference points (Fashion-MNIST benchmark, not run here): MobileNet 95.0%, ResNet-18 94.9%.",
        "Per-export parity, sizes and step times: the pipeline report"
        + (" of each run" if multi else "")
        + f" copied beside this file (`{report_name}`).",
    ]
    return "\n".join(lines) + "\n"


def _kept(qat: dict) -> str:
    """Which weights the QAT file has, and the held-out training images that decided it."""
    h = ((qat.get("parity") or {}).get("qat") or {}).get("holdout")
    if not h or not h["images"]:
        return "-"  # a QAT export from before the held-out check
    return f"{'fine-tuned' if h['kept'] else 'PTQ start'} ({100 * h['start_top1']:.2f}% → {100 * h['tuned_top1']:.2f}%)"


def reports_md(runs: list[dict]) -> str:
    if len(runs) == 1:
        return runs[0]["report_md"]
    return "\n".join(
        f"<!-- run {i}: {run['command']} -->\n\n# Run {i}\n\n{run['report_md']}" for i, run in enumerate(runs, 1)
    )


def _main(argv) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=MODELS)
    p.add_argument("--recipe", default="full", help="training recipe (full: the table's; fast: minutes per model)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--limit-train", type=int)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--qat-limit", type=int, default=10240, help="images per QAT epoch")
    p.add_argument("--work", help="the study's pipeline directory (default runs/fashion_mnist-RECIPE)")
    p.add_argument("--resume", action="store_true", help="continue the study in --work")
    p.add_argument(
        "--out",
        help="the table (default benchmarks/results/fashion_mnist.md for the full recipe, "
        "fashion_mnist_RECIPE.md for another)",
    )
    args = p.parse_args(argv)
    work = Path(args.work or f"runs/fashion_mnist-{args.recipe}")
    if (work / "pipeline.json").exists() and not args.resume:
        raise UserError(f"{work} holds a study already: pass --resume to continue it (or choose another --work)")
    if args.resume and not (work / "pipeline.json").exists():
        raise UserError(f"nothing to resume in {work}; run without --resume to start")
    out = Path(
        args.out or RESULTS / ("fashion_mnist.md" if args.recipe == "full" else f"fashion_mnist_{args.recipe}.md")
    )
    if not out.parent.is_dir():
        raise UserError(f"--out: the folder {out.parent} does not exist; create it or choose another --out")
    load_runs(out.with_suffix(".json"))  # a table this script cannot add to fails now, not after hours of training
    cfg = _config(args, work)
    # The command that reproduces the table (one run in pieces adds --resume to the same command).
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python benchmarks/fashion_mnist.py", *(a for a in argv if a != "--resume")])
    try:
        report = run_pipeline(cfg, command=command)
    except Interrupted as e:  # Ctrl-C or SIGTERM: training saved a checkpoint first
        print(f"fashion_mnist.py: interrupted; add --resume to the same command to continue {work}", file=sys.stderr)
        return e.exit_code
    new = {
        "command": command,
        "date": date.today().isoformat(),
        "commit": _commit(),
        "report": report,
        "report_md": (work / "report.md").read_text(),
    }
    runs, dropped = merge(load_runs(out.with_suffix(".json")), new)
    if dropped:
        print(
            f"fashion_mnist.py: {out} held rows measured with other settings "
            f"({', '.join(r['command'] for r in dropped)}); "
            "this table replaces them",
            file=sys.stderr,
        )
    partial = _partial(runs)
    atomic_write_text(out, table(runs, partial, f"{out.stem}_report.md"))
    write_json(out.with_suffix(".json"), {"partial": partial, "runs": runs})
    atomic_write_text(out.parent / f"{out.stem}_report.md", reports_md(runs))
    print(f"wrote {out}" + (f" (rows from {len(runs)} runs)" if len(runs) > 1 else ""))
    return 0


def _config(args, work: Path):
    train = {"recipe": args.recipe, "loss": "bias", "limit_train": args.limit_train}
    if args.epochs:
        train["epochs"] = args.epochs
    baseline = BASELINE if BASELINE in args.models.split(",") else None
    export = {
        "formats": ["tflite-int8", "tflite-int8-qat"],
        "verify_samples": 10000,
        "qat_epochs": args.qat_epochs,
        "qat_limit": args.qat_limit,
    }
    return load_config(
        None,
        out=str(work),
        models=args.models,
        baseline=baseline,
        train=train,
        export=export,
        gate={"max_drop": 1.0, "limit": None},
        bench={"runs": 200, "threads": 1},
    )


def _partial(runs: list[dict]) -> str | None:
    m0 = next(iter(runs[-1]["report"]["models"].values()))["train"]
    partial = None
    if m0["recipe"] != "full" or m0["limit_train"] or m0["epochs"] != FULL_EPOCHS:
        partial = (
            f"trained with the `{m0['recipe']}` recipe ({m0['epochs']} epochs"
            + (f", {m0['limit_train']:,} images" if m0["limit_train"] else "")
            + f"), not the full recipe (`full`: {FULL_EPOCHS} epochs on all 60,000 images), whose table is "
            "`fashion_mnist.md` (`python benchmarks/fashion_mnist.py`, hours on a CPU)."
        )
    measured = {m for run in runs for m in run["report"]["models"]}
    missing = [m for m in MODELS.split(",") if m not in measured]
    if missing:
        partial = ((partial + " ") if partial else "") + (
            f"Not measured yet: {', '.join(missing)} (`python benchmarks/fashion_mnist.py --models "
            f"{','.join(missing)}` with the same settings adds their rows to this table)."
        )
    return partial


def _commit() -> str | None:
    """The commit the study ran from, when it ran from a git checkout."""
    try:
        r = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="fashion_mnist.py"))
