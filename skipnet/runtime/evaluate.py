"""Accuracy of any model skipnet.load takes, on a dataset's held-out images, with CI gates.

    report = evaluate("exports/s_int8.tflite", "fashion-mnist", reference="runs/s")
    report["top1"], report["reference"]["drop_points"]

Both models of a reference comparison see exactly the same images, prepared once by the
model's own preprocessing (the reference must take the same input, which the check enforces).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..common import UserError
from ..data import build_datasets, spread_indices
from . import load
from .predictor import Predictor

SPLITS = ("test", "val")


def check_gates(min_top1: float | None, max_drop: float | None, reference: str | None) -> None:
    if min_top1 is not None and not 0.0 <= min_top1 <= 1.0:
        raise UserError(f"--min-top1 {min_top1} is out of range: give top-1 as a fraction 0..1 (e.g. 0.9)")
    if max_drop is not None and not 0.0 <= max_drop <= 100.0:
        raise UserError(f"--max-drop {max_drop} is out of range: give the allowed drop in points, 0..100 (e.g. 0.5)")
    if max_drop is not None and reference is None:
        raise UserError("--max-drop compares against a reference model: add --reference MODEL")


def _same_task(model: Predictor, other: Predictor, what: str) -> None:
    if model.labels != other.labels:
        raise UserError(
            f"{what} has classes {other.labels[:4]}... but the model has {model.labels[:4]}...: "
            "compare models trained for the same task"
        )
    for key in ("img_size", "crop", "grayscale_to_rgb"):
        if model.preprocess.get(key) != other.preprocess.get(key):
            raise UserError(
                f"{what} takes a different input ({key} {other.preprocess.get(key)} vs "
                f"{model.preprocess.get(key)}): export both at the same --img-size"
            )


def _reference_report(ref: Predictor, name: str, ref_logits, logits, labels, top1: float) -> dict[str, Any]:
    """The --reference model on the same images: its accuracy, the drop from it to the evaluated
    model's ``top1`` and how often their predictions agree."""
    acc = _accuracy(ref_logits, labels, ref.labels)
    return {
        "model": name,
        "format": ref.format,
        "precision": ref.precision,
        "top1": acc["top1"],
        "top5": acc["top5"],
        "drop_points": round(100 * (acc["top1"] - top1), 4),
        "top1_agreement": _agreement(ref_logits, logits),
    }


def _host_report(host: Predictor, host_logits, logits, labels, seconds: float) -> dict[str, Any]:
    """The same model on this machine (--compare-host): its top-1 and how closely it matches."""
    return {
        "platform": platform_name(host),
        "top1": _accuracy(host_logits, labels, host.labels)["top1"],
        "top1_agreement": _agreement(host_logits, logits),
        "max_abs_logit_diff": float(np.abs(host_logits - logits).max()),
        "seconds": round(seconds, 2),
        "delegation": getattr(host.backend, "delegation", None),
    }


def evaluate(
    model: str | os.PathLike,
    data: str,
    data_dir: str | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 64,
    reference: str | os.PathLike | None = None,
    min_top1: float | None = None,
    max_drop: float | None = None,
    threads: int | None = None,
    progress: bool = True,
    runtime: str | None = None,
    platform: str | None = None,
    compare_host: bool = False,
) -> dict[str, Any]:
    """Top-1/top-5, per-class accuracy and the confusion matrix of ``model`` on ``data``'s held-out
    split ("test" and "val" both name it: the official test set for Fashion-MNIST and CIFAR,
    val/ for imagefolder), plus the reference comparison and gate results when asked.
    ``runtime`` runs ``model`` in another runtime, ``platform`` on another machine (see
    skipnet.load; the reference runs on this one); ``compare_host`` also runs ``model`` on this
    machine and reports how often the two agree."""
    _check_settings(split, limit, batch_size, threads, min_top1, max_drop, reference, platform, compare_host)
    predictor = load(model, threads=threads, runtime=runtime, platform=platform)
    ref = load(reference, threads=threads) if reference is not None else None
    host = load(model, threads=threads) if compare_host else None
    _, val, info = build_datasets(data, data_dir, augment=False)
    if info.class_names != predictor.labels:
        raise UserError(
            f"dataset {data} has classes {info.class_names[:4]}... but {model} was trained on "
            f"{predictor.labels[:4]}...: evaluate on the dataset the model was trained for"
        )
    if ref is not None:
        _same_task(predictor, ref, f"--reference {reference}")

    source = val.source
    idx = spread_indices(len(source), len(source) if limit is None else limit)
    labels = np.asarray([int(source[i][1]) for i in idx])
    logits, seconds = _run(predictor, [ref, host], source, idx, batch_size, progress, os.fspath(model))
    n = len(idx)
    report = {
        "model": os.fspath(model),
        "architecture": predictor.config.get("model"),
        "format": predictor.format,
        "runtime": runtime or "default",
        "platform": platform_name(predictor),
        "precision": predictor.precision,
        "dataset": data,
        "split": split,
        "images": n,
        **_accuracy(logits[0], labels, predictor.labels),
        "seconds": round(seconds[0], 2),
        "images_per_second": round(n / seconds[0], 1),
        "skipnet_version": __version__,
    }
    census = getattr(predictor.backend, "delegation", None)  # computed on access for the host's LiteRT
    if census is not None:
        report["delegation"] = census
    if ref is not None:
        report["reference"] = _reference_report(ref, os.fspath(reference), logits[1], logits[0], labels, report["top1"])
    if host is not None:
        report["host"] = _host_report(host, logits[2], logits[0], labels, seconds[2])
    report["gates"] = _gates(report, min_top1, max_drop)
    report["passed"] = all(g["passed"] for g in report["gates"])
    return report


