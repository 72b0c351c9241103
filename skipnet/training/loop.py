"""The training loop: `train(cfg)` / `resume(out)` run a `Trainer`, which writes a run directory.

The run directory's files are named in skipnet.common.contract.paths.
"""

from __future__ import annotations

import csv
import io
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import __version__
from ..common import CheckFailed, DiskFull, UserError, atomic_group, atomic_write_text, write_json
from ..common.contract import (
    CONFIG_FILE,
    LOCK_FILE,
    METRICS_FILE,
    RUN_FILES,
    STATE_FILE,
    TENSORBOARD_DIR,
    WEIGHTS_FILE,
    check_run_out,
    exclusive,
    remove_if_unused,
    temp_files,
)
from ..common.io import check_room
from ..data import SeededDataset, build_datasets, default_img_size, preprocess_config
from ..models import create_model, read_state_dict, save_weights
from ..models.features import FeatureTap
from . import distributed
from .bias_loss import BiasLoss
from .config import TrainConfig, check_settings
from .health import bn_indices, chance_warning, reestimate_bn, smallest_batchnorm_map
from .sampler import ResumableSampler
from .sizing import fit_to_data
from .state import capture_rng, load_state, restore_rng, save_state

METRIC_COLUMNS = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "lr", "seconds"]


@dataclass
class TrainResult:
    out: Path
    metrics: dict[str, float]
    interrupted: bool = False
    signal: int | None = None  # the signal that stopped the run early
    is_main: bool = True  # rank 0 under torchrun: the process that reports and writes
    history: list[dict[str, float]] = field(default_factory=list)
    finished: bool = False  # resumed with all its epochs done: checked and reported, nothing trained


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step boundary and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second Ctrl-C: give up waiting for the step boundary
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
    if cfg.device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    # No weight decay on BN parameters and biases (standard for MobileNet-style nets).
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=0.9, eps=0.0316, momentum=cfg.momentum)


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "cosine":
            t = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if cfg.scheduler == "multistep":
            return cfg.gamma ** sum(step >= m * steps_per_epoch for m in cfg.milestones)
        return 1.0

    return factor


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; workers must outlive it so the main process
    # can finish its step and save a checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _loader(dataset, sampler, batch_size: int, cfg: TrainConfig, device: torch.device, epoch: int) -> DataLoader:
    # A dedicated generator: the DataLoader must not draw from the global RNG, or a resumed
    # run's dropout masks would shift by one draw.
    g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        generator=g,
        drop_last=False,
        persistent_workers=False,
        worker_init_fn=_ignore_sigint if cfg.workers else None,
    )


def _autocast(cfg: TrainConfig, device: torch.device):
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=cfg.amp)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, cfg: TrainConfig, device: torch.device, dist_info: distributed.DistInfo
) -> tuple[float, float]:
    """(mean cross-entropy, top-1) over the loader, summed across processes."""
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    for x, y in loader:
        x, y = _to(x, cfg, device), y.to(device)
        with _autocast(cfg, device):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += y.numel()
    loss_sum, correct, count = distributed.all_reduce_sum([loss_sum, correct, count], dist_info, device)
    return loss_sum / max(count, 1), correct / max(count, 1)


def _to(x: torch.Tensor, cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def _subset(n: int, limit: int | None, seed: int, shuffle: bool) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    if not shuffle:
        return list(range(limit))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:limit].tolist())


def _check_batch_fits(model: nn.Module, cfg: TrainConfig, img_size: int, per_rank: int, world_size: int) -> None:
    """Refuse a batch that BatchNorm cannot train on: one value per channel (one image per process
    and a 1x1 feature map). Training batches are all full (the last partial one is dropped), so
    only the batch size itself can get there."""
    values = smallest_batchnorm_map(model, img_size)
    if values is None or per_rank * values >= 2:
        return
    per = f" ({per_rank} per process of {world_size})" if world_size > 1 else ""
    raise UserError(
        f"--batch-size {cfg.batch_size}{per} cannot train {cfg.model} at {img_size}x{img_size}: its "
        "last feature maps are 1x1, and BatchNorm in training mode needs more than one value per "
        f"channel; use --batch-size {2 * world_size} or more, or a larger --img-size"
    )


def _check_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    if os.environ.get("RANK", "0") != "0":
        return  # rank 0 checks (and fails for all); others would race with its first checkpoint
    check_run_out(out, resume, overwrite)


