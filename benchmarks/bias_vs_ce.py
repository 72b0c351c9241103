"""Bias Loss vs cross-entropy, paired: each model is trained with both losses from the same seeds.

For a model and seed, both runs start from the same initial weights and see the same images in
the same order with the same augmentation (the seed fixes all three); only the loss differs. The
table gives each loss's mean and standard deviation of final top-1 over the seeds, and the paired
difference (Bias - CE) with a 95% confidence interval (Student's t over the per-seed differences).

    python benchmarks/bias_vs_ce.py --models skipnet_s,mobilenet_v3_large,resnet18 --seeds 3 \\
        --epochs 3 --limit-train 20000
    python benchmarks/bias_vs_ce.py --data cifar100 --recipe paper --models resnet18 --seeds 3   # GPU-sized

    python benchmarks/bias_vs_ce.py --recipe full --models skipnet_xs,mobilenet_v3_small --seeds 3 \\
        --work W --out benchmarks/results/bias_vs_ce_full.md     # ~6 h on 2 cores, ~30 min a run

Runs live under --work (one run directory per model/seed/loss, and hosts.json: the CPUs that
trained each); an interrupted study started again with the same flags resumes unfinished runs
and reuses finished ones, and --report-only writes the table of the pairs finished so far
without training. Each run is also exported as int8 TFLite (post-training quantised, beside
the run) and measured on the same test images (--no-int8 to skip). Writes
benchmarks/results/bias_vs_ce.md and .json (--out to change).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

from skipnet.bench.core import cpu_name, study_out, write_study
from skipnet.common import UserError, read_json, write_json
from skipnet.common.cli import run_cli
from skipnet.common.contract import STATE_FILE
from skipnet.common.contract.paths import check_writable_dir
from skipnet.training import DEFAULT_RECIPE, RECIPES, is_finished, resolve_config, resume, train

# Two-sided 95% quantiles of Student's t by degrees of freedom (the CI of a mean over few seeds).
T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    12: 2.179,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}
# docs/paper.md, CIFAR-100 top-1 with the paper's recipe: (Bias Loss, cross-entropy).
PAPER_CIFAR100 = {"resnet18": (75.51, 74.33), "densenet121": (77.83, 75.98), "shufflenet_v2_x0_5": (72.00, 71.55)}


def t975(df: int) -> float:
    return T975.get(df) or next((T975[k] for k in sorted(T975) if k >= df), 1.96)


def paired_summary(bias: list[float], ce: list[float]) -> dict:
    """Means, standard deviations and the paired difference bias - ce with its 95% CI (in points)."""
    diffs = [100 * (b - c) for b, c in zip(bias, ce)]
    n = len(diffs)
    mean_d = statistics.fmean(diffs)
    sd_d = statistics.stdev(diffs) if n > 1 else float("nan")
    half = t975(n - 1) * sd_d / math.sqrt(n) if n > 1 else float("nan")
    return {
        "n": n,
        "bias_mean": 100 * statistics.fmean(bias),
        "bias_std": 100 * statistics.stdev(bias) if n > 1 else float("nan"),
        "ce_mean": 100 * statistics.fmean(ce),
        "ce_std": 100 * statistics.stdev(ce) if n > 1 else float("nan"),
        "diff_mean": mean_d,
        "diff_std": sd_d,
        "ci95": [mean_d - half, mean_d + half],
        "diffs": diffs,
    }


def run_one(out: Path, overrides: dict) -> tuple[float, list[float]]:
    """Train (or resume, or just read) one run; returns (final val top-1, its per-epoch wall seconds
    from metrics.csv, so a run resumed in pieces counts each piece once)."""
    if (out / STATE_FILE).exists():
        result = resume(out, progress=False)  # a finished run only reports
    else:
        result = train(resolve_config({**overrides, "out": str(out)}).validate(), progress=False)
    if result.interrupted:
        raise KeyboardInterrupt
    with open(out / "metrics.csv", encoding="utf-8") as f:
        epochs = [float(row["seconds"]) for row in csv.DictReader(f)]
    return float(result.metrics["val_top1"]), epochs


def quiet_seconds(epochs: list[float]) -> float:
    """One uninterrupted run's training time on a quiet host: the lower-quartile epoch times the number
    of epochs. A long study shares its CPU or is paused (SIGSTOP) while the host times something else,
    and its epochs' wall clock counts all of that; the fastest quarter of the epochs did not."""
    return statistics.quantiles(epochs, n=4)[0] * len(epochs) if len(epochs) > 1 else sum(epochs)


