"""skipnet-data: inspect a dataset (class names and split sizes)."""
from __future__ import annotations

from typing import Sequence

from skipnet.common.cli import ArgumentParser, run_cli

from .build import build_datasets
from .info import list_datasets


def _main(argv: Sequence[str] | None) -> int:
    parser = ArgumentParser(prog="skipnet-data", description="Inspect the datasets SkipNet trains on.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print class names and train/val counts")
    info.add_argument("name", help=f"dataset: {', '.join(list_datasets())}")
    info.add_argument("--data-dir", help="folder holding the dataset (imagefolder: train/ and val/)")
    info.add_argument("--download", action="store_true", help="download CIFAR if it is not in --data-dir")
    args = parser.parse_args(argv)

    train, val, ds = build_datasets(args.name, data_dir=args.data_dir, download=args.download)
    print(f"dataset: {ds.name}")
    print(f"train: {len(train)} images")
    print(f"val: {len(val)} images")
    print(f"classes ({ds.num_classes}):")
    for i, name in enumerate(ds.class_names):
        print(f"  {i:3d} {name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="skipnet-data")
