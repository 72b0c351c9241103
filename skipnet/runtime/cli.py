"""`skipnet-predict MODEL IMAGE...`: top-5 labels per image, for any model `skipnet.load` takes."""
from __future__ import annotations

from typing import Sequence

from ..common.cli import ArgumentParser, run_cli
from . import load


def _predict(argv: Sequence[str] | None) -> int:
    p = ArgumentParser(prog="skipnet-predict", description="Classify images with a run directory or exported model.")
    p.add_argument("model", help="run directory, .onnx file")
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
