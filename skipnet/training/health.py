"""What keeps a short run honest: BatchNorm statistics that describe the weights they sit beside,
and one line when validation sits at chance while training does not.

After a few dozen optimiser steps, BatchNorm's running statistics (an exponential average with
momentum 0.1 over steps whose weights kept changing) do not describe the current weights, and an
eval-mode network can give every image the same output. Re-estimating them on some training
images with the weights fixed ("precise BN") fixes that at the cost of one forward pass over them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, Subset

# Validation this close to chance (fraction) while training is this far above it: warn.
CHANCE_MARGIN = 0.01
TRAINING_LEAD = 0.15


def bn_indices(train_indices: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` of the training images, drawn at random (image folders list their images class by
    class, so the first n would be one class)."""
    if n <= 0:
        return []
    g = torch.Generator().manual_seed(seed + 104729)
    picked = torch.randperm(len(train_indices), generator=g)[:n].tolist()
    return sorted(train_indices[i] for i in picked)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def reestimate_bn(
    model: nn.Module, dataset, indices: Sequence[int], batch_size: int, device: torch.device, workers: int = 0
) -> int:
    """Replace ``model``'s BatchNorm running statistics by their average over ``dataset[indices]``
    (eval-time preprocessing), computed with the current weights; returns how many images.

    torch.optim.swa_utils.update_bn does the work. Every process of a DDP run passes the same
    images and weights, so all get the same statistics. Dropout draws random numbers in the
    train-mode pass: the RNG is forked so training continues exactly as without it.
    """
    if not indices or not has_batchnorm(model):
        return 0
    loader = DataLoader(
        Subset(dataset, list(indices)),
        batch_sampler=batches_without_a_single(len(indices), batch_size),
        num_workers=workers,
    )
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        update_bn(loader, model, device)
    return len(indices)


def batches_without_a_single(n: int, batch_size: int) -> list[list[int]]:
    """``range(n)`` in batches of ``batch_size``, a last batch of one image merged into the one before:
    at small inputs the last feature maps are 1x1, and BatchNorm in training mode cannot normalise a
    single value per channel (every image still counts, as statistics over all of them should)."""
    batches = [list(range(lo, min(lo + batch_size, n))) for lo in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] += last
    return batches


@torch.no_grad()
def smallest_batchnorm_map(model: nn.Module, img_size: int) -> int | None:
    """How many values per channel and image the BatchNorm layer with the smallest input gets at
    ``img_size`` (1: a 1x1 map, or a BatchNorm1d); None without BatchNorm. Found by one eval-mode
    pass over a blank image, so it holds for any architecture."""
    sizes: list[int] = []
    hooks = [
        m.register_forward_pre_hook(lambda _, args: sizes.append(args[0][0, 0].numel()))
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    if not hooks:
        return None
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    param = next(model.parameters())
    x = torch.zeros(
        1, conv.in_channels if conv is not None else 3, img_size, img_size, device=param.device, dtype=param.dtype
    )
    was_training = model.training
    try:
        model.eval()(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return min(sizes) if sizes else None


def chance_warning(val_top1: float, train_top1: float, num_classes: int, steps: int) -> str | None:
    """One line when validation top-1 is within a point of chance while training top-1 is far above it."""
    chance = 1.0 / num_classes
    if val_top1 > chance + CHANCE_MARGIN or train_top1 < chance + TRAINING_LEAD:
        return None
    return (
        f"warning: validation top-1 {val_top1:.1%} is chance level ({chance:.1%}) while training top-1 is "
        f"{train_top1:.1%}: after {steps} optimiser steps the model does not yet predict from its input in "
        "eval mode; train for more steps (more --epochs, or a smaller --batch-size)"
    )
