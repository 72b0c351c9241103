"""Quantisation-aware fine-tuning (PT2E) before int8 TFLite conversion.

The weights are fine-tuned through PT2E fake quantisation (int8 per-channel weights, int8
per-tensor activations, the scheme the int8 TFLite graph uses) with the run's own loss; the
fine-tuned float model then goes through the same fast int8 graph and calibration as post-
training quantisation (tflite_graph.py), so QAT and PTQ files have the same ops and speed.

torchao 0.18's QAT preparation hands plain functions to torch.export, which torch 2.14 refuses
("Expected mod to be an instance of torch.nn.Module"); `_pattern_modules` wraps them in a
Module for the duration of the preparation only.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import torch
from torch import nn
from tqdm import tqdm

from ..common import UserError
from ..data import build_datasets, build_transform, pixel_batch
from ..models import PixelModel


class _Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


@contextlib.contextmanager
def _pattern_modules() -> Iterator[None]:
    import litert_torch.quantize.pt2e_quantizer_utils as litert_utils
    import torchao.quantization.pt2e.utils as ao_utils

    original = ao_utils._get_aten_graph_module_for_pattern

    def wrapped(pattern, example_inputs, is_cuda=False, **kwargs):
        return original(pattern if isinstance(pattern, nn.Module) else _Call(pattern), example_inputs, is_cuda,
                        **kwargs)

    patched = [(m, getattr(m, "_get_aten_graph_module_for_pattern")) for m in (ao_utils, litert_utils)]
    try:
        for module, _ in patched:
            module._get_aten_graph_module_for_pattern = wrapped
        yield
    finally:
        for module, fn in patched:
            module._get_aten_graph_module_for_pattern = fn


class _LogitsAndFeatures(nn.Module):
    """Raw NHWC pixels -> (logits, Bias Loss features): the exported QAT graph keeps both for the loss."""

    def __init__(self, pixel_model: PixelModel):
        super().__init__()
        self.pixel_model = pixel_model

    def forward(self, pixels: torch.Tensor):
        model = self.pixel_model.model
        features = model.forward_features(self.pixel_model.normalize(pixels))
        return model.forward_head(features), features


def qat_finetune(model: nn.Module, config: dict[str, Any], img_size: int, epochs: int, data_dir: str | None,
                 limit: int | None = None, batch_size: int = 64, lr: float = 1e-3, progress: bool = True) -> nn.Module:
    """A copy of ``model`` fine-tuned with fake quantisation for ``epochs`` on the run's training
    data and loss (``limit`` images per epoch), in eval mode; ``model`` itself is untouched."""
    from .tflite_export import _import_litert_torch

    try:
        _import_litert_torch()  # quietly: its native start-up lines are not the user's business
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    except ImportError:
        raise UserError("--qat-epochs needs litert-torch and torchao: pip install 'skipnet-deploy[tflite]'") from None
    # The run's own loss: the training stage comes before export, so this import keeps the one-way flow.
    from ..training import BiasLoss, build_loss

    train, _, _ = build_datasets(config["dataset"], data_dir or config.get("train", {}).get("data_dir"), img_size)
    augment = build_transform(config["preprocess"], train=True, dataset=config["dataset"], normalize=False)
    n = min(limit or len(train.source), len(train.source))
    criterion = build_loss(config["loss"])

    # A copy: the exported graph shares its parameters (so training it trains `tuned`), and the run's
    # own model must stay as trained (the parity check compares the int8 result against it).
    tuned = copy.deepcopy(model)
    net = _LogitsAndFeatures(PixelModel(tuned, config["mean"], config["std"], "nhwc")).train()
    example = torch.rand(batch_size, img_size, img_size, 3) * 255
    # Traced at the training batch; the batch dimension stays dynamic (a fixed one fails guards).
    graph = torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)).module()
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))
    with _pattern_modules():
        prepared = prepare_qat_pt2e(graph, quantizer)
    optimizer = torch.optim.SGD(prepared.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        order = torch.randperm(len(train.source), generator=g)[:n].tolist()
        steps = range(0, n - batch_size + 1, batch_size)
        for start in tqdm(steps, desc=f"QAT epoch {epoch + 1}/{epochs}", disable=not progress):
            idx = order[start:start + batch_size]
            x = torch.from_numpy(pixel_batch(augment, [train.source[i][0] for i in idx])).float()
            y = torch.tensor([int(train.source[i][1]) for i in idx])
            logits, features = prepared(x)
            bias = isinstance(criterion, BiasLoss)
            loss = criterion(logits, y, features=features) if bias else criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    # torch.export's module shares the model's tensors, so `tuned` now holds the fine-tuned weights
    # and BatchNorm statistics; check it rather than trust it.
    shared = {k: v.data_ptr() for k, v in prepared.state_dict().items()}
    if any(shared.get(f"pixel_model.model.{k}") != v.data_ptr() for k, v in tuned.state_dict().items()):
        raise RuntimeError("the QAT graph does not share the model's tensors; fine-tuned weights would be lost")
    return tuned.eval()
