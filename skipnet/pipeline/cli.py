"""`skipnet-pipeline`: parse flags, resolve the settings, call `run_pipeline`, print the summary."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..common.cli import ArgumentParser, run_cli
from ..data import list_datasets
from .config import DEFAULTS, load_config
from .run import Interrupted, run_pipeline


def build_parser():
    p = ArgumentParser(
        prog="skipnet-pipeline",
        description="Train SkipNet and its baselines the same way, export (int8 TFLite, ONNX, CoreML), gate the "
        "int8 accuracy, benchmark, and write OUT/report.md. Without --config: the Fashion-MNIST demo. "
        "Run it again to resume an interrupted pipeline.",
    )
    a = p.add_argument
    a("--config", help="YAML settings (keys: out, data, data-dir, models, train, export, gate, bench)")
    a("--out", help="pipeline directory (default runs/demo; runs/demo-full with --full)")
    a("--data", help=f"dataset: {', '.join(list_datasets())} (default {DEFAULTS['data']})")
    a("--data-dir", help="dataset directory (imagefolder: holds train/ and val/ class folders)")
    a("--models", help="comma-separated; the first is the model to ship (default skipnet_s,mobilenet_v3_large)")
    a("--full", action="store_true", help="the full training recipe on every training image (hours on a CPU)")
    a("--overwrite", action="store_true", help="delete OUT's earlier pipeline run and start over")
    a("--quiet", action="store_true", help="no progress bars")
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(
        args.config, full=args.full, out=args.out, data=args.data, data_dir=args.data_dir, models=args.models
    )
    try:
        command = " ".join(["skipnet-pipeline", *(sys.argv[1:] if argv is None else argv)])
        report = run_pipeline(cfg, overwrite=args.overwrite, progress=not args.quiet, command=command)
    except Interrupted as e:
        print(f"skipnet-pipeline: interrupted; run the same command again to resume from {cfg['out']}", file=sys.stderr)
        return e.exit_code
    print(f"\nreport: {cfg['out']}/report.md")
    for line in report["summary"]:
        print(f"  {line}")
    return 0 if report["passed"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="skipnet-pipeline")


if __name__ == "__main__":
    sys.exit(main())
