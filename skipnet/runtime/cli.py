"""`skipnet-predict MODEL IMAGE...`: top-5 labels per image, for any model `skipnet.load` takes."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..common import UserError
from ..common.cli import ArgumentParser, run_cli
from ..common.contract import check_output_file
from ..data import list_datasets
from . import load


def _predict(argv: Sequence[str] | None) -> int:
    p = ArgumentParser(prog="skipnet-predict", description="Classify images with a run directory or exported model.")
    p.add_argument("model", help="run directory, .onnx, .tflite or .mlpackage (macOS)")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top-k", type=int, default=5)
    a = p.parse_args(argv)
    if a.top_k < 1:
        p.error("--top-k must be positive")
    predictor = load(a.model)
    for path, pred in zip(a.images, predictor.predict(a.images, top_k=a.top_k)):
        print(path)
        for label, prob in zip(pred.labels, pred.probs):
            print(f"  {prob:7.2%}  {label}")
    return 0


def predict_main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_predict, argv, prog="skipnet-predict")


def _eval_parser() -> ArgumentParser:
    from .evaluate import SPLITS

    p = ArgumentParser(prog="skipnet-eval", description="Accuracy of a run directory or exported model, with CI gates.")
    p.add_argument("model", help="run directory, .onnx, .tflite or .mlpackage (macOS)")
    p.add_argument("--data", required=True, help=f"dataset: {', '.join(list_datasets())}")
    p.add_argument("--data-dir", help="where the dataset's files are (default: the installed copy)")
    p.add_argument("--split", default="test", choices=SPLITS, help="the held-out split (both names mean it)")
    p.add_argument("--limit", type=int, help="evaluate this many images, spread over the split (default: all)")
    p.add_argument(
        "--batch-size",
        type=int,
        help="images per batch (default 64; with --feature-variance the batch "
        "Bias Loss weights are normalised over: the run's training batch)",
    )
    p.add_argument("--threads", type=int, help="runtime threads (default: the runtime's own)")
    p.add_argument(
        "--runtime",
        help="run the model in another runtime: mediapipe (a .tflite through MediaPipe "
        "Tasks' ImageClassifier, as apps run it)",
    )
    p.add_argument(
        "--platform",
        choices=("host", "arm64"),
        default="host",
        help="where the model runs: host (this machine), or arm64 (a .tflite in LiteRT's aarch64 build, "
        "the phones' ARM kernels, under emulation: numerics, not speed; set up by `make arm64` or "
        "on first use)",
    )
    p.add_argument(
        "--compare-host",
        action="store_true",
        help="with --platform arm64: also run the model on this machine and report how often they agree",
    )
    p.add_argument("--json", help="write the report here (top-1 as a fraction 0..1)")
    p.add_argument("--plot", help="draw the confusion matrix to this .png")
    p.add_argument("--min-top1", type=float, help="gate: fail (exit 1) below this top-1, a fraction 0..1")
    p.add_argument("--reference", help="a second model run on the same images (e.g. the float run directory)")
    p.add_argument("--max-drop", type=float, help="gate: fail if top-1 is more than this many points below --reference")
    p.add_argument(
        "--feature-variance",
        action="store_true",
        help="instead of the accuracy report: top-1 by tenths of feature-map variance (lowest first) and "
        "how many images Bias Loss down-weights, for a run directory (docs/training.md)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check_outputs(a) -> None:
    """skipnet-eval's --json and --plot can be written, before any work."""
    for flag, path, suffix in (("--json", a.json, None), ("--plot", a.plot, ".png")):
        if path is not None:
            check_output_file(path, flag, suffix=suffix)


def _eval(argv: Sequence[str] | None) -> int:
    from ..common import write_json
    from .evaluate import check_gates, evaluate, gate_failures, plot_confusion

    p = _eval_parser()
    a = p.parse_args(argv)
    if a.feature_variance:
        return _feature_variance(a)
    check_gates(a.min_top1, a.max_drop, a.reference)  # before minutes of evaluation
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads must be positive, got {a.threads}; leave it out for the runtime's default")
    _check_outputs(a)
    r = evaluate(
        a.model,
        a.data,
        a.data_dir,
        a.split,
        a.limit,
        a.batch_size or 64,
        a.reference,
        a.min_top1,
        a.max_drop,
        a.threads,
        progress=not a.quiet,
        runtime=a.runtime,
        platform=a.platform,
        compare_host=a.compare_host,
    )
    _print_report(r)
    if a.json:
        write_json(a.json, r)
    if a.plot:
        plot_confusion(r, list(r["per_class_top1"]), a.plot)
    failures = gate_failures(r)
    for line in failures:
        print(f"skipnet-eval: gate failed: {line}", file=sys.stderr)
    return 1 if failures else 0


