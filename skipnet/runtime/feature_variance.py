"""Is Bias Loss's premise present in a run's data? Top-1 by the variance of each image's feature map.

    report = feature_variance("runs/xs", "fashion-mnist")
    [d["top1"] for d in report["deciles"]]       # lowest-variance tenth first
    report["weights"]["below_one"]               # share of images Bias Loss would down-weight

The paper's premise: an image whose last feature map varies little carries little information, and
the network's answer for it is close to a guess, so Bias Loss gives it a smaller weight. This runs
the run's PyTorch model over held-out images and, for each one, takes the feature map the loss
reads (the model's ``feature_layer``, through FeatureTap) and its variance as the loss computes it
(``sample_variance``). Images are ranked by that variance and cut into equal bins (deciles by
default), each with its top-1. The weights are the loss's own formula (``bias_weights``, which
BiasLoss computes with) with the run's alpha and beta, over batches of the run's training batch
size as the loss weighs a batch outside training: normalised by the batch's own minimum and range,
with no running minimum carried over, so the same for a run trained with either loss.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..common import UserError
from ..data import build_datasets, spread_indices
from ..models import is_run_dir, load_checkpoint
from ..models.features import FeatureTap, bias_weights, sample_variance

__all__ = ["feature_variance", "plot_deciles"]


def feature_variance(
    run_dir: str | os.PathLike,
    data: str,
    data_dir: str | None = None,
    limit: int | None = None,
    bins: int = 10,
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Top-1 of ``run_dir``'s model on ``data``'s held-out images, by bins of feature-map variance
    (lowest first), and the share of those images whose Bias Loss weight is below 1. ``batch_size``
    is the batch the weights are normalised over (default: the run's training batch size)."""
    _check_run_dir(run_dir)
    model, config = load_checkpoint(run_dir)
    batch_size = batch_size or int(config.get("train", {}).get("batch_size") or 128)
    _, val, info = build_datasets(data, data_dir, img_size=int(config["img_size"]), augment=False)
    if list(info.class_names) != list(config["class_names"]):
        raise UserError(
            f"dataset {data} has classes {info.class_names[:4]}... but {run_dir} was trained on "
            f"{config['class_names'][:4]}...: use the dataset the run was trained on"
        )
    idx = spread_indices(len(val), len(val) if limit is None else limit)
    if len(idx) < bins or bins < 2 or batch_size < 2:
        raise UserError(
            f"feature variance needs at least 2 bins, {bins} images or more and batches of 2 or "
            f"more (got {len(idx)} images, {bins} bins, batch size {batch_size}): raise --limit"
        )
    loss = config["loss"]
    v, z, correct = _measure(model, loss, val, idx, batch_size, progress, os.fspath(run_dir))
    return {
        "model": os.fspath(run_dir),
        "architecture": config["model"],
        "dataset": data,
        "split": "test",
        "images": len(idx),
        "trained_with": loss["name"],
        "top1": float(correct.mean()),
        "chance": 1.0 / len(info.class_names),
        "weights": {
            "alpha": float(loss["alpha"]),
            "beta": float(loss["beta"]),
            "normalization": loss["normalization"],
            "batch_size": batch_size,
            "below_one": float((z < 1).mean()),
            "mean": float(z.mean()),
            "min": float(z.min()),
            "max": float(z.max()),
        },
        "deciles": _bins(v, z, correct, bins),
    }


def _check_run_dir(run_dir: str | os.PathLike) -> None:
    path = Path(run_dir)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run directory written by skipnet-train")
    if not is_run_dir(path):
        raise UserError(
            f"{path} is a file, not a run directory: feature variance needs the run directory the model "
            "was exported from (its PyTorch model has the feature map; an exported file does not)"
        )


@torch.inference_mode()
def _measure(
    model, loss: dict[str, Any], val, idx: list[int], batch_size: int, progress: bool, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: feature-map variance, Bias Loss weight, and whether the top-1 answer is right."""
    # Batches of a fixed shuffle, as in training: a held-out split stored class by class (image folders)
    # would otherwise normalise the weights within one class at a time.
    idx = [idx[i] for i in np.random.default_rng(0).permutation(len(idx))]
    v, z, correct = [], [], []
    with (
        FeatureTap(model) as tap,
        tqdm(total=len(idx), desc=f"variance {name}", unit="img", disable=not progress) as bar,
    ):
        for start in range(0, len(idx), batch_size):
            x, y = zip(*(val[i] for i in idx[start : start + batch_size]))
            logits = model(torch.stack(x))
            var = sample_variance(tap.features)
            bmin, bmax = torch.aminmax(var)
            v.append(var)
            z.append(bias_weights(var, bmin, bmin, bmax, float(loss["alpha"]), float(loss["beta"])))
            correct.append(logits.argmax(1) == torch.as_tensor(y))
            bar.update(len(y))
    return (torch.cat(v).numpy(), torch.cat(z).numpy(), torch.cat(correct).numpy())


def _bins(v: np.ndarray, z: np.ndarray, correct: np.ndarray, bins: int) -> list[dict[str, Any]]:
    """Equal-sized bins of images by variance, lowest first (stable order, so ties split the same way)."""
    order = np.argsort(v, kind="stable")
    out = []
    for k, part in enumerate(np.array_split(order, bins), start=1):
        out.append(
            {
                "bin": k,
                "images": int(len(part)),
                "variance_min": float(v[part].min()),
                "variance_max": float(v[part].max()),
                "top1": float(correct[part].mean()),
                "mean_weight": float(z[part].mean()),
                "below_one": float((z[part] < 1).mean()),
            }
        )
    return out


def plot_deciles(
    panels: dict[str, dict[str, list[float]]], path: str | os.PathLike, chance: float | None = None
) -> None:
    """Top-1 (fractions) against variance bin: one panel per title, one line per label in it; a PNG,
    written atomically."""
    from ..common.plot import pyplot, save_png

    fig, axes = pyplot().subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for label, top1 in lines.items():
            ax.plot(range(1, len(top1) + 1), [100 * t for t in top1], marker="o", label=label)
        if chance is not None:
            ax.axhline(100 * chance, color="grey", linestyle=":", label="chance")
        ax.set_xticks(range(1, max(len(t) for t in lines.values()) + 1))
        ax.set_xlabel("feature-map variance bin (1 = lowest)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
