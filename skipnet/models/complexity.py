"""Parameter and MAC counts. MACs come from PyTorch's own flop counter (conv and matmul only), halved."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, img_size: int = 224, in_chans: int = 3) -> int:
    """Multiply-accumulates of one forward pass at batch 1.

    FlopCounterMode counts 2 flops per MAC for convolutions (output elements x in/groups x k*k)
    and linear layers; element-wise ops are not counted - the convention of docs/paper.md.
    """
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        x = torch.zeros(1, in_chans, img_size, img_size, dtype=p.dtype, device=p.device)
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
