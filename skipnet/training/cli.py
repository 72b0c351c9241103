"""`skipnet-train`: parse flags, resolve the configuration, call `train`. Also `python -m skipnet.training` (torchrun)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ..common import CheckFailed, UserError
from ..common.cli import ArgumentParser, run_cli, signal_exit_code
from .config import LOSSES, NORMALIZATIONS, OPTIMIZERS, RECIPES, SCHEDULERS, load_yaml_config, resolve_config
from .loop import TrainResult, resume, train


def _milestones(text: str) -> list[int]:
    try:
        return [int(m) for m in text.split(",") if m.strip()]
    except ValueError:
        raise UserError(f"--milestones must be comma-separated epochs, e.g. 80,122; got {text!r}") from None


def build_parser():
    p = ArgumentParser(
        prog="skipnet-train",
        description="Train a SkipNet (or baseline) with Bias Loss and write a run directory. "
                    "Unset flags come from --config, then the dataset's recipe.",
    )
    a = p.add_argument
    a("--model", help="model name (skipnet-models lists them); recipe default")
    a("--data", help="fashion-mnist (default), cifar10, cifar100 or imagefolder")
    a("--data-dir", help="dataset directory (imagefolder: holds train/ and val/)")
    a("--download", action="store_const", const=True, help="download CIFAR if missing")
    a("--out", help="run directory to write (required)")
    a("--config", help="YAML file with the same keys as these flags")
    a("--recipe", choices=tuple(RECIPES), help="settings to start from: fast (Fashion-MNIST default, minutes), "
                                              "full (10x longer), paper (the paper's CIFAR recipe, CIFAR default), "
                                              "finetune (imagefolder default)")
    a("--weights", help="start from these weights: a run directory, .safetensors, or a state_dict .pth "
                        "(e.g. the authors' skipblocknet-m.pth)")
    a("--reset-head", action="store_const", const=True,
      help="with --weights: re-initialise the final classifier (fine-tune on other classes)")
    a("--loss", choices=LOSSES, help="bias (Bias Loss, default) or ce (cross-entropy)")
    a("--alpha", type=float, help="Bias Loss alpha (0.3)")
    a("--beta", type=float, help="Bias Loss beta (0.3)")
    a("--normalization", choices=NORMALIZATIONS, help="Bias Loss variance normalisation (global)")
    a("--label-smoothing", type=float)
    a("--epochs", type=int)
    a("--batch-size", type=int, help="global batch size (split across torchrun processes)")
    a("--optimizer", choices=OPTIMIZERS)
    a("--lr", type=float, help="peak learning rate")
    a("--momentum", type=float)
    a("--weight-decay", type=float)
    a("--scheduler", choices=SCHEDULERS)
    a("--milestones", type=_milestones, help="epochs at which multistep decays the lr, e.g. 80,122")
    a("--gamma", type=float, help="multistep decay factor")
    a("--warmup-epochs", type=float)
    a("--img-size", type=int, help="input side (multiple of 32 for SkipNet)")
    a("--limit-train", type=int, metavar="N", help="train on N images only (quick runs)")
    a("--limit-val", type=int, metavar="N", help="validate on the first N images only")
    a("--workers", type=int, help="DataLoader worker processes")
    a("--seed", type=int)
    a("--deterministic", action="store_const", const=True, help="deterministic kernels (bit-identical resume on CPU)")
    a("--save-every", type=int, metavar="STEPS", help="checkpoint every STEPS steps (0: epoch ends only)")
    a("--ema", action="store_const", const=True, help="keep an EMA of the weights; model.safetensors holds it")
    a("--ema-decay", type=float)
    a("--amp", action="store_const", const=True, help="mixed precision (bf16 on CPU, fp16 on GPU)")
    a("--channels-last", action=argparse.BooleanOptionalAction, help="NHWC memory format (default on: ~3x faster on CPU)")
    a("--device", choices=("auto", "cpu", "cuda"))
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    a("--overwrite", action="store_true", help="start over even if --out already holds a run")
    a("--quiet", action="store_true", help="no progress bar")
    return p


def _run(args: dict) -> TrainResult:
    is_resume, overwrite, quiet, config_file = (args.pop(k) for k in ("resume", "overwrite", "quiet", "config"))
    if is_resume:
        if not args["out"]:
            raise UserError("--resume needs --out DIR, the run directory to continue")
        explicit = load_yaml_config(config_file) if config_file else {}
        explicit.update({k: v for k, v in args.items() if v is not None})
        return resume(explicit.pop("out"), progress=not quiet, **explicit)
    return train(resolve_config(args, config_file).validate(), progress=not quiet, overwrite=overwrite)


def _main(argv: Sequence[str] | None) -> int:
    try:
        result = _run(vars(build_parser().parse_args(argv)))
    except CheckFailed:
        if os.environ.get("RANK", "0") != "0":
            return 1  # under torchrun rank 0 says why: one line, not one per process
        raise
    if result.interrupted:
        return signal_exit_code(result.signal)
    m = result.metrics
    if not result.is_main:
        return 0
    if m:
        print(f"run saved to {result.out} (val top-1 {m['val_top1']:.4f}, val loss {m['val_loss']:.4f})")
    else:
        print(f"run saved to {result.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="skipnet-train")


if __name__ == "__main__":
    sys.exit(main())
