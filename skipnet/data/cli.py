"""skipnet-data: inspect a dataset (class names and split sizes), or check an image folder's files."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from skipnet.common.cli import ArgumentParser, run_cli

from .build import build_datasets
from .imagefolder import check_images
from .info import list_datasets


def _main(argv: Sequence[str] | None) -> int:
    parser = ArgumentParser(prog="skipnet-data", description="Inspect the datasets SkipNet trains on.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print class names and train/val counts")
    info.add_argument("name", help=f"dataset: {', '.join(list_datasets())}")
    info.add_argument("--data-dir", help="folder holding the dataset (imagefolder: train/ and val/)")
    info.add_argument("--download", action="store_true", help="download CIFAR if it is not in --data-dir")
    check = sub.add_parser(
        "check", help="open and verify every image of an image folder dataset (exit 2 naming the first bad file)"
    )
    check.add_argument("dir", help="folder holding train/<class>/ and val/<class>/ image files")
    args = parser.parse_args(argv)
    return _check(args) if args.command == "check" else _info(args)


def _info(args: argparse.Namespace) -> int:
    train, val, ds = build_datasets(args.name, data_dir=args.data_dir, download=args.download)
    print(f"dataset: {ds.name}")
    print(f"train: {len(train)} images")
    print(f"val: {len(val)} images")
    print(f"classes ({ds.num_classes}):")
    for i, name in enumerate(ds.class_names):
        print(f"  {i:3d} {name}")
    return 0


def _check(args: argparse.Namespace) -> int:
    scan = check_images(args.dir)
    for split, n in scan.images.items():
        print(f"{split}: {n} images checked")
    print(f"classes ({len(scan.classes)}): {', '.join(scan.classes)}")
    print(f"ok: all {sum(scan.images.values())} images in {scan.root} are readable")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="skipnet-data")
