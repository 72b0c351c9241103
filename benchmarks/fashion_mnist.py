"""The Fashion-MNIST accuracy table: SkipNet-XS/S/M against MobileNetV3-S/L, float and int8 (PTQ
and QAT), with parameters, MACs and int8 LiteRT latency, every model trained the same way.

    python benchmarks/fashion_mnist.py                       # the full recipe: hours on 2 CPU cores
    python benchmarks/fashion_mnist.py --recipe fast         # 3 epochs: the partial table
    python benchmarks/fashion_mnist.py --resume ...          # continue an interrupted study
    python benchmarks/fashion_mnist.py --models skipnet_m,mobilenet_v3_large   # the key pair first, then
    python benchmarks/fashion_mnist.py --resume              # add the other three to the same study

It is the pipeline (skipnet-pipeline) with five models and the int8 TFLite exports PTQ and QAT,
each checked on all 10,000 test images; its work directory keeps every step, so --resume
continues where an interrupted study stopped (a half-trained model from its last checkpoint), and
models added on a later --resume are trained, exported and gated alone (only the latency rounds,
which time every file side by side, run again).
Writes benchmarks/results/fashion_mnist.md and .json. A table from anything but the full
recipe on all 60,000 training images is marked partial.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from skipnet.common import UserError, atomic_write_text, write_json
from skipnet.common.cli import run_cli
from skipnet.pipeline import Interrupted, load_config, run_pipeline

MODELS = "skipnet_xs,skipnet_s,skipnet_m,mobilenet_v3_small,mobilenet_v3_large"
RESULTS = Path(__file__).parent / "results"
HOST_LATENCY = RESULTS / "host_latency.json"


def _latency_224() -> dict[str, float]:
    """int8 LiteRT p50 at 224x224, 1 thread, from host_latency.py's committed results."""
    if not HOST_LATENCY.exists():
        return {}
    rows = json.loads(HOST_LATENCY.read_text())["rows"]
    return {r["model"]: r["p50_ms"] for r in rows
            if r.get("format") == "tflite-int8" and r.get("threads") == 1 and "p50_ms" in r}


