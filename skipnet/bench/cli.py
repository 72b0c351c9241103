"""`skipnet-bench`: parameters, MACs, size and latency of SkipNet against MobileNetV3 per format."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from typing import Any

from ..common import UserError, atomic_write_text, write_json
from ..common.cli import ArgumentParser, run_cli
from ..common.contract import check_output_file
from ..common.io import refuse_special_file
from .core import ALIASES, FORMATS, benchmark, formats_for

DEFAULT_MODELS = "skipnet_xs,skipnet_s,skipnet_m,skipnet_l,mobilenet_v3_small,mobilenet_v3_large"
COLUMNS = (
    "model",
    "format",
    "threads",
    "params",
    "macs",
    "macs_litert",
    "size_mb",
    "p50_ms",
    "p90_ms",
    "mean_ms",
    "std_ms",
    "latency_vs_mobilenet_v3_large",
    "runtime",
    "img_size",
    "cpu",
    "cores",
    "runs",
    "skipped",
)


def _ms(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f}" if row.get(key) is not None else "-"  # benchmark_model prints no p90


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | format | threads | params (M) | MACs (M) | LiteRT MACs (M) | size (MB) | p50 ms | p90 ms | "
        "mean ms | std ms | vs MobileNetV3-L | runtime |",
        "|---" * 13 + "|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['format']} | {r['threads']} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e6:.1f} | "
        litert = f"{r['macs_litert'] / 1e6:.1f}" if r.get("macs_litert") else "-"
        if "skipped" in r:
            lines.append(f"{head}- | - | - | - | - | - | - | {r['skipped']} |")
            continue
        ratio = r.get("latency_vs_mobilenet_v3_large")
        lines.append(
            f"{head}{litert} | {r['size_mb']} | {_ms(r, 'p50_ms')} | {_ms(r, 'p90_ms')} | "
            f"{_ms(r, 'mean_ms')} | {_ms(r, 'std_ms')} | {f'{ratio:.2f}x' if ratio else '-'} | "
            f"{r['runtime']} |"
        )
    return "\n".join(lines)


def census_table(rows: list[dict[str, Any]]) -> str:
    """The delegation of every file on arm64 beside this host's, and why there is no timing."""
    from ..runtime.delegation import summary

    lines = ["| model | format | params (M) | MACs (M) | size (MB) | arm64 (emulated) | this host |", "|---" * 7 + "|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['format']} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e6:.1f} | "
            f"{r['size_mb']} | {summary(r['delegation'])} | {summary(r['host_delegation'])} |"
        )
    return "\n".join(lines + ["", f"Latency {rows[0]['skipped']}." if rows else ""])


def _threads(text: str) -> list[int]:
    try:
        threads = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        raise UserError(f"--threads {text}: give positive thread counts, e.g. 1 or 1,2")
    return threads


