"""Quantisation-aware training for int8 TFLite: fine-tune the graph that ships, then ship it.

1. The run's model goes through the same float export, graph rewrite and post-training
   quantisation as PTQ; the calibration over the training images is the observer that sets
   every activation's range.
2. FakeQuantGraph (fake_quant.py) runs that int8 graph, op by op, with fake quantisation; its
   weights (BatchNorm folded, as deployed) are fine-tuned, ranges frozen, with Adam and a
   cosine-decayed learning rate on the run's own loss plus distillation from the run's float
   model (the KL divergence of their predictions): the labels alone pull a well-trained model
   away from what it had learnt, the teacher alone teaches a weak model nothing new.
3. The fine-tuned weights are kept only if, fake-quantised, they get significantly more of a
   fixed set of held-out training images right than the starting point (the PTQ file) does
   (``keep``); otherwise the starting weights are. A fully trained model loses next to nothing
   to PTQ, and fine-tuning then moves as many answers one way as the other: without this check
   QAT would ship a file that is as likely worse than PTQ as better.
4. The weights go back into the rewritten float graph and the quantiser is given the trained
   ranges as they are (no recalibration): the file computes what was trained, with the same ops,
   and so the same speed, as the PTQ file.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import build_datasets, build_transform, pixel_batch, sample_pixels, spread_indices
from ..models import PixelModel
from .fake_quant import FakeQuantGraph
from .tflite_convert import deployed_float_graph, export_tflite, quantize_deployed

BATCH_SIZE = 64
OBJECTIVE = "the run's loss + KL divergence to the run's float model"
# Training images never fine-tuned on, to judge the fine-tuning by (at most this many, and at most
# a fifth of the training set); fine-tuned weights are kept when they win by KEEP_Z standard
# errors of McNemar's test (one-sided, 5%).
HOLDOUT = 10_000
KEEP_Z = 1.645
PTQ_FILE = "ptq.tflite"  # in train's working folder: the PTQ file, the fine-tuning's starting point


@dataclass(frozen=True)
class QATSettings:
    epochs: int
    images: int | None  # per epoch; None: all training images but the held-out ones
    lr: float


def train(
    job, settings: QATSettings, tmp: Path, float_path: Path | None = None, progress: bool = False
) -> tuple[FakeQuantGraph, dict[str, Any], Path]:
    """Fine-tune ``job``'s model (an ExportJob) as its int8 TFLite graph, working in ``tmp``.

    ``float_path``: the run's float .tflite, if already exported (else exported here). Returns the
    trained graph, the sidecar's ``qat`` block (``report`` adds what it measures) and the deployed
    float .tflite the graph's weights came from (``write_weights`` puts the trained ones back)."""
    fast, ptq = tmp / "fast.tflite", tmp / PTQ_FILE
    if float_path is None:
        float_path = tmp / "float.tflite"
        export_tflite(job.pixel_model("nhwc", probabilities=True), job.img_size, float_path)
    deployed_float_graph(float_path, fast, job.options.full_integer)
    quantize_deployed(fast, job.calibration, ptq)  # the PTQ file: its calibration is the observer
    graph = FakeQuantGraph(ptq, fast)
    data = TrainingImages(job)
    start, initial = data.correct(graph), copy.deepcopy(graph.state_dict())
    trained = finetune(graph, job, data, settings, progress)
    tuned = data.correct(graph)
    holdout = keep(start, tuned)
    if not holdout["kept"]:
        graph.load_state_dict(initial)
    block = {
        "epochs": settings.epochs,
        "images": trained,
        "lr": settings.lr,
        "batch_size": BATCH_SIZE,
        "loss": job.config.get("loss"),
        "objective": OBJECTIVE,
        "ranges": "calibrated on the training images, then frozen",
        "holdout": holdout,
    }
    return graph, block, fast


