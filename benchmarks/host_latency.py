"""SkipNet-XS..L against MobileNetV3-Small/Large on this host: parameters, MACs, and float and int8
latency in LiteRT (XNNPACK) and onnxruntime at 1 and 2 threads, 224x224.

    python benchmarks/host_latency.py                  # the published figures (about 10 minutes)
    python benchmarks/host_latency.py --runs 20 --out /tmp/quick

Everything is timed through skipnet.bench.benchmark, the code behind skipnet-bench: each model is
exported once per format with the export stage's converters (int8 calibrated on 64 real
Fashion-MNIST images), then every (model, format, thread count) is timed once per round, in turn,
for --runs rounds. Ratios (int8 vs float, 2 vs 1 threads, against MobileNetV3-Large) are medians of
per-round ratios, so a slow spell of this shared machine hits both sides of each ratio alike.
Writes OUT.md (tables with the command, machine and date), OUT.json (every row with its per-round
times) and OUT.png (latency against MACs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from skipnet.bench import benchmark, paired_ratio, study_out, write_study
from skipnet.common import UserError, atomic_path
from skipnet.common.cli import run_cli

MODELS = ("skipnet_xs", "skipnet_s", "skipnet_m", "skipnet_l", "mobilenet_v3_small", "mobilenet_v3_large")
FORMATS = ("tflite", "tflite-int8", "onnx", "onnx-int8")
LABELS = {"tflite": "LiteRT float", "tflite-int8": "LiteRT int8", "onnx": "ORT float", "onnx-int8": "ORT int8"}


def tables(rows: list[dict], models: list[str], threads: list[int]) -> str:
    by = {(r["model"], r["format"], r["threads"]): r for r in rows}
    out = []
    for t in threads:
        out += [
            f"### {t} thread{'s' if t > 1 else ''}: median latency (ms) and int8 speed-up over float",
            "",
            "| model | params (M) | MACs (M) | LiteRT float | LiteRT int8 | LiteRT int8 speed-up | ORT float | "
            "ORT int8 | ORT int8 speed-up |",
            "|---" * 9 + "|",
        ]
        for m in models:
            r = {f: by[(m, f, t)] for f in FORMATS}
            out.append(
                f"| {m} | {r['tflite']['params'] / 1e6:.2f} | {r['tflite']['macs'] / 1e6:.1f} | "
                f"{r['tflite']['p50_ms']:.2f} | {r['tflite-int8']['p50_ms']:.2f} | "
                f"{paired_ratio(r['tflite']['times_ms'], r['tflite-int8']['times_ms']):.2f}x | "
                f"{r['onnx']['p50_ms']:.2f} | {r['onnx-int8']['p50_ms']:.2f} | "
                f"{paired_ratio(r['onnx']['times_ms'], r['onnx-int8']['times_ms']):.2f}x |"
            )
        out.append("")
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
            f"### Speed-up from {t2} threads over {t1}",
            "",
            "| model | " + " | ".join(LABELS[f] for f in FORMATS) + " |",
            "|---" * (1 + len(FORMATS)) + "|",
        ]
        for m in models:
            out.append(
                f"| {m} | "
                + " | ".join(
                    f"{paired_ratio(by[(m, f, t1)]['times_ms'], by[(m, f, t2)]['times_ms']):.2f}x" for f in FORMATS
                )
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, (fp, q, runtime) in zip(
        axes, (("tflite", "tflite-int8", "LiteRT XNNPACK"), ("onnx", "onnx-int8", "onnxruntime"))
    ):
        for family, color in (("skipnet", "tab:red"), ("mobilenet", "tab:blue")):
            for fmt, style in ((fp, "-s"), (q, "--o")):
                pts = sorted(
                    (r["macs"] / 1e6, r["p50_ms"], r["model"])
                    for r in rows
                    if r["format"] == fmt
                    and r["threads"] == thread
                    and r["model"].startswith(family)
                    and r["model"] in models
                )
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    style,
                    color=color,
                    label=f"{'SkipNet' if family == 'skipnet' else 'MobileNetV3'} "
                    f"{'int8' if 'int8' in fmt else 'float'}",
                )
                for x, y, name in pts:
                    ax.annotate(
                        name.replace("mobilenet_v3_", "mbv3_"),
                        (x, y),
                        fontsize=7,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        ax.set_title(f"{runtime}, {thread} thread{'s' if thread > 1 else ''}", fontsize=10)
        ax.set_xlabel("MACs (M)")
        ax.set_ylabel("latency p50 (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


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
    threads = [int(t) for t in a.threads.split(",")]
    if "mobilenet_v3_large" not in models:
        raise UserError("keep mobilenet_v3_large in --models, it is the reference of every ratio")
    t0 = time.perf_counter()
    rows = benchmark(models, list(FORMATS), a.img_size, threads, a.runs, a.warmup, keep_times=True)
    wall = time.perf_counter() - t0
    command = "python benchmarks/host_latency.py" + "".join(f" {arg}" for arg in sys.argv[1:])
    r0 = rows[0]
    runtimes = sorted({r["runtime"] for r in rows})
    text = "\n".join(
        [
            f"# SkipNet vs MobileNetV3 on the host, {a.img_size}x{a.img_size}, float and int8, LiteRT and onnxruntime",
            "",
            f"Command: `{command}` ({wall / 60:.1f} min)",
            "",
            f"Machine: {r0['cpu']}, {r0['cores']} cores; {time.strftime('%Y-%m-%d')}; "
            f"runtimes: {', '.join(runtimes)}. {a.runs} interleaved rounds, each timing every model, format and "
            "thread count once; latencies are medians, ratios medians of per-round ratios. Models are freshly "
            "initialised (latency does not depend on the weights) "
            "with BatchNorm statistics from 64 Fashion-MNIST images; int8 files are what "
            "`skipnet-export --int8` writes "
            "(TFLite: the rewritten graph of tflite_graph.py; ONNX: onnxruntime's static QDQ quantisation). "
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
