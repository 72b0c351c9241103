"""`skipnet-train`: parse flags, resolve the configuration, call `train`.

Also `python -m skipnet.training` (the form torchrun needs).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..common import CheckFailed, UserError
from ..common.cli import ArgumentParser, run_cli, signal_exit_code
from .config import TrainConfig, load_yaml_config, resolve_config, setting_range, setting_type
from .loop import TrainResult, resume, train


def _add_setting(p, name: str) -> None:
    """One flag from a TrainConfig field: its type, choices, help text and range."""
    field = TrainConfig.model_fields[name]
    kind, choices = setting_type(name)
    limits = setting_range(name)
    kw: dict = {"help": (field.description + (f"; {limits}" if limits else "")).replace("%", "%%")}
    if kind is bool and field.default:  # on by default: --no-X turns it off
        kw["action"] = argparse.BooleanOptionalAction
    elif kind is bool:  # off by default: the flag turns it on
        kw.update(action="store_const", const=True)
    elif choices:
        kw["choices"] = choices
    elif kind in (int, float):
        kw["type"] = kind
    if "metavar" in (field.json_schema_extra or {}):
        kw["metavar"] = field.json_schema_extra["metavar"]
    p.add_argument("--" + name.replace("_", "-"), **kw)


def build_parser():
    p = ArgumentParser(
        prog="skipnet-train",
        description="Train a SkipNet (or baseline) with Bias Loss and write a run directory. "
        "Unset flags come from --config, then the dataset's recipe.",
    )
    for name in TrainConfig.model_fields:  # unset flags stay None: "not given", so --config and the recipe apply
        _add_setting(p, name)
    a = p.add_argument
    a("--config", help="YAML file with the same keys as these flags")
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


def _summary(result: TrainResult) -> str:
    m, n = result.metrics, len(result.history)
    if result.finished:
        top1 = f", val top-1 {m['val_top1']:.4f}" if m else ""
        return (
            f"nothing to train: the run saved to {result.out} is finished ({n} of {n} epochs{top1}); "
            f"to train longer: skipnet-train --out {result.out} --resume --epochs M (M > {n})"
        )
    if m:
        return f"run saved to {result.out} (val top-1 {m['val_top1']:.4f}, val loss {m['val_loss']:.4f})"
    return f"run saved to {result.out}"


def _main(argv: Sequence[str] | None) -> int:
    try:
        result = _run(vars(build_parser().parse_args(argv)))
    except CheckFailed:
        if os.environ.get("RANK", "0") != "0":
            return 1  # under torchrun rank 0 says why: one line, not one per process
        raise
    if result.interrupted:
        return signal_exit_code(result.signal)
    if result.is_main:
        print(_summary(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, prog="skipnet-train")


if __name__ == "__main__":
    sys.exit(main())