def table(report: dict, partial: str | None, command: str,
          report_name: str = "fashion_mnist_report.md") -> str:
    lat224 = _latency_224()
    base = report["baseline"]
    m0 = next(iter(report["models"].values()))
    t = m0["train"]
    images = f"{t['limit_train']:,}" if t["limit_train"] else "all 60,000"
    lines = ["# Fashion-MNIST accuracy table" + (" (PARTIAL)" if partial else ""), ""]
    if partial:
        lines += [f"**Partial:** {partial}", ""]
    lines += [f"Command ({report['date']}, {report['cpu']}, {report['cores']} cores; "
              f"{report['compute_seconds'] / 3600:.2f} h of compute summed over its steps):", "", f"    {command}", "",
              f"Every model: recipe `{t['recipe']}`, {t['epochs']} epochs, "
              f"{images} training images, "
              f"{'Bias Loss' if t['loss'] == 'bias' else 'cross-entropy'}, {m0['img_size']}x{m0['img_size']} input. "
              "Top-1 on the 10,000 test images: float = PyTorch; PTQ = int8 TFLite after post-training "
              "quantisation; QAT = int8 TFLite after quantisation-aware fine-tuning "
              f"({report['config']['export']['qat_epochs']} epoch"
              + (f" of {report['config']['export']['qat_limit']:,} images" if report['config']['export']['qat_limit']
                 else "") + "). MACs at the trained input size. Latency: int8 LiteRT (XNNPACK), 1 thread, p50 on "
              f"this host at the trained size ({report['bench']['runs']} interleaved rounds, ratio paired per round "
              f"against {base}) and at 224x224 from `benchmarks/results/host_latency.md`.", "",
              "| model | params | MACs | float top-1 | PTQ int8 top-1 | QAT int8 top-1 | int8 latency | "
              f"vs {base} | int8 latency @224 |", "|---" * 9 + "|"]
    for name, m in report["models"].items():
        ptq, qat = m["exports"]["tflite-int8"], m["exports"].get("tflite-int8-qat", {})
        qat_top1 = (qat.get("parity") or {}).get("exported_top1")
        ratio = ptq.get("latency_vs_baseline")
        lines.append(f"| {name} | {m['params'] / 1e6:.2f} M | {m['macs'] / 1e6:.1f} M | {100 * m['float_top1']:.2f}% | "
                     f"{100 * m['gated_top1']:.2f}% | {f'{100 * qat_top1:.2f}%' if qat_top1 is not None else '-'} | "
                     f"{ptq['p50_ms']:.3f} ms | {f'{ratio:.2f}x' if ratio else '-'} | "
                     f"{f'{lat224[name]:.2f} ms' if name in lat224 else '-'} |")
    if report["failures"]:  # the pipeline's verdicts: a figure from a file that failed its check must say so
        lines += ["", f"**Failed checks:** {'; '.join(report['failures'])} (the top-1 above is still that file's, "
                      "measured on all 10,000 test images; the criterion and figures are in the report beside this file)."]
    lines += ["", "Reference points (Fashion-MNIST benchmark, not run here): MobileNet 95.0%, ResNet-18 94.9%.",
              "Per-export parity, sizes and step times: the pipeline report copied beside this file "
              f"(`{report_name}`)."]
    return "\n".join(lines) + "\n"


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
    p.add_argument("--out", help="the table (default benchmarks/results/fashion_mnist.md for the full recipe, "
                                 "fashion_mnist_RECIPE.md for another)")
    args = p.parse_args(argv)
    work = Path(args.work or f"runs/fashion_mnist-{args.recipe}")
    if (work / "pipeline.json").exists() and not args.resume:
        raise UserError(f"{work} holds a study already: pass --resume to continue it (or choose another --work)")
    if args.resume and not (work / "pipeline.json").exists():
        raise UserError(f"nothing to resume in {work}; run without --resume to start")
    train = {"recipe": args.recipe, "loss": "bias", "limit_train": args.limit_train}
    if args.epochs:
        train["epochs"] = args.epochs
    baseline = "mobilenet_v3_large" if "mobilenet_v3_large" in args.models.split(",") else None
    cfg = load_config(None, out=str(work), models=args.models, baseline=baseline,
                      train=train, export={"formats": ["tflite-int8", "tflite-int8-qat"], "verify_samples": 10000,
                                           "qat_epochs": args.qat_epochs, "qat_limit": args.qat_limit},
                      gate={"max_drop": 1.0, "limit": None}, bench={"runs": 200, "threads": 1})
    # The command that reproduces the table (one run in pieces adds --resume to the same command).
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python benchmarks/fashion_mnist.py", *(a for a in argv if a != "--resume")])
    try:
        report = run_pipeline(cfg, command=command)
    except Interrupted as e:  # Ctrl-C or SIGTERM: training saved a checkpoint first
        print(f"fashion_mnist.py: interrupted; add --resume to the same command to continue {work}", file=sys.stderr)
        return e.exit_code
    m0 = next(iter(report["models"].values()))["train"]
    partial = None
    if m0["recipe"] != "full" or m0["limit_train"] or args.epochs:
        partial = (f"trained with the `{m0['recipe']}` recipe ({m0['epochs']} epochs"
                   + (f", {m0['limit_train']:,} images" if m0["limit_train"] else "")
                   + "), not the full recipe (`full`: 30 epochs on all 60,000 images), whose table is "
                   "`fashion_mnist.md` (`python benchmarks/fashion_mnist.py`, hours on a CPU).")
    missing = [m for m in MODELS.split(",") if m not in report["models"]]
    if missing:
        partial = ((partial + " ") if partial else "") + (
            f"Not measured yet: {', '.join(missing)} (the same command with `--resume --models {MODELS}` "
            "adds them to this study).")
    out = Path(args.out or RESULTS / ("fashion_mnist.md" if args.recipe == "full" else f"fashion_mnist_{args.recipe}.md"))
    atomic_write_text(out, table(report, partial, command, f"{out.stem}_report.md"))
    write_json(out.with_suffix(".json"), {"command": command, "date": date.today().isoformat(), "partial": partial,
                                          "report": report})
    atomic_write_text(out.parent / f"{out.stem}_report.md", (work / "report.md").read_text())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="fashion_mnist.py"))
