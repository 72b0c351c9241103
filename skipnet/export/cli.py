"""`skipnet-export RUN_DIR --format tflite --int8 [--out PATH]`: parse flags, call `export`, report parity."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..common.cli import ArgumentParser, run_cli
from ..common.contract import BACKENDS, EXPORT_FORMATS, QAT_LR
from . import ExportOptions, export
from .parity import INT8_MIN_AGREEMENT
from .speed import speed_line


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="skipnet-export",
        description="Export a trained run to a mobile format, then check it predicts what PyTorch predicted.",
    )
    p.add_argument("run_dir", help="run directory written by skipnet-train")
    p.add_argument(
        "--format",
        required=True,
        choices=list(dict.fromkeys(BACKENDS + EXPORT_FORMATS)),
        metavar="FORMAT",
        help=f"{', '.join(BACKENDS)} (with --int8), or a full name: "
        f"{', '.join(f for f in EXPORT_FORMATS if f not in BACKENDS)}",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="int8 quantisation (weights per channel, activations per tensor), calibrated on training images",
    )
    p.add_argument(
        "--full-integer",
        action="store_true",
        help="with --format tflite --int8: every op int8, also the first high-resolution layers that "
        "stay float by default (NPU delegates such as NNAPI or the Edge TPU need it); as accurate, "
        "faster or slower on a CPU depending on its int8 instructions",
    )
    p.add_argument("--out", help="output file (default exports/RUN[_int8][_qat].EXT)")
    p.add_argument("--img-size", type=int, help="input side (default: the training size)")
    p.add_argument("--data-dir", help="dataset directory for the parity images (default: the run's)")
    p.add_argument("--verify-samples", type=int, default=256, help="validation images for the parity check")
    p.add_argument("--calibration-samples", type=int, default=256, help="training images to calibrate int8 with")
    p.add_argument(
        "--qat-epochs",
        type=int,
        default=0,
        help="with --int8: epochs of quantisation-aware fine-tuning of the int8 graph (the run's loss "
        "plus distillation from its float model) before writing it, for any --format",
    )
    p.add_argument("--qat-limit", type=int, help="training images per QAT epoch (default: all)")
    p.add_argument(
        "--qat-lr",
        type=float,
        default=QAT_LR,
        help=f"QAT's Adam learning rate, decayed to 0 by a cosine (default {QAT_LR:g})",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the parity check")
    p.add_argument(
        "--batch",
        metavar="N|dynamic",
        help="with --format onnx: the file's batch size, fixed (default 1: phones' NNAPI and CoreML execution "
        "providers need fixed shapes) or dynamic (any batch, for servers)",
    )
    return p


def _report(q: dict) -> int:
    if "spec_checks" in q:
        failed = [k for k, ok in q["spec_checks"].items() if not ok]
        print(
            f"CoreML spec checks: {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}"
            + (f"; numeric check {q['numeric']}" if "numeric" in q else "")
        )
        if "top1_agreement" in q:  # macOS: CoreML's top-1 against PyTorch's (no logits to compare)
            print(
                f"CoreML on {q['images']} validation images: top-1 agreement {q['top1_agreement']:.2%}, "
                f"top-1 torch {q['torch_top1']:.2%} / exported {q['exported_top1']:.2%}"
            )
        if not q["passed"]:
            print(
                "skipnet-export: CoreML check FAILED (spec checks, and on macOS top-1 agreement >= "
                f"{INT8_MIN_AGREEMENT:.0%})",
                file=sys.stderr,
            )
        return 0 if q["passed"] else 1
    print(
        f"parity on {q['images']} validation images: max |logit diff| {q['max_abs_logit_diff']:.2e}, "
        f"top-1 agreement {q['top1_agreement']:.2%}, top-1 torch {q['torch_top1']:.2%} / "
        f"exported {q['exported_top1']:.2%}"
    )
    if "qat" in q:
        t = q["qat"]
        print(
            f"QAT: the file against the fake-quantised model it was trained as: top-1 agreement "
            f"{t['fake_quant_agreement']:.2%}, max logit diff {t['max_logit_diff_steps']:g} int8 steps; top-1 "
            f"fine-tuned float {t['float_top1']:.2%} / int8 file {t['int8_top1']:.2%}"
        )
    if not q["passed"]:
        print(f"skipnet-export: parity check FAILED ({q['criterion']})", file=sys.stderr)
        return 1
    return 0


def held_out_line(h: dict) -> str:
    """What QAT shipped, and why: the fine-tuned weights only when they beat the starting point."""
    if not h["images"]:
        return "QAT: too few training images to hold any out; the file keeps the PTQ weights"
    scores = (
        f"{h['start_top1']:.2%} -> {h['tuned_top1']:.2%} top-1 on {h['images']:,} held-out training images "
        f"({h['gained']} gained, {h['lost']} lost)"
    )
    if h["kept"]:
        return f"QAT: kept the fine-tuned weights: {scores}"
    return (
        f"QAT: kept the PTQ weights (calibrated ranges, as the PTQ file): fine-tuning did not do significantly "
        f"better, {scores}"
    )


def _main(argv: Sequence[str] | None) -> int:
    a = _parser().parse_args(argv)
    opts = ExportOptions(
        int8=a.int8,
        img_size=a.img_size,
        verify=not a.no_verify,
        verify_samples=a.verify_samples,
        calibration_samples=a.calibration_samples,
        data_dir=a.data_dir,
        batch=a.batch,
        qat_epochs=a.qat_epochs,
        qat_limit=a.qat_limit,
        qat_lr=a.qat_lr,
        full_integer=a.full_integer,
    )
    r = export(a.run_dir, a.format, a.out, opts)
    speed = speed_line(r.speed)
    print(f"wrote {r.path} and {r.sidecar} in {r.seconds:.1f} s" + (f"; {speed}" if speed else ""))
    if r.speed and "warning" in r.speed:
        print(f"skipnet-export: warning: {r.speed['warning']}", file=sys.stderr)
    if r.qat is not None:
        print(held_out_line(r.qat["holdout"]))
    return 0 if r.parity is None else _report(r.parity)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="skipnet-export")


if __name__ == "__main__":
    raise SystemExit(main())