class TrainingImages:
    """The run's training images, split once: the held-out ones (evenly spread; ``pixels`` and
    ``labels``, prepared as for evaluation) judge the fine-tuning, ``pool`` (the rest, indices
    into ``source``) is fine-tuned on."""

    def __init__(self, job) -> None:
        config = job.config
        self.source = build_datasets(
            config["dataset"], job.options.data_dir or config.get("train", {}).get("data_dir"), job.img_size
        )[0].source
        n = min(HOLDOUT, len(self.source) // 5)
        self.pool = sorted(set(range(len(self.source))) - set(spread_indices(len(self.source), n)))
        # sample_pixels takes the same evenly spread indices, as the calibration and parity images do.
        self.pixels, self.labels = sample_pixels(self.source, config["preprocess"], n) if n else (None, None)

    @torch.no_grad()
    def correct(self, graph: FakeQuantGraph) -> np.ndarray:
        """Which held-out images ``graph``, fake-quantised, gets right."""
        if self.pixels is None:
            return np.zeros(0, bool)
        graph.quantize = True
        logits = torch.cat(
            [graph(torch.from_numpy(self.pixels[i : i + 256]).float()) for i in range(0, len(self.pixels), 256)]
        )
        return logits.argmax(1).numpy() == self.labels


def keep(start: np.ndarray, tuned: np.ndarray) -> dict[str, Any]:
    """Keep the fine-tuned weights? Only if they get significantly more held-out images right than
    the starting weights (McNemar's test on the images only one of them gets right)."""
    gained, lost = int((tuned & ~start).sum()), int((start & ~tuned).sum())
    kept = gained - lost >= KEEP_Z * math.sqrt(gained + lost) and gained > lost
    return {
        "images": int(len(start)),
        "start_top1": float(start.mean()) if len(start) else None,
        "tuned_top1": float(tuned.mean()) if len(tuned) else None,
        "gained": gained,
        "lost": lost,
        "kept": bool(kept),
    }


def settings_of(job) -> QATSettings:
    o = job.options
    return QATSettings(o.qat_epochs, o.qat_limit, o.qat_lr)


def qat_tflite_int8(job, float_path: Path, path: Path, progress: bool = False) -> tuple[FakeQuantGraph, dict[str, Any]]:
    """Write the QAT int8 .tflite for ``job`` from its float export: the trained weights, and the
    trained ranges as they are (no recalibration)."""
    with tempfile.TemporaryDirectory() as tmp:
        graph, block, fast = train(job, settings_of(job), Path(tmp), float_path, progress)
        if not block["holdout"]["kept"]:
            # The starting point is the PTQ file itself: ship it, byte for byte. Re-quantising it
            # from its own ranges would round some scales differently in the last bit.
            shutil.copyfile(Path(tmp) / PTQ_FILE, path)
            return graph, block
        tuned = Path(tmp) / "tuned.tflite"
        graph.write_weights(fast, tuned)
        quantize_deployed(tuned, None, path, ranges=graph.ranges())
    return graph, block


def report(spec: dict[str, Any], graph: FakeQuantGraph, job, path: Path) -> None:
    """Add to ``spec``'s ``qat`` block what ``measure`` finds on the job's parity images (none when
    the file cannot run here: no parity images were read)."""
    if job.parity is not None:
        spec["qat"].update(measure(graph, path, dict(job.config, **spec), *job.parity))


def finetune(graph: FakeQuantGraph, job, data: TrainingImages, settings: QATSettings, progress: bool = False) -> int:
    """Train ``graph``'s weights (see OBJECTIVE) on ``data``'s pool; returns the images per epoch."""
    # The run's own loss: the training stage comes before export, so this import keeps the one-way flow.
    from ..training import BiasLoss, build_loss

    config = job.config
    augment = build_transform(config["preprocess"], train=True, dataset=config["dataset"], normalize=False)
    n = min(settings.images or len(data.pool), len(data.pool))
    criterion = build_loss(config["loss"])
    bias = isinstance(criterion, BiasLoss)
    teacher = job.pixel_model("nhwc")
    if bias:
        _track_features(graph, job)
    # Adam: the weights are trained with BatchNorm folded in, so their scales differ from layer to
    # layer and channel to channel by orders of magnitude, which plain SGD steps cannot serve at once.
    optimizer = torch.optim.Adam(graph.parameters(), lr=settings.lr)
    steps = max(1, n // BATCH_SIZE) * settings.epochs
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    def step(idx: list[int]) -> None:
        x = torch.from_numpy(pixel_batch(augment, [data.source[i][0] for i in idx])).float()
        y = torch.tensor([int(data.source[i][1]) for i in idx])
        logits = graph(x)
        loss = criterion(logits, y, features=graph.features) if bias else criterion(logits, y)
        with torch.no_grad():
            target = teacher(x).log_softmax(1)
        loss = loss + F.kl_div(logits.log_softmax(1), target, log_target=True, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()

    with torch.random.fork_rng(), tqdm(total=steps, desc="QAT", unit="step", disable=not progress) as bar:
        torch.manual_seed(0)  # the same export twice gives the same file (augmentation draws from it)
        for _ in range(settings.epochs):
            for idx in _batches(data.pool, n):
                step(idx)
                bar.update()
    return n


def _batches(pool: list[int], n: int):
    """One epoch: ``n`` random items of ``pool``, in full batches."""
    order = torch.randperm(len(pool))[:n].tolist()
    for start in range(0, max(n - BATCH_SIZE, 0) + 1, BATCH_SIZE):
        yield [pool[i] for i in order[start : start + BATCH_SIZE]]


def _track_features(graph: FakeQuantGraph, job) -> None:
    """Bias Loss weighs samples by the model's final feature map: find it in the graph."""
    from ..training import FeatureTap

    model = job.model.eval()
    pixels = torch.from_numpy(job.calibration[:8]).float()
    with torch.no_grad(), FeatureTap(model) as tap:
        PixelModel(model, job.config["mean"], job.config["std"], "nhwc")(pixels)
        graph.track_features(pixels, tap.features)


@torch.no_grad()
def measure(
    graph: FakeQuantGraph, path: Path, config: dict[str, Any], pixels: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    """The trained fake-quantised model against the int8 file (in its runtime) on ``pixels``: top-1
    agreement and the largest logit difference in quantisation steps of the file's int8 logits;
    top-1 of both, and of the fine-tuned model run in float."""
    from ..runtime import load

    def logits(quantize: bool) -> torch.Tensor:
        graph.quantize = quantize
        return torch.cat([graph(torch.from_numpy(pixels[i : i + 256]).float()) for i in range(0, len(pixels), 256)])

    float_logits, fake = logits(False), logits(True)
    # The file ends in a float softmax over its int8 logits: its log-probabilities are those logits
    # less a constant per image. Differences in steps are whole numbers plus that constant: take off
    # its fraction, then the (now whole) median difference.
    file_log_p = load(path, config=config).backend.logits(pixels)
    step = graph.scales[graph.int8_logits_tensor][0]
    diff = (file_log_p - fake.log_softmax(1).numpy()) / step
    diff -= diff[:, :1] - np.round(diff[:, :1])  # whole steps apart, up to the constant
    diff = np.round(diff - np.round(np.median(diff, axis=1, keepdims=True)))
    return {
        "parity_images": int(len(pixels)),
        "fake_quant_agreement": float((fake.argmax(1).numpy() == file_log_p.argmax(1)).mean()),
        "max_logit_diff_steps": int(np.abs(diff).max()),
        "float_top1": float((float_logits.argmax(1).numpy() == labels).mean()),
        "fake_quant_top1": float((fake.argmax(1).numpy() == labels).mean()),
        "int8_top1": float((file_log_p.argmax(1) == labels).mean()),
    }