def _check_settings(split, limit, batch_size, threads, min_top1, max_drop, reference, platform, compare_host) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit} evaluates nothing: give a positive number of images or leave it out")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} must be positive")
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads} must be positive; leave it out for the runtime's default")
    if compare_host and platform in (None, "host"):
        raise UserError("--compare-host compares another platform with this machine: add --platform arm64")
    check_gates(min_top1, max_drop, None if reference is None else str(reference))


def _run(
    predictor: Predictor, others: list[Predictor | None], source, idx, batch_size: int, progress: bool, name: str
) -> tuple[list[np.ndarray | None], list[float]]:
    """Every model's logits on the same prepared batches, and the seconds each spent on them."""
    models = [predictor, *others]
    logits: list[list[np.ndarray]] = [[] for _ in models]
    seconds = [0.0] * len(models)
    with tqdm(total=len(idx), desc=f"eval {name}", unit="img", disable=not progress) as bar:
        for start in range(0, len(idx), batch_size):
            pixels = predictor.prepare([source[i][0] for i in idx[start : start + batch_size]])
            for k, m in enumerate(models):
                if m is not None:
                    t0 = time.perf_counter()
                    logits[k].append(m.logits(pixels))
                    seconds[k] += time.perf_counter() - t0
            bar.update(len(pixels))
    return [np.concatenate(chunks) if chunks else None for chunks in logits], seconds


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def platform_name(predictor: Predictor) -> str:
    """Where a model ran: "arm64 (emulated)", or this machine's CPU."""
    from .timing import cpu_name

    if getattr(predictor.backend, "platform", "host") == "arm64":
        from .arm64 import NAME

        return NAME
    return f"host ({cpu_name()})"


def _accuracy(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, Any]:
    k = min(5, logits.shape[1])
    topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]  # int8 logits tie: lowest index first, as argmax
    pred = topk[:, 0]
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {
        name: (float(confusion[c, c] / confusion[c].sum()) if confusion[c].sum() else None)
        for c, name in enumerate(names)
    }
    return {
        "top1": float((pred == labels).mean()),
        "top5": float((topk == labels[:, None]).any(1).mean()),
        "per_class_top1": per_class,
        "confusion": confusion.tolist(),
    }


def _gates(report: dict[str, Any], min_top1: float | None, max_drop: float | None) -> list[dict[str, Any]]:
    gates = []
    if min_top1 is not None:
        gates.append(
            {"gate": "min_top1", "threshold": min_top1, "value": report["top1"], "passed": report["top1"] >= min_top1}
        )
    if max_drop is not None:
        drop = report["reference"]["drop_points"]
        gates.append({"gate": "max_drop", "threshold": max_drop, "value": drop, "passed": drop <= max_drop})
    return gates


def gate_failures(report: dict[str, Any]) -> list[str]:
    """One sentence per failed gate, saying by how much."""
    out = []
    for g in report["gates"]:
        if g["passed"]:
            continue
        if g["gate"] == "min_top1":
            out.append(
                f"top-1 {100 * g['value']:.2f}% is below --min-top1 {100 * g['threshold']:.2f}% "
                f"by {100 * (g['threshold'] - g['value']):.2f} points"
            )
        else:
            out.append(
                f"top-1 dropped {g['value']:.2f} points against the reference, more than --max-drop "
                f"{g['threshold']:.2f} by {g['value'] - g['threshold']:.2f} points"
            )
    return out


def plot_confusion(report: dict[str, Any], names: list[str], path: str | os.PathLike) -> None:
    from ..common.plot import pyplot, save_png

    plt = pyplot()
    cm = np.asarray(report["confusion"], dtype=float)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(names), 1.0 + 0.6 * len(names)))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{os.path.basename(report['model'])}: top-1 {100 * report['top1']:.2f}% on {report['images']} "
        f"{report['dataset']} images",
        fontsize=9,
    )
    if len(names) <= 20:
        for i in range(len(names)):
            for j in range(len(names)):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if rows[i, j] > 0.5 else "black",
                    )
    fig.tight_layout()
    save_png(fig, path)