def _feature_variance(a) -> int:
    from ..common import write_json
    from ..common.contract import LOSS_NAMES
    from .feature_variance import feature_variance, plot_deciles

    for flag, value in (
        ("--reference", a.reference),
        ("--min-top1", a.min_top1),
        ("--max-drop", a.max_drop),
        ("--runtime", a.runtime),
        ("--compare-host", a.compare_host or None),
        ("--platform", None if a.platform == "host" else a.platform),
    ):
        if value is not None:
            raise UserError(
                f"--feature-variance reads a run directory's PyTorch model on this machine and gates "
                f"nothing: leave {flag} out, or run skipnet-eval without --feature-variance for it"
            )
    if a.limit is not None and a.limit < 1 or a.batch_size is not None and a.batch_size < 2:
        raise UserError("--limit must be positive and --batch-size at least 2 (a variance range needs two images)")
    _check_outputs(a)
    r = feature_variance(a.model, a.data, a.data_dir, a.limit, batch_size=a.batch_size, progress=not a.quiet)
    w = r["weights"]
    print(
        f"{r['model']} ({r['architecture']}, trained with {LOSS_NAMES[r['trained_with']]}) "
        f"on {r['dataset']} {r['split']}: "
        f"{r['images']} images, top-1 {100 * r['top1']:.2f}% (chance {100 * r['chance']:.1f}%)"
    )
    print("bin  images  feature variance      top-1   mean Bias Loss weight")
    for d in r["deciles"]:
        print(
            f"{d['bin']:>3}  {d['images']:>6}  {d['variance_min']:9.4g} .. {d['variance_max']:<9.4g} "
            f"{100 * d['top1']:6.2f}%  {d['mean_weight']:.3f}"
        )
    print(
        f"Bias Loss weight below 1 (down-weighted): {100 * w['below_one']:.1f}% of images (alpha {w['alpha']}, "
        f"beta {w['beta']}, {w['normalization']} normalisation over batches of {w['batch_size']})"
    )
    if a.json:
        write_json(a.json, r)
    if a.plot:
        title = f"{r['architecture']} on {r['images']} {r['dataset']} images"
        plot_deciles(
            {title: {f"trained with {LOSS_NAMES[r['trained_with']]}": [d["top1"] for d in r["deciles"]]}},
            a.plot,
            r["chance"],
        )
    return 0


def _print_report(r: dict) -> None:
    from .delegation import summary

    via = "" if r["runtime"] == "default" else f" via {r['runtime']}"
    print(
        f"{r['model']} ({r['format']}{via}, {r['precision']}) on {r['dataset']} {r['split']}: {r['images']} images "
        f"on {r['platform']}, {r['seconds']:.1f} s ({r['images_per_second']:.0f} img/s)"
    )
    if "delegation" in r:
        print(f"delegation: {summary(r['delegation'])}")
    print(f"top-1 {100 * r['top1']:.2f}%  top-5 {100 * r['top5']:.2f}%")
    print(
        "per-class top-1: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["per_class_top1"].items() if v is not None)
    )
    if "reference" in r:
        ref = r["reference"]
        print(
            f"reference {ref['model']} ({ref['format']}, {ref['precision']}): top-1 {100 * ref['top1']:.2f}%, "
            f"drop {ref['drop_points']:.2f} points, top-1 agreement {100 * ref['top1_agreement']:.2f}%"
        )
    if "host" in r:
        h = r["host"]
        print(
            f"{h['platform']}: top-1 {100 * h['top1']:.2f}%, top-1 agreement {100 * h['top1_agreement']:.2f}%, "
            f"largest logit difference {h['max_abs_logit_diff']:.4g}"
        )
    for g in r["gates"]:
        shown = f"{100 * g['value']:.2f}%" if g["gate"] == "min_top1" else f"{g['value']:.2f} points"
        print(f"gate {g['gate']} {g['threshold']}: {'pass' if g['passed'] else 'FAIL'} ({shown})")


def eval_main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_eval, argv, prog="skipnet-eval")


def _arm64(argv: Sequence[str] | None) -> int:
    from . import arm64

    p = ArgumentParser(prog="make arm64", description="Set up the emulated arm64 platform, or check it.")
    p.parse_args(argv)
    plat = arm64.Platform(arm64.home())
    todo = arm64.missing(plat)
    if todo:
        print(f"setting up in {plat.home}: {'; '.join(todo)}")
        arm64.setup(plat)
    print(f"{arm64.describe(plat)}: ready ({arm64.smoke_test(plat)})")
    return 0


def arm64_main(argv: Sequence[str] | None = None) -> int:
    """`make arm64`: set up whatever the emulated arm64 platform lacks, then check that it runs LiteRT."""
    return run_cli(_arm64, argv, prog="make arm64")
