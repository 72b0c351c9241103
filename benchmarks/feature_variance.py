"""Bias Loss's premise on the paired runs of bias_vs_ce.py: top-1 by tenths of feature-map variance.

For every finished run of a bias_vs_ce.py study (each model, seed and loss), skipnet-eval
--feature-variance's measurement (skipnet.runtime.feature_variance): the test images ranked by
the variance of their last feature map, as Bias Loss computes it, cut into ten equal bins, each
with its top-1; and the share of images whose Bias Loss weight is below 1. The table and plot
give the mean over seeds per model and loss.

    python benchmarks/feature_variance.py --work /work/bvc --models skipnet_xs,mobilenet_v3_small --seeds 3

Each run's measurement is kept beside it (RUN_feature_variance.json), so a study started again
measures only what is new. Writes benchmarks/results/feature_variance.md, .json and .png (--out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

from skipnet.bench.core import cpu_name, study_out, write_study
from skipnet.common import UserError, read_json, write_json
from skipnet.common.cli import run_cli
from skipnet.common.contract import LOSS_NAMES, WEIGHTS_FILE
from skipnet.common.io import file_record
from skipnet.data import list_datasets
from skipnet.models import list_models
from skipnet.runtime.feature_variance import feature_variance, plot_deciles
from skipnet.training import is_finished


def measure(run: Path, data: str, data_dir: str | None) -> dict:
    """The run's report, reused from RUN_feature_variance.json when that was measured on the same weights
    and data (a run trained again, or another --data, is measured again)."""
    cached = run.with_name(run.name + "_feature_variance.json")
    key = {"weights_sha256": file_record(run / WEIGHTS_FILE)["sha256"], "data": data, "data_dir": data_dir}
    if cached.exists():
        old = read_json(cached)
        if all(old.get(k) == v for k, v in key.items()):
            return old
    report = {**feature_variance(run, data, data_dir), **key}
    write_json(cached, report)
    return report


def summarise(reports: list[dict]) -> dict:
    """Mean (and spread over seeds) of each bin's top-1, the overall top-1 and the share below weight 1."""
    bins = len(reports[0]["deciles"])
    per_bin = [[r["deciles"][k]["top1"] for r in reports] for k in range(bins)]
    return {
        "seeds": len(reports),
        "top1": statistics.fmean(r["top1"] for r in reports),
        "below_one": statistics.fmean(r["weights"]["below_one"] for r in reports),
        "bin_top1": [statistics.fmean(b) for b in per_bin],
        "bin_top1_std": [statistics.stdev(b) if len(b) > 1 else 0.0 for b in per_bin],
        "bin_mean_weight": [statistics.fmean(r["deciles"][k]["mean_weight"] for r in reports) for k in range(bins)],
        "chance": reports[0]["chance"],
        "images": reports[0]["images"],
    }


def write_report(out: Path, command: str, rows: dict, wall: float, args) -> None:
    bins = len(next(iter(next(iter(rows.values())).values()))["bin_top1"])
    lines = [
        "# Feature-map variance and top-1 (Bias Loss's premise)",
        "",
        f"Command ({date.today().isoformat()}, {cpu_name()}, {len(os.sched_getaffinity(0))} cores, "
        f"{wall / 60:.1f} min):",
        "",
        f"    {command}",
        "",
        f"Runs: `benchmarks/bias_vs_ce.py`'s under `{args.work}` ({args.data}; see bias_vs_ce_full.md for how they "
        "were trained). For each run, every test image's feature map (the layer Bias Loss reads) and its unbiased "
        "variance as the loss computes it; the images ranked by that variance and cut into ten equal bins, "
        "1 = lowest. Cells: top-1 in %, mean over the seeds (± the spread over seeds in the bins at the ends). "
        "Weight < 1: the share of test images whose Bias Loss weight exp(0.3 v^) - 0.3 is below 1, with v^ "
        "normalised over batches of the training batch size as in training (no running minimum carried over), "
        "the same for both losses' runs. The same numbers for one run: "
        "`skipnet-eval RUN --data DATA --feature-variance`.",
        "",
        "| model | trained with | seeds | "
        + " | ".join(f"bin {k}" for k in range(1, bins + 1))
        + " | all | weight < 1 |",
        "|---|---|---|" + "---|" * bins + "---|---|",
    ]
    for model, by_loss in rows.items():
        for loss, s in by_loss.items():
            cells = [f"{100 * t:.1f}" for t in s["bin_top1"]]
            cells[0] += f" ± {100 * s['bin_top1_std'][0]:.1f}"
            cells[-1] += f" ± {100 * s['bin_top1_std'][-1]:.1f}"
            lines.append(
                f"| {model} | {LOSS_NAMES[loss]} | {s['seeds']} | "
                + " | ".join(cells)
                + f" | {100 * s['top1']:.2f} | {100 * s['below_one']:.1f}% |"
            )
    chance = next(iter(next(iter(rows.values())).values()))["chance"]
    lines += [
        "",
        f"Chance: {100 * chance:.0f}%. Plot: {out.with_suffix('.png').name} (top-1 against bin, one line "
        "per loss, one panel per model).",
    ]
    write_study(
        out,
        "\n".join(lines) + "\n",
        {"command": command, "date": date.today().isoformat(), "cpu": cpu_name(), "wall_seconds": wall, "models": rows},
    )
    plot_deciles(
        {model: {LOSS_NAMES[loss]: s["bin_top1"] for loss, s in by_loss.items()} for model, by_loss in rows.items()},
        out.with_suffix(".png"),
        chance,
    )


def check_args(args, models: list[str]) -> None:
    """One line and exit 2 for what cannot name a study's runs, before any measuring."""
    unknown = [m for m in models if m not in list_models()]
    if not models or unknown:
        raise UserError(f"unknown --models {','.join(unknown) or '(none)'}; choose from {', '.join(list_models())}")
    if args.data not in list_datasets():
        raise UserError(f"unknown --data {args.data!r}; choose one of: {', '.join(list_datasets())}")
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if not Path(args.work).is_dir():
        raise UserError(f"--work {args.work} is not a folder: give bias_vs_ce.py's --work folder")


def _main(argv) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", required=True, help="bias_vs_ce.py's --work folder")
    p.add_argument("--models", default="skipnet_xs,mobilenet_v3_small")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--out", default="benchmarks/results/feature_variance.md")
    args = p.parse_args(argv)
    report = study_out(args.out)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    check_args(args, models)
    command = "python benchmarks/feature_variance.py " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    rows: dict[str, dict] = {}
    for model in models:
        for loss in LOSS_NAMES:
            runs = [Path(args.work) / args.data / model / f"seed{seed}_{loss}" for seed in range(args.seeds)]
            done = [r for r in runs if is_finished(r)]
            if done:
                rows.setdefault(model, {})[loss] = summarise([measure(r, args.data, args.data_dir) for r in done])
            print(f"{model} {loss}: {len(done)} of {len(runs)} runs finished", flush=True)
    if not rows:
        raise UserError(
            f"no finished runs under {args.work}/{args.data}: run benchmarks/bias_vs_ce.py --work {args.work} first"
        )
    write_report(report, command, rows, time.perf_counter() - t0, args)
    print(f"wrote {report.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="feature_variance.py"))