LOSSES = ("bias", "ce")
HOSTS_FILE = "hosts.json"  # in --work: each run's CPU, as the runs may be trained in pieces on several hosts


def record_host(work: Path, run: Path) -> None:
    """Add this CPU to the hosts that trained (part of) ``run``."""
    path = work / HOSTS_FILE
    hosts = read_json(path) if path.exists() else {}
    key = run.relative_to(work).as_posix()
    if cpu_name() not in hosts.setdefault(key, []):
        hosts[key].append(cpu_name())
        work.mkdir(parents=True, exist_ok=True)
        write_json(path, hosts)


def trained_on(work: Path, data: str, rows: dict) -> str:
    """Which CPUs trained the runs in the table, with how many runs each."""
    hosts = read_json(work / HOSTS_FILE) if (work / HOSTS_FILE).exists() else {}
    count: dict[str, int] = {}
    for model, row in rows.items():
        for seed in row["seeds"]:
            for loss in LOSSES:
                for cpu in hosts.get(f"{data}/{model}/seed{seed}_{loss}", ["not recorded"]):
                    count[cpu] = count.get(cpu, 0) + 1
    return "; ".join(f"{cpu} ({n} runs)" for cpu, n in count.items())


def int8_top1(run: Path, data: str, data_dir: str | None) -> float:
    """Top-1 of the run's int8 TFLite file (post-training quantised, as skipnet-export --format tflite --int8
    writes it) on every held-out image; the file is written beside the run once and reused after."""
    from skipnet.export import export
    from skipnet.runtime import ModelLoadError, load
    from skipnet.runtime.evaluate import evaluate

    path = run.with_name(run.name + "_int8.tflite")
    try:
        load(path)
    except ModelLoadError:  # not there yet, or cut short: (re)export
        export(run, "tflite", path, int8=True)
    return float(evaluate(path, data, data_dir, progress=False)["top1"])


def _fmt(x: float) -> str:
    return f"{x:+.2f}" if not math.isnan(x) else "n/a"