def _read_accuracy(paths: Sequence[str]) -> dict[str, float]:
    acc = {}
    for path in paths:
        refuse_special_file(path)
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
            acc[report["architecture"]] = float(report["top1"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"--accuracy {path} is not a skipnet-eval --json report ({type(e).__name__}: {e}); "
                "write one with skipnet-eval MODEL --data ... --json FILE"
            ) from None
    return acc


def plot(rows: list[dict[str, Any]], accuracy: dict[str, float], path: str) -> None:
    """Accuracy against MACs and against latency (one point per model and format), paper style."""
    from .plots import draw_accuracy, figure, save

    fig, (ax1, ax2) = figure(2)
    several_threads = len({r["threads"] for r in rows}) > 1
    by_model = {r["model"]: r for r in rows}
    draw_accuracy(
        ax1,
        [{"label": m, "model": m, "top1": accuracy.get(m), "macs": r["macs"] / 1e6} for m, r in by_model.items()],
        "macs",
        "MACs (M)",
    )
    draw_accuracy(
        ax2,
        [
            {
                "label": f"{r['model']} {r['format']}" + (f" {r['threads']}t" if several_threads else ""),
                "model": r["model"],
                "top1": accuracy.get(r["model"]),
                "p50_ms": r.get("p50_ms"),
                "int8": "int8" in r["format"],
            }
            for r in rows
        ],
        "p50_ms",
        "latency p50 (ms)",
    )
    save(fig, path, "SkipNet (red) vs MobileNetV3 (blue)")


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="skipnet-bench", description="Benchmark SkipNet against MobileNetV3 on this host.")
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default: {DEFAULT_MODELS})")
    p.add_argument(
        "--formats",
        default="torch,onnx,tflite,tflite-int8",
        help=f"comma-separated: {','.join([*FORMATS, *ALIASES])} (coreml: both units, macOS only)",
    )
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", default="1", help="thread count(s), comma-separated: 1,2 times both, interleaved")
    p.add_argument("--runs", type=int, default=50, help="timed rounds; each times every model and format once")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--data-dir", help="Fashion-MNIST files for int8 calibration (default: the installed copy)")
    p.add_argument("--json")
    p.add_argument("--csv")
    p.add_argument("--plot", help="accuracy vs MACs and vs latency (.png); needs --accuracy")
    p.add_argument("--accuracy", nargs="+", default=[], help="skipnet-eval --json reports, one per model")
    p.add_argument(
        "--platform",
        choices=("host", "arm64"),
        default="host",
        help="arm64: no timing; each .tflite file's XNNPACK delegation in LiteRT's aarch64 build under "
        "emulation (the phones' kernels), beside this host's",
    )
    p.add_argument("--android", action="store_true", help="time the .tflite files on a phone through adb")
    p.add_argument("--serial", help="with --android: the device (adb -s)")
    p.add_argument("--benchmark-binary", help="with --android: TensorFlow Lite's benchmark_model for the phone")
    p.add_argument("--delegate", choices=("gpu", "nnapi"), help="with --android: a delegate instead of CPU/XNNPACK")
    p.add_argument("--quiet", action="store_true")
    return p


def _checked(p: ArgumentParser, a) -> tuple[list[str], list[str], dict[str, Any] | None]:
    """Models, formats and the phone settings, once every flag and output path has been checked."""
    android = None
    if a.android:
        if not a.benchmark_binary:
            p.error("--android needs --benchmark-binary PATH (TensorFlow Lite's benchmark_model for the phone)")
        android = {"benchmark_binary": a.benchmark_binary, "serial": a.serial, "delegate": a.delegate}
    elif a.serial or a.benchmark_binary or a.delegate:
        p.error("--serial, --benchmark-binary and --delegate go with --android")
    if a.plot and not a.accuracy:
        p.error("--plot draws accuracy against MACs and latency: add --accuracy with skipnet-eval --json reports")
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    formats = [f.strip() for f in a.formats.split(",") if f.strip()]
    if not models or not formats:
        p.error(f"--models and --formats each need at least one name, e.g. --models {DEFAULT_MODELS.split(',')[0]}")
    for flag, path, suffix in (("--json", a.json, None), ("--csv", a.csv, None), ("--plot", a.plot, ".png")):
        if path is not None:
            check_output_file(path, flag, suffix=suffix)
    if (android or a.platform == "arm64") and a.formats == p.get_default("formats"):
        formats = formats_for(android=bool(android), platform=a.platform if a.platform != "host" else None)
    return models, formats, android


def _write(a, rows: list[dict[str, Any]], accuracy: dict[str, float]) -> None:
    if a.json:
        write_json(a.json, {"date": time.strftime("%Y-%m-%d"), "rows": rows})
    if a.csv:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[*COLUMNS, "top1"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(a.csv, buf.getvalue())
    if a.plot:
        plot(rows, accuracy, a.plot)


def _main(argv: Sequence[str] | None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    models, formats, android = _checked(p, a)
    accuracy = _read_accuracy(a.accuracy)
    rows = benchmark(
        models,
        formats,
        a.img_size,
        _threads(a.threads),
        a.runs,
        a.warmup,
        data_dir=a.data_dir,
        progress=not a.quiet,
        android=android,
        platform=a.platform,
    )
    for r in rows:
        if r["model"] in accuracy:
            r["top1"] = accuracy[r["model"]]
    print(census_table(rows) if a.platform == "arm64" else table(rows))
    _write(a, rows, accuracy)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="skipnet-bench")