def _final_metrics(history: list[dict[str, float]]) -> dict[str, float]:
    last = history[-1] if history else {}
    return {k: last[k] for k in ("val_top1", "val_loss", "train_top1", "train_loss") if k in last}


def _tensorboard(log_dir: Path):
    """A SummaryWriter when tensorboard is installed (it is optional), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir))


def _write_metrics(out: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in METRIC_COLUMNS})
    atomic_write_text(out / METRICS_FILE, buf.getvalue())


def loss_section(cfg: TrainConfig) -> dict[str, Any]:
    """The "loss" section of config.json."""
    return {
        "name": cfg.loss,
        "alpha": cfg.alpha,
        "beta": cfg.beta,
        "normalization": cfg.normalization,
        "label_smoothing": cfg.label_smoothing,
    }


def build_loss(loss: dict[str, Any]) -> nn.Module:
    """A run's loss from its "loss" section: BiasLoss (called with features=) or label-smoothed cross-entropy."""
    if loss["name"] == "bias":
        return BiasLoss(loss["alpha"], loss["beta"], loss["normalization"], loss["label_smoothing"])
    return nn.CrossEntropyLoss(label_smoothing=loss["label_smoothing"])


def _run_config(
    cfg: TrainConfig,
    info,
    img_size: int,
    metrics: dict[str, float],
    bn_images: int = 0,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    pre = preprocess_config(info, img_size)
    return {
        "model": cfg.model,
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "img_size": img_size,
        "mean": list(pre["mean"]),
        "std": list(pre["std"]),
        "preprocess": pre,
        "dataset": cfg.data,
        "loss": loss_section(cfg),
        "ema": cfg.ema,
        # how the saved BatchNorm statistics were made: re-estimated before each validation, or
        # training's running average
        "batchnorm_statistics": (
            {"re_estimated_on": bn_images, "split": "train", "preprocessing": "eval"}
            if bn_images
            else "running average"
        ),
        "metrics": metrics,
        "warnings": warnings or [],  # about the last validation (health.chance_warning)
        "train": cfg.to_dict(),
        "version": __version__,
    }


# What may differ between a run and its resumption; everything else is taken from the checkpoint.
RESUME_CHANGEABLE = ("epochs", "workers", "save_every", "out")


def train(cfg: TrainConfig, progress: bool = True, overwrite: bool = False) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` and write the run directory ``cfg.out``."""
    out = Path(cfg.out)
    if cfg.weights:
        read_state_dict(cfg.weights)  # a missing or corrupt --weights fails before anything is made
    _check_out_dir(out, resume=False, overwrite=overwrite)
    return _launch(cfg, out, None, progress)


def resume(out: str | os.PathLike, progress: bool = True, **changes: Any) -> TrainResult:
    """Continue the run in ``out`` from its last checkpoint, with its saved configuration.

    ``changes`` may raise ``epochs`` or set ``workers`` / ``save_every``; any other key must
    equal the saved value (a resumed run cannot change what it is training). A run that has
    done all its epochs is checked (its files must be intact) and reported, not trained.
    """
    out = Path(out)
    asked = check_settings({k: v for k, v in changes.items() if v is not None})  # the flags, before the files
    _check_out_dir(out, resume=True, overwrite=False)
    state = load_state(out / STATE_FILE)
    cfg = _resumed_config(state["config"], asked, out)
    if state["epoch"] >= cfg.epochs:
        return _finished_run(cfg, out, state)
    return _launch(cfg, out, state, progress)


def is_finished(out: str | os.PathLike) -> bool:
    """Whether the run in ``out`` has done all its epochs (read from its last checkpoint, nothing trained)."""
    path = Path(out) / STATE_FILE
    if not path.is_file():
        return False
    state = load_state(path)
    return state["epoch"] >= int(state["config"]["epochs"])


def _resumed_config(saved: dict[str, Any], asked: dict[str, Any], out: Path) -> TrainConfig:
    try:
        before = TrainConfig(**saved)
    except UserError as e:
        raise UserError(
            f"{out / STATE_FILE} holds settings this version refuses ({e}); start over with --overwrite"
        ) from None
    for key, value in asked.items():
        if key not in RESUME_CHANGEABLE and getattr(before, key) != value:
            flag = "--" + key.replace("_", "-")
            raise UserError(
                f"{flag} {value} differs from the run being resumed ({getattr(before, key)}); "
                f"only --epochs, --workers and --save-every can change on --resume"
            )
    kept = {k: v for k, v in asked.items() if k in RESUME_CHANGEABLE}
    return TrainConfig(**{**before.to_dict(), **kept, "out": str(out)}).validate()


def _finished_run(cfg: TrainConfig, out: Path, state: dict[str, Any]) -> TrainResult:
    """Report a run whose epochs are all done, once its files are known to be intact."""
    done = state["epoch"]
    if done > cfg.epochs:
        raise UserError(
            f"--epochs {cfg.epochs} is fewer than the {done} epochs {out} has done; to train longer "
            f"pass --epochs M with M > {done}"
        )
    # The files every later stage reads: config.json parses, the weights load into the model and are finite.
    model = create_model(cfg.model, weights=out)
    if not _all_finite(model):
        raise UserError(f"{out / WEIGHTS_FILE} holds NaN or inf weights; start the run over with --overwrite")
    history = list(state["history"])
    return TrainResult(
        out, _final_metrics(history), is_main=os.environ.get("RANK", "0") == "0", history=history, finished=True
    )


def _launch(cfg: TrainConfig, out: Path, state: dict | None, progress: bool) -> TrainResult:
    if os.environ.get("RANK", "0") != "0":  # rank 0 holds the lock and writes for all
        return _run(cfg, out, state, progress)
    created = not out.exists()
    try:
        with exclusive(out / LOCK_FILE, str(out), "wait for that training to finish or choose another --out"):
            for stale in temp_files(out, RUN_FILES):  # what one of ours left when it was killed mid-write
                stale.unlink(missing_ok=True)
            return _run(cfg, out, state, progress)
    except BaseException:
        if created:  # failed before its first checkpoint: take back the directory it made
            remove_if_unused(out)
        raise


def _run(cfg: TrainConfig, out: Path, state: dict | None, progress: bool) -> TrainResult:
    device_kind = "cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu"
    dist_info = distributed.setup(device_kind)
    try:
        return _train(cfg, out, state, dist_info, progress)
    finally:
        distributed.teardown(dist_info)


def _train(
    cfg: TrainConfig, out: Path, state: dict | None, dist_info: distributed.DistInfo, progress: bool
) -> TrainResult:
    return Trainer(cfg, out, dist_info, progress).setup(state).fit()


def _all_finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point())


def _position(epoch: int, batch: int, steps_per_epoch: int) -> str:
    """Where a checkpoint resumes, in words: (1, 0) is 'the end of epoch 1'."""
    if batch == 0:
        return f"the end of epoch {epoch}" if epoch else "the start"
    return f"epoch {epoch + 1}, step {batch} of {steps_per_epoch}"


class Trainer:
    """One process's part of a run: ``setup`` builds (or restores) everything, ``fit`` trains.

    ``fit`` runs ``train_epoch`` then ``end_epoch`` (``validate`` and ``checkpoint``) until the
    last epoch or a signal. A loss or weights that stop being finite end it with CheckFailed,
    and the last good checkpoint stays on disk as it was.
    """

    def __init__(self, cfg: TrainConfig, out: Path, dist_info: distributed.DistInfo, progress: bool):
        self.cfg, self.out, self.dist, self.progress = cfg, out, dist_info, progress
        self.epoch, self.start_batch, self.batch, self.global_step = 0, 0, 0, 0
        self.history: list[dict[str, float]] = []
        self.run_sums = [0.0, 0.0, 0.0]  # loss sum, correct, count of the current epoch so far
        self.epoch_seconds = 0.0
        self.last_loss = 0.0
        self.saved_at: tuple[int, int] | None = None  # (epoch, batch) the checkpoint on disk resumes at
        self.start_note: str | None = None  # what the small-data rule changed or found (sizing.fit_to_data)

    # ---- setup --------------------------------------------------------------------------------
    def setup(self, state: dict | None) -> Trainer:
        """Device, data, model, optimizer, schedule, EMA and loss; then ``state`` (a checkpoint) if given."""
        self._setup_device()
        torch.manual_seed(self.cfg.seed)  # same initial weights on every rank
        self._setup_model(fresh=state is None)
        self._setup_samplers(fresh=state is None)
        self._setup_optimization()
        if state is not None:
            self._restore(state)
        return self

    def _setup_device(self) -> None:
        cfg = self.cfg
        self.device = _device(cfg, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        if cfg.batch_size % self.dist.world_size:
            raise UserError(
                f"--batch-size {cfg.batch_size} is the global batch and must be divisible by the "
                f"{self.dist.world_size} processes"
            )

    def _setup_model(self, fresh: bool) -> None:
        cfg = self.cfg
        self.train_ds, self.val_ds, self.info = build_datasets(
            cfg.data, cfg.data_dir, cfg.img_size, cfg.download, seed=cfg.seed
        )
        # BatchNorm statistics are re-estimated on training images as validation sees images
        self.train_eval_ds = SeededDataset(self.train_ds.source, self.val_ds.transform, self.info, cfg.seed)
        self.img_size = cfg.img_size or default_img_size(cfg.data)
        if cfg.weights and fresh:  # a resumed run's weights come from its checkpoint instead
            model = create_model(cfg.model, self.info.num_classes, weights=cfg.weights, reset_head=cfg.reset_head)
            if not _all_finite(model):
                raise UserError(
                    f"--weights {cfg.weights} holds NaN or inf values; start from a checkpoint "
                    "of a run that did not diverge"
                )
        else:
            model = create_model(cfg.model, self.info.num_classes)
        multiple = getattr(model, "input_multiple", 1)
        if self.img_size % multiple:
            raise UserError(
                f"--img-size {self.img_size} is not a multiple of {multiple}, which {cfg.model} needs; "
                f"use e.g. {max(multiple, self.img_size // multiple * multiple)}"
            )
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model

    def _setup_samplers(self, fresh: bool) -> None:
        d = self.dist
        train_idx = _subset(len(self.train_ds), self.cfg.limit_train, self.cfg.seed, shuffle=True)
        if fresh:  # a resumed run has its fitted settings saved
            self.cfg, self.start_note = fit_to_data(self.cfg, len(train_idx), d.world_size)
        cfg = self.cfg
        val_idx = _subset(len(self.val_ds), cfg.limit_val, cfg.seed, shuffle=False)
        if len(train_idx) < cfg.batch_size:
            raise UserError(
                f"only {len(train_idx)} training images for --batch-size {cfg.batch_size}; "
                "lower --batch-size or raise --limit-train"
            )
        self.per_rank = cfg.batch_size // d.world_size
        _check_batch_fits(self.model, cfg, self.img_size, self.per_rank, d.world_size)
        self.bn_idx = bn_indices(train_idx, cfg.bn_images, cfg.seed)
        self.train_sampler = ResumableSampler(
            train_idx, cfg.batch_size, shuffle=True, seed=cfg.seed, rank=d.rank, world_size=d.world_size
        )
        self.val_sampler = ResumableSampler(
            val_idx, cfg.batch_size, shuffle=False, rank=d.rank, world_size=d.world_size, drop_last=False
        )
        self.steps_per_epoch = self.train_sampler.batches_per_epoch

    def _setup_optimization(self) -> None:
        cfg, model, device = self.cfg, self.model, self.device
        self.criterion = build_loss(loss_section(cfg))
        self.criterion.to(device)
        self.tap = FeatureTap(model) if cfg.loss == "bias" else None
        self.net: nn.Module = model
        if self.dist.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.optimizer = _make_optimizer(cfg, model)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg, self.steps_per_epoch))
        self.ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema
            else None
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.criterion.load_state_dict(state["loss"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.start_batch, self.global_step = state["epoch"], state["batch"], state["global_step"]
        self.saved_at = (self.epoch, self.start_batch)
        self.history = list(state["history"])
        self.run_sums = list(state["run_sums"])
        self.epoch_seconds = float(state["epoch_seconds"])
        restore_rng(state["rng"])

    # ---- training -----------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train the remaining epochs; stop early (with a checkpoint) on SIGINT/SIGTERM."""
        if self.dist.is_main:
            check_room(self.out / STATE_FILE, self._checkpoint_bytes())
        if self.start_note and self.dist.is_main:  # after every check of the settings: a run that starts
            print(self.start_note, file=sys.stderr)
        if self.saved_at is None:  # a new run: its directory exists (and is resumable) from the start
            if self.dist.is_main:
                self._write(0, 0)
            self.saved_at = (0, 0)
        board = _tensorboard(self.out / TENSORBOARD_DIR) if self.dist.is_main else None
        interrupted = False
        try:
            with _StopFlag() as stop:
                while self.epoch < self.cfg.epochs and not interrupted:
                    interrupted = self.train_epoch(stop)
                    if not interrupted:
                        self.end_epoch(board)
        finally:
            if self.tap is not None:
                self.tap.remove()
            if board is not None:
                board.close()
        if interrupted and self.dist.is_main:
            print(
                f"stopped at epoch {self.epoch + 1}, step {self.batch}; checkpoint saved. Continue with: "
                f"skipnet-train --out {self.out} --resume",
                file=sys.stderr,
            )
        return TrainResult(
            self.out,
            _final_metrics(self.history),
            interrupted,
            stop.signum if interrupted else None,
            self.dist.is_main,
            self.history,
        )

    def train_epoch(self, stop: _StopFlag) -> bool:
        """The rest of the current epoch; True if a signal stopped it (after a checkpoint)."""
        cfg = self.cfg
        self.train_sampler.set_epoch(self.epoch, self.start_batch)
        self.train_ds.set_epoch(self.epoch)
        loader = _loader(self.train_ds, self.train_sampler, self.per_rank, cfg, self.device, self.epoch)
        self.net.train()
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.start_batch,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not (self.progress and self.dist.is_main),
            dynamic_ncols=True,
            mininterval=1.0,
            file=sys.stderr,
        )
        with bar:
            t_last = time.perf_counter()
            self.batch, stopping = self.start_batch, False
            for x, y in loader:
                images = self._step(x, y)
                now = time.perf_counter()
                self.epoch_seconds += now - t_last
                self._show(bar, images, now - t_last)
                t_last = now
                stopping = self._should_stop(stop)
                if stopping:
                    break
                if cfg.save_every and self.global_step % cfg.save_every == 0 and self.batch < self.steps_per_epoch:
                    self.checkpoint(self.epoch, self.batch)
                    t_last = time.perf_counter()
        if stopping:
            self.checkpoint(self.epoch, self.batch)
        return stopping

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> int:
        """One optimisation step; returns the batch size. Its loss is left in ``last_loss``."""
        cfg, device = self.cfg, self.device
        x, y = _to(x, cfg, device), y.to(device, non_blocking=True)
        with _autocast(cfg, device):
            logits = self.net(x)
            loss = (
                self.criterion(logits, y, features=self.tap.features)
                if self.tap is not None
                else self.criterion(logits.float(), y)
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.batch += 1
        self.global_step += 1
        self.last_loss = loss.item()
        self.run_sums[0] += self.last_loss * y.numel()
        self.run_sums[1] += (logits.detach().argmax(1) == y).sum().item()
        self.run_sums[2] += y.numel()
        return y.numel()

    def _should_stop(self, stop: _StopFlag) -> bool:
        """Asks every process, in one collective: did a loss stop being finite (raise), did a signal
        come (True)? All processes then stop together."""
        finite = math.isfinite(self.last_loss)
        diverged, stopping = distributed.any_rank_each([not finite, stop.signum is not None], self.dist, self.device)
        if diverged:
            what = "the loss is not finite on another process" if finite else f"the loss is {self.last_loss}"
            raise self._diverged(f"epoch {self.epoch + 1}, step {self.batch} of {self.steps_per_epoch}", what)
        return stopping

    def _show(self, bar: tqdm, images: int, seconds: float) -> None:
        if bar.n % 10 == 0 or self.batch == self.steps_per_epoch:
            loss, correct, count = self.run_sums
            bar.set_postfix(
                loss=f"{loss / count:.3f}",
                acc=f"{correct / count:.3f}",
                img_s=f"{images * self.dist.world_size / max(seconds, 1e-9):.0f}",
                refresh=False,
            )
        bar.update(1)

    def end_epoch(self, board) -> None:
        """Validate, record the epoch's metrics (log, tensorboard) and checkpoint the start of the next."""
        row = self.validate()
        self.history.append(row)
        if self.dist.is_main:
            tqdm.write(
                f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.4f} | "
                f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.4f} | {self.epoch_seconds:.0f} s",
                file=sys.stderr,
            )
            for line in self._warnings():
                tqdm.write(line, file=sys.stderr)
        if board is not None:
            for key, value in row.items():
                if key != "epoch":
                    board.add_scalar(key, value, row["epoch"])
            board.flush()
        self.epoch, self.start_batch, self.run_sums, self.epoch_seconds = self.epoch + 1, 0, [0.0, 0.0, 0.0], 0.0
        self.checkpoint(self.epoch, 0)

    def validate(self) -> dict[str, float]:
        """The epoch's metrics row: training loss/top-1 over all processes, then validation (of the EMA
        weights when EMA is on)."""
        tl, tc, tn = distributed.all_reduce_sum(self.run_sums, self.dist, self.device)
        reestimate_bn(
            self._final_model(), self.train_eval_ds, self.bn_idx, self.per_rank, self.device, self.cfg.workers
        )
        loader = DataLoader(
            self.val_ds, batch_size=self.per_rank, sampler=self.val_sampler, num_workers=self.cfg.workers
        )
        val_loss, val_top1 = evaluate(self._final_model(), loader, self.cfg, self.device, self.dist)
        if not (math.isfinite(tl) and math.isfinite(val_loss)):  # the same sums on every rank: all stop
            raise self._diverged(
                f"the end of epoch {self.epoch + 1}", f"training loss sum {tl}, validation loss {val_loss}"
            )
        return {
            "epoch": self.epoch + 1,
            "train_loss": tl / tn,
            "train_top1": tc / tn,
            "val_loss": val_loss,
            "val_top1": val_top1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(self.epoch_seconds, 3),
        }

    # ---- checkpoints --------------------------------------------------------------------------
    def checkpoint(self, next_epoch: int, next_batch: int) -> None:
        """Save a checkpoint that resumes at (next_epoch, next_batch). Every process calls it; rank 0
        writes. Weights that are not finite are never written: the last good checkpoint stays."""
        finite = _all_finite(self.model) and (self.ema is None or _all_finite(self.ema.module))
        if distributed.any_rank(not finite, self.dist, self.device):
            raise self._diverged(_position(next_epoch, next_batch, self.steps_per_epoch), "the weights are not finite")
        if self.dist.is_main:
            try:
                self._write(next_epoch, next_batch)
            except DiskFull as e:
                full = DiskFull(self.out, e.why, self._checkpoint_bytes())
                raise CheckFailed(
                    f"training stopped at {_position(next_epoch, next_batch, self.steps_per_epoch)}: "
                    f"{full}; the checkpoint at {self._kept()} is kept: then run again with "
                    "--resume"
                ) from None
        self.saved_at = (next_epoch, next_batch)

    def _checkpoint_bytes(self) -> int:
        """Roughly what a checkpoint needs: the weights, and in the trainer state the model, one buffer
        per weight for the optimiser and the EMA copy, plus a margin."""
        weights = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        return weights * (4 if self.ema is not None else 3) + (1 << 20)

    def _write(self, next_epoch: int, next_batch: int) -> None:
        """The run directory's four files, replacing the last checkpoint's together or not at all (a
        full disk raises DiskFull and keeps them). A new run writes them before its first step: a
        disk without room for a checkpoint is found before any training."""
        cfg, out, info = self.cfg, self.out, self.info
        out.mkdir(parents=True, exist_ok=True)
        meta = {"model": cfg.model, "num_classes": str(info.num_classes)}
        with atomic_group():
            self._write_files(next_epoch, next_batch, meta)

    def _write_files(self, next_epoch: int, next_batch: int, meta: dict[str, str]) -> None:
        cfg, out, info = self.cfg, self.out, self.info
        save_weights(self._final_model(), out / WEIGHTS_FILE, meta)
        write_json(
            out / CONFIG_FILE,
            _run_config(
                cfg,
                info,
                self.img_size,
                _final_metrics(self.history),
                len(self.bn_idx) if self.history else 0,
                self._warnings(),
            ),
        )
        _write_metrics(out, self.history)
        save_state(
            out / STATE_FILE,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else {},
                "loss": self.criterion.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": next_epoch,
                "batch": next_batch,
                "global_step": self.global_step,
                "history": self.history,
                "run_sums": self.run_sums,
                "epoch_seconds": self.epoch_seconds,
                "rng": capture_rng(),
                "config": cfg.to_dict(),
                "version": __version__,
            },
        )

    def _warnings(self) -> list[str]:
        """The line for a last validation at chance level while training is far above it, if so."""
        if not self.history:
            return []
        row = self.history[-1]
        line = chance_warning(
            row["val_top1"], row["train_top1"], self.info.num_classes, row["epoch"] * self.steps_per_epoch
        )
        return [line] if line else []

    def _final_model(self) -> nn.Module:
        """The weights a run ships (model.safetensors) and validates: the EMA's when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def _kept(self) -> str:
        """Where the checkpoint on disk resumes, in words."""
        return _position(*self.saved_at, self.steps_per_epoch) if self.saved_at else "the start"

    def _diverged(self, where: str, what: str) -> CheckFailed:
        return CheckFailed(
            f"training diverged at {where} ({what}); nothing was written, the checkpoint at "
            f"{self._kept()} "
            f"in {self.out} is kept. Lower --lr (now {self.cfg.lr:g}) and start over with --overwrite"
        )
