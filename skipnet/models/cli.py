"""`skipnet-models`: list the registered models with parameters and MACs."""

from __future__ import annotations

from collections.abc import Sequence

from ..common.cli import ArgumentParser, run_cli
from . import count_macs, count_params, create_model, list_models


def _main(argv: Sequence[str] | None) -> int:
    p = ArgumentParser(prog="skipnet-models", description="List models with parameter and MAC counts.")
    p.add_argument("--img-size", type=int, default=224, help="input side for the MAC count (default 224)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--models", default=None, help="comma-separated subset (default: all)")
    args = p.parse_args(argv)
    names = args.models.split(",") if args.models else list_models()
    print(
        f"{'model':<20} {'params':>12} {'MACs (M)':>10}   @ {args.img_size}x{args.img_size}, {args.num_classes} classes"
    )
    for name in names:
        m = create_model(name, args.num_classes)
        print(f"{name:<20} {count_params(m):>12,} {count_macs(m, args.img_size) / 1e6:>10.1f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="skipnet-models")


if __name__ == "__main__":
    raise SystemExit(main())
