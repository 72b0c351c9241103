"""`skipnet-export RUN_DIR --format onnx [--out PATH]`: parse flags, call `export`, report parity."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..common.cli import ArgumentParser, run_cli
from . import FORMATS, export
from .parity import INT8_MIN_AGREEMENT


def _main(argv: Sequence[str] | None) -> int:
    p = ArgumentParser(prog="skipnet-export", description="Export a trained run to a mobile format, "
                                                         "then check it predicts what PyTorch predicted.")
    p.add_argument("run_dir", help="run directory written by skipnet-train")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--int8", action="store_true", help="full-integer int8 quantisation")
    p.add_argument("--out", help="output file (default exports/RUN.EXT)")
    p.add_argument("--img-size", type=int, help="input side (default: the training size)")
    p.add_argument("--data-dir", help="dataset directory for the parity images (default: the run's)")
    p.add_argument("--verify-samples", type=int, default=256, help="validation images for the parity check")
    p.add_argument("--calibration-samples", type=int, default=256, help="training images to calibrate int8 with")
    p.add_argument("--qat-epochs", type=int, default=0,
                   help="quantisation-aware fine-tuning epochs with the run's loss before int8 conversion")
    p.add_argument("--qat-limit", type=int, help="training images per QAT epoch (default: all)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check")
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True)
    a = p.parse_args(argv)
    if a.verify_samples < 1 or a.calibration_samples < 1:
        p.error("--verify-samples and --calibration-samples must be positive")
    r = export(a.run_dir, a.format, a.out, a.int8, a.img_size, not a.no_verify, a.verify_samples, a.data_dir,
               a.dynamic_batch, a.calibration_samples, a.qat_epochs, a.qat_limit)
    print(f"wrote {r.path} and {r.sidecar} in {r.seconds:.1f} s")
    if r.parity is None:
        return 0
    q = r.parity
    if "spec_checks" in q:
        failed = [k for k, ok in q["spec_checks"].items() if not ok]
        print(f"CoreML spec checks: {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}"
              + (f"; numeric check {q['numeric']}" if "numeric" in q else ""))
        if "top1_agreement" in q:  # macOS: CoreML's top-1 against PyTorch's (no logits to compare)
            print(f"CoreML on {q['images']} validation images: top-1 agreement {q['top1_agreement']:.2%}, "
                  f"top-1 torch {q['torch_top1']:.2%} / exported {q['exported_top1']:.2%}")
        if not q["passed"]:
            print("skipnet-export: CoreML check FAILED (spec checks, and on macOS top-1 agreement >= "
                  f"{INT8_MIN_AGREEMENT:.0%})", file=sys.stderr)
        return 0 if q["passed"] else 1
    print(f"parity on {q['images']} validation images: max |logit diff| {q['max_abs_logit_diff']:.2e}, "
          f"top-1 agreement {q['top1_agreement']:.2%}, top-1 torch {q['torch_top1']:.2%} / "
          f"exported {q['exported_top1']:.2%}")
    if not q["passed"]:
        print(f"skipnet-export: parity check FAILED ({q['criterion']})", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="skipnet-export")


if __name__ == "__main__":
    raise SystemExit(main())