def _int8_table(rows: dict) -> list[str]:
    lines = [
        "",
        "The same runs as int8 TFLite files (`skipnet-export --format tflite --int8`: post-training quantised, "
        "LiteRT on this host), on the same test images. Drop = float top-1 - int8 top-1 of the same run; the drop "
        "difference is Bias - CE per seed (negative: Bias Loss's int8 file loses less).",
        "",
        "| model | Bias Loss int8 top-1 | cross-entropy int8 top-1 | paired diff | 95% CI | per seed "
        "| drop Bias / CE (mean) | drop diff | 95% CI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, row in rows.items():
        q, d = row.get("int8"), row.get("int8", {}).get("drop")
        if q is None:
            continue
        lines.append(
            f"| {model} | {q['bias_mean']:.2f} ± {q['bias_std']:.2f} | {q['ce_mean']:.2f} ± {q['ce_std']:.2f} "
            f"| {_fmt(q['diff_mean'])} | [{_fmt(q['ci95'][0])}, {_fmt(q['ci95'][1])}] "
            f"| {', '.join(_fmt(x) for x in q['diffs'])} | {d['bias_mean']:.2f} / {d['ce_mean']:.2f} "
            f"| {_fmt(d['diff_mean'])} | [{_fmt(d['ci95'][0])}, {_fmt(d['ci95'][1])}] |"
        )
    return lines


def write_report(path: Path, args, command: str, rows: dict, wall: float, seconds: tuple[float, float]) -> None:
    train_seconds, epoch_wall = seconds
    lines = [
        "# Bias Loss vs cross-entropy (paired seeds)",
        "",
        f"Command ({date.today().isoformat()}, {cpu_name()}, {len(os.sched_getaffinity(0))} cores; "
        f"{train_seconds / 60:.1f} min of training, each run's lower-quartile epoch times its epochs, summed "
        f"over the runs ({epoch_wall / 60:.1f} min of wall clock, pauses included); "
        f"this invocation {wall / 60:.1f} min):",
        "",
        f"    {command}",
        "",
        f"Dataset {args.data}, recipe `{args.recipe or DEFAULT_RECIPE[args.data]}` (skipnet/training/config.py), "
        f"{args.epochs or 'the recipe' + chr(39) + 's'} epochs"
        + (f", {args.limit_train:,} training images" if args.limit_train else ", all training images")
        + f", {args.seeds} seeds (0..{args.seeds - 1}). Top-1 is the final epoch's on the "
        "validation split (Fashion-MNIST and CIFAR: the official 10,000 test images). For each seed "
        "both losses start from the same weights and see the same images in the same order; "
        "the difference is Bias - CE per seed, with a 95% CI from Student's t over the seeds.",
        "",
        f"Runs trained on: {trained_on(Path(args.work), args.data, rows)}.",
        "",
    ]
    done = {m: rows.get(m, {}).get("seeds", []) for m in (m.strip() for m in args.models.split(",")) if m}
    partial = {m: seeds for m, seeds in done.items() if len(seeds) < args.seeds}  # a model with no pair is partial too
    if partial:
        lines += [
            "**Partial: the study is still running.** Only pairs whose two runs have finished are in the "
            "table: "
            + "; ".join(f"{m} seeds {', '.join(map(str, s)) or 'none'}" for m, s in partial.items())
            + f" of {args.seeds}.",
            "",
        ]
    lines += [
        "| model | seeds | Bias Loss top-1 (mean ± std) | cross-entropy top-1 | paired diff (points) | 95% CI "
        "| per seed | training s per run (median; lower-quartile epoch x epochs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, s in rows.items():
        ci = s["ci95"]
        lines.append(
            f"| {model} | {len(s['seeds'])} | {s['bias_mean']:.2f} ± {s['bias_std']:.2f} "
            f"| {s['ce_mean']:.2f} ± {s['ce_std']:.2f} "
            f"| {_fmt(s['diff_mean'])} | [{_fmt(ci[0])}, {_fmt(ci[1])}] "
            f"| {', '.join(_fmt(d) for d in s['diffs'])} | {statistics.median(s['seconds']):.0f} |"
        )
    if any("int8" in s for s in rows.values()):
        lines += _int8_table(rows)
    lines += [
        "",
        "Paper reference (docs/paper.md, CIFAR-100, 160 epochs, one run each): "
        + "; ".join(f"{m} {b:.2f} vs {c:.2f} ({b - c:+.2f})" for m, (b, c) in PAPER_CIFAR100.items())
        + ".",
    ]
    write_study(
        path,
        "\n".join(lines) + "\n",
        {
            "command": command,
            "date": date.today().isoformat(),
            "cpu": cpu_name(),
            "wall_seconds": wall,
            "train_seconds": train_seconds,
            "train_wall_seconds": epoch_wall,
            "data": args.data,
            "recipe": args.recipe,
            "epochs": args.epochs,
            "limit_train": args.limit_train,
            "seeds": args.seeds,
            "int8": args.int8,
            "partial": bool(partial),
            "models": rows,
        },
    )


def run_dir(args, model: str, seed: int, loss: str) -> Path:
    return Path(args.work) / args.data / model / f"seed{seed}_{loss}"


def overrides(args, model: str, seed: int, loss: str) -> dict:
    """The run's skipnet-train settings (None: the recipe's)."""
    return dict(model=model, data=args.data, data_dir=args.data_dir, recipe=args.recipe, loss=loss, seed=seed,
                epochs=args.epochs, limit_train=args.limit_train)  # fmt: skip


def check_study(args, models: list[str]) -> None:
    """Every run still to train is a valid skipnet-train run, checked before the first one starts: a
    wrong name in --models is found now, not after hours of training the models before it."""
    if not models:
        raise UserError("--models names no model; e.g. --models skipnet_xs,mobilenet_v3_small")
    check_writable_dir(Path(args.work), "--work")
    if args.report_only:
        return
    for model in models:
        for seed in range(args.seeds):
            for loss in LOSSES:
                out = run_dir(args, model, seed, loss)
                if not (out / STATE_FILE).exists():  # a run begun is resumed with its own settings
                    resolve_config({**overrides(args, model, seed, loss), "out": str(out)}).validate()


def study_model(model: str, args) -> tuple[dict | None, float, float]:
    """Train (or resume, or read) ``model``'s pairs of runs; returns its row of the table (None when no
    pair has finished) and the runs' training seconds: quiet (quiet_seconds) and wall clock."""
    top1: dict[str, list[float]] = {loss: [] for loss in LOSSES}
    int8: dict[str, list[float]] = {loss: [] for loss in LOSSES}
    seconds: list[float] = []
    seeds: list[int] = []
    wall = 0.0
    for seed in range(args.seeds):
        runs = {loss: run_dir(args, model, seed, loss) for loss in LOSSES}
        if args.report_only and not all(is_finished(r) for r in runs.values()):
            continue  # a pair counts only when both of its runs are done
        seeds.append(seed)
        for loss, out in runs.items():
            if not is_finished(out):
                record_host(Path(args.work), out)
            acc, epochs = run_one(out, overrides(args, model, seed, loss))
            top1[loss].append(acc)
            seconds.append(round(quiet_seconds(epochs), 1))
            wall += sum(epochs)
            line = f"{model} seed {seed} {loss}: top-1 {100 * acc:.2f}% ({seconds[-1]:.0f} s of training)"
            if args.int8:
                int8[loss].append(int8_top1(out, args.data, args.data_dir))
                line += f", int8 TFLite {100 * int8[loss][-1]:.2f}%"
            print(line, flush=True)
    if not seconds:
        print(f"{model}: no finished pair yet", flush=True)
        return None, 0.0, 0.0
    row = {**paired_summary(top1["bias"], top1["ce"]), "seeds": seeds, "seconds": seconds}
    if args.int8:
        drops = {loss: [f - q for f, q in zip(top1[loss], int8[loss])] for loss in int8}
        row["int8"] = {**paired_summary(int8["bias"], int8["ce"]), "drop": paired_summary(drops["bias"], drops["ce"])}
    print(
        f"{model}: bias {row['bias_mean']:.2f} ce {row['ce_mean']:.2f} diff {row['diff_mean']:+.2f} "
        f"CI [{row['ci95'][0]:+.2f}, {row['ci95'][1]:+.2f}] over {row['n']} seeds",
        flush=True,
    )
    return row, sum(seconds), wall


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="skipnet_s,mobilenet_v3_large,resnet18")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, help="default: the recipe's")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--recipe", choices=tuple(RECIPES), help="default: the dataset's (fast for Fashion-MNIST)")
    p.add_argument("--limit-train", type=int)
    p.add_argument("--work", default="runs/bias_vs_ce", help="where the run directories go")
    p.add_argument("--out", default="benchmarks/results/bias_vs_ce.md")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: the table of the pairs whose runs have both finished (a study in progress)",
    )
    p.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also export each run as int8 TFLite (post-training quantised) and measure its top-1",
    )
    return p


def _main(argv) -> int:
    args = _parser().parse_args(argv)
    if args.seeds < 2:
        raise UserError("--seeds must be at least 2 for a standard deviation and a confidence interval")
    report = study_out(args.out)
    command = "python benchmarks/bias_vs_ce.py " + " ".join(argv if argv is not None else sys.argv[1:])
    t_start = time.perf_counter()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    check_study(args, models)
    rows, quiet, wall = {}, 0.0, 0.0
    for model in models:
        row, model_quiet, model_wall = study_model(model, args)
        if row is not None:
            rows[model], quiet, wall = row, quiet + model_quiet, wall + model_wall
    if not rows:
        raise UserError(f"no finished pair of runs under {args.work}: leave --report-only out to train them")
    write_report(report, args, command, rows, time.perf_counter() - t_start, (quiet, wall))
    print(f"wrote {report.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="bias_vs_ce.py"))
