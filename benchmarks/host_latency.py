"""SkipNet-XS..L against MobileNetV3-Small/Large on this host: parameters, MACs, and float and int8
latency in LiteRT (XNNPACK), onnxruntime and ExecuTorch (XNNPACK) at 1 and 2 threads, 224x224.

    python benchmarks/host_latency.py                  # the published figures (about 25 minutes)
    python benchmarks/host_latency.py --runs 20 --out /tmp/quick

Everything is timed through skipnet.bench.benchmark, the code behind skipnet-bench: each model is
exported per format with the export stage's converters (int8 calibrated on 64 real Fashion-MNIST
images), then every (model, format) is timed once per round, in turn, for --runs rounds. Ratios
(int8 vs float, one runtime against another, against MobileNetV3-Large) are medians of per-round
ratios, so a slow spell of this shared machine hits both sides of each ratio alike. ExecuTorch runs
one thread count per process, so each thread count is measured in a process of its own (one after
the other); the 2-vs-1-thread speed-ups are therefore ratios of medians from two runs, not paired.
Writes OUT.md (tables with the command, machine and date), OUT.json (every row with its per-round
times) and OUT.png (latency against MACs).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from skipnet.bench import benchmark, paired_ratio, study_out, write_study
from skipnet.common import UserError
from skipnet.common.cli import run_cli
from skipnet.common.plot import pyplot, save_png

MODELS = ("skipnet_xs", "skipnet_s", "skipnet_m", "skipnet_l", "mobilenet_v3_small", "mobilenet_v3_large")
RUNTIMES = {"tflite": "LiteRT", "onnx": "ORT", "executorch": "ExecuTorch"}  # float format -> label
FORMATS = tuple(f for fp in RUNTIMES for f in (fp, f"{fp}-int8"))
LABELS = {f: f"{RUNTIMES[f.removesuffix('-int8')]} {'int8' if f.endswith('-int8') else 'float'}" for f in FORMATS}
# Part 4 of the ExecuTorch work: SkipNet-M at 224, 1 thread.
TARGET_MODEL, INT8_SPEEDUP, VS_LITERT = "skipnet_m", 1.5, 1.05


def _fastest(r: dict, precision: str) -> str:
    fmts = [f for f in FORMATS if f.endswith("-int8") == (precision == "int8")]
    return RUNTIMES[min(fmts, key=lambda f: r[f]["p50_ms"]).removesuffix("-int8")]


def _latency_table(by: dict, models: list[str], t: int) -> list[str]:
    head = " | ".join(f"{RUNTIMES[fp]} float | {RUNTIMES[fp]} int8 | {RUNTIMES[fp]} int8 speed-up" for fp in RUNTIMES)
    out = [
        f"### {t} thread{'s' if t > 1 else ''}: median latency (ms), int8 speed-up over float, fastest runtime",
        "",
        f"| model | params (M) | MACs (M) | {head} | fastest float | fastest int8 |",
        "|---" * (5 + 3 * len(RUNTIMES)) + "|",
    ]
    for m in models:
        r = {f: by[(m, f, t)] for f in FORMATS}
        cells = [
            f"{r[fp]['p50_ms']:.2f} | {r[fp + '-int8']['p50_ms']:.2f} | "
            f"{paired_ratio(r[fp]['times_ms'], r[fp + '-int8']['times_ms']):.2f}x"
            for fp in RUNTIMES
        ]
        out.append(
            f"| {m} | {r['tflite']['params'] / 1e6:.2f} | {r['tflite']['macs'] / 1e6:.1f} | {' | '.join(cells)} | "
            f"{_fastest(r, 'float')} | {_fastest(r, 'int8')} |"
        )
    return [*out, ""]


def _executorch_vs_litert(by: dict, models: list[str], threads: list[int]) -> list[str]:
    out = [
        "### ExecuTorch latency relative to LiteRT, same precision (below 1.00x: ExecuTorch faster)",
        "",
        "| model | threads | float | int8 |",
        "|---|---|---|---|",
    ]
    for m in models:
        for t in threads:
            ratio = [paired_ratio(by[(m, f"executorch{q}", t)]["times_ms"], by[(m, f"tflite{q}", t)]["times_ms"])
                     for q in ("", "-int8")]  # fmt: skip
            out.append(f"| {m} | {t} | {ratio[0]:.2f}x | {ratio[1]:.2f}x |")
    return [*out, ""]


def targets(by: dict) -> list[str]:
    """The two ExecuTorch targets for SkipNet-M at 1 thread: one line each, measured, met or not."""
    et, et8, lt8 = (by[(TARGET_MODEL, f, 1)]["times_ms"] for f in ("executorch", "executorch-int8", "tflite-int8"))
    speedup, vs = paired_ratio(et, et8), paired_ratio(et8, lt8)
    return [
        f"- int8 `.pte` against float `.pte`: {speedup:.2f}x faster (target >= {INT8_SPEEDUP}x): "
        f"{'met' if speedup >= INT8_SPEEDUP else 'NOT met'}",
        f"- int8 `.pte` against int8 `.tflite`: {vs:.2f}x the latency (target <= {VS_LITERT:.2f}x): "
        f"{'met' if vs <= VS_LITERT else 'NOT met'}",
    ]


def tables(rows: list[dict], models: list[str], threads: list[int]) -> str:
    by = {(r["model"], r["format"], r["threads"]): r for r in rows}
    out = [line for t in threads for line in _latency_table(by, models, t)]
    out += _executorch_vs_litert(by, models, threads)
    if TARGET_MODEL in models and 1 in threads:
        out += [f"### ExecuTorch targets ({TARGET_MODEL}, 1 thread)", "", *targets(by), ""]
    out += [
        "### Latency relative to MobileNetV3-Large (below 1.00x: faster)",
        "",
        "| model | threads | " + " | ".join(LABELS[f] for f in FORMATS) + " |",
        "|---" * (2 + len(FORMATS)) + "|",
    ]
    for m in models:
        for t in threads:
            out.append(
                f"| {m} | {t} | "
                + " | ".join(f"{by[(m, f, t)]['latency_vs_mobilenet_v3_large']:.2f}x" for f in FORMATS)
                + " |"
            )
    if len(threads) > 1:
        t1, t2 = threads[0], threads[1]
        out += [
            "",
            f"### Speed-up from {t2} threads over {t1} (ratio of the two runs' medians)",
            "",
            "| model | " + " | ".join(LABELS[f] for f in FORMATS) + " |",
            "|---" * (1 + len(FORMATS)) + "|",
        ]
        for m in models:
            out.append(
                f"| {m} | "
                + " | ".join(f"{by[(m, f, t1)]['p50_ms'] / by[(m, f, t2)]['p50_ms']:.2f}x" for f in FORMATS)
                + " |"
            )
    out += [
        "",
        "### MACs: our counter against LiteRT's converter",
        "",
        "`macs` is skipnet.models.count_macs (PyTorch's flop counter: convolutions and linear layers, the "
        "paper's convention); the converter's estimate also counts element-wise ops (h-swish, the "
        "squeeze-excite scaling, residual adds, the input normalisation).",
        "",
        "| model | count_macs (M) | LiteRT estimate (M) | difference |",
        "|---|---|---|---|",
    ]
    for m in models:
        r = by[(m, "tflite", threads[0])]
        out.append(
            f"| {m} | {r['macs'] / 1e6:.1f} | {r['macs_litert'] / 1e6:.1f} | "
            f"{100 * (r['macs_litert'] / r['macs'] - 1):+.1f}% |"
        )
    return "\n".join(out)


def plot(rows: list[dict], models: list[str], thread: int, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(RUNTIMES), figsize=(5.5 * len(RUNTIMES), 4.2), sharey=True)
    for ax, (fp, runtime) in zip(axes, RUNTIMES.items()):
        for family, color in (("skipnet", "tab:red"), ("mobilenet", "tab:blue")):
            for fmt, style in ((fp, "-s"), (f"{fp}-int8", "--o")):
                pts = sorted(
                    (r["macs"] / 1e6, r["p50_ms"], r["model"])
                    for r in rows
                    if r["format"] == fmt and r["threads"] == thread and r["model"].startswith(family)
                    and r["model"] in models
                )  # fmt: skip
                label = f"{'SkipNet' if family == 'skipnet' else 'MobileNetV3'} {'int8' if 'int8' in fmt else 'float'}"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, label=label)
                for x, y, name in pts:
                    short = name.replace("mobilenet_v3_", "mbv3_")
                    ax.annotate(short, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(f"{runtime}, {thread} thread{'s' if thread > 1 else ''}", fontsize=10)
        ax.set_xlabel("MACs (M)")
        ax.set_ylabel("latency p50 (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def measure(models: list[str], img_size: int, threads: int, runs: int, warmup: int) -> list[dict]:
    """Every model and format at one thread count, in this (fresh) process."""
    return benchmark(models, list(FORMATS), img_size, threads, runs, warmup, keep_times=True)


def _in_own_process(models: list[str], img_size: int, threads: int, runs: int, warmup: int) -> list[dict]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, models, img_size, threads, runs, warmup).result()


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/host_latency")
    a = p.parse_args(argv)
    out = study_out(a.out)
    models = a.models.split(",")
    threads = list(dict.fromkeys(int(t) for t in a.threads.split(",")))
    if "mobilenet_v3_large" not in models:
        raise UserError("keep mobilenet_v3_large in --models, it is the reference of every ratio")
    t0 = time.perf_counter()
    rows = [r for t in threads for r in _in_own_process(models, a.img_size, t, a.runs, a.warmup)]
    wall = time.perf_counter() - t0
    command = "python benchmarks/host_latency.py" + "".join(f" {arg}" for arg in sys.argv[1:])
    r0 = rows[0]
    runtimes = sorted({r["runtime"] for r in rows})
    text = "\n".join(
        [
            f"# SkipNet vs MobileNetV3 on the host, {a.img_size}x{a.img_size}, float and int8: LiteRT, onnxruntime "
            "and ExecuTorch",
            "",
            f"Command: `{command}` ({wall / 60:.1f} min)",
            "",
            f"Machine: {r0['cpu']}, {r0['cores']} cores; {time.strftime('%Y-%m-%d')}; "
            f"runtimes: {', '.join(runtimes)}. Each thread count is one process of {a.runs} interleaved rounds, "
            "each round timing every model and format once; latencies are medians, ratios medians of per-round "
            "ratios (the thread speed-ups: ratios of the two processes' medians). Models are freshly "
            "initialised (latency does not depend on the weights) "
            "with BatchNorm statistics from 64 Fashion-MNIST images; int8 files are what "
            "`skipnet-export --int8` writes "
            "(TFLite: the rewritten graph of tflite_graph.py; ONNX: onnxruntime's static QDQ quantisation; "
            "ExecuTorch: PT2E with the XNNPACK quantizer, lowered whole to XNNPACK). Every runtime runs at the "
            "thread count of its table (onnxruntime without spinning, as skipnet-bench times it). "
            "Absolute times on this shared VM drift 10-40% between runs; the ratios move far less.",
            "",
            tables(rows, models, threads),
            "",
            f"![latency against MACs]({out.name}.png)",
            "",
        ]
    )
    write_study(
        out, text, {"command": command, "date": time.strftime("%Y-%m-%d"), "wall_s": round(wall, 1), "rows": rows}
    )
    plot(rows, models, threads[0], out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="host_latency.py"))
