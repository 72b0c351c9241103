"""Faults a CI machine has: a full or read-only disk, a path that is no regular file, and a last batch of
one image. Each fault through the commands users type: one line on stderr, the right exit code, and
nothing left under a real name.

The disks are small tmpfs mounts (root can make them, as on the project's machines and CI); where the
test cannot mount one it is skipped with the reason.
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from conftest import needs_fmnist

from skipnet.common.io import DiskFull, atomic_group, atomic_path, atomic_write_bytes
from skipnet.training.health import batches_without_a_single, smallest_batchnorm_map

TINY = [
    "--model",
    "skipnet_xs",
    "--data",
    "fashion-mnist",
    "--limit-train",
    "256",
    "--limit-val",
    "64",
    "--batch-size",
    "128",
    "--quiet",
]


def _cli(command, *args, env=None):
    """A console script (skipnet-train, ...) of this environment, as a user runs it (with the test
    worker's thread count: conftest sets OMP_NUM_THREADS)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / command), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def _one_line(r, code, *words):
    err = r.stderr.strip().splitlines()
    assert r.returncode == code, r.stderr[-2000:]
    assert err and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert all(w in err[-1] for w in words), err[-1]
    assert all(not line.startswith(("skipnet", "make")) for line in err[:-1]), r.stderr  # one error line
    return err[-1]


class Disk:
    """A tmpfs of ``size`` mounted at ``path``; ``fill`` takes every free byte but ``keep``."""

    def __init__(self, path: Path, size: str):
        path.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
        )
        if r.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({(r.stderr or 'not root').strip()}): the full-disk tests need root"
            )
        self.path = path

    def fill(self, keep: int = 0) -> None:
        free = os.statvfs(self.path).f_bavail * os.statvfs(self.path).f_frsize
        with open(self.path / f"filler-{uuid.uuid4().hex}", "wb") as f:
            try:
                f.write(b"\0" * max(0, free - keep))
                f.flush()
            except OSError:
                pass

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if "filler-" not in p.name)

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.path)], capture_output=True)


@pytest.fixture
def disk(tmp_path):
    made = []

    def make(size: str = "1m") -> Disk:
        made.append(Disk(tmp_path / f"disk{len(made)}", size))
        return made[-1]

    yield make
    for d in made:
        d.unmount()


# ---- the mechanism ----------------------------------------------------------------------------


def test_a_full_disk_is_one_error_naming_the_file_and_the_room(disk):
    d = disk("1m")
    d.fill()
    with pytest.raises(DiskFull) as e:
        atomic_write_bytes(d.path / "big.bin", b"x" * 300_000)
    assert str(e.value).startswith(f"cannot write {d.path / 'big.bin'}: no space left on the device (")
    assert "it needs about 300.0 KB" in str(e.value) and d.files() == []


def test_a_group_replaces_all_its_files_or_none(disk, tmp_path):
    """A checkpoint of several files on a disk that fills halfway keeps every old file as it was."""
    d = disk("1m")
    for name in ("a", "b"):
        atomic_write_bytes(d.path / name, b"old")
    with pytest.raises(DiskFull):
        with atomic_group():
            atomic_write_bytes(d.path / "a", b"new")
            atomic_write_bytes(d.path / "b", b"x" * 2_000_000)
    assert (d.path / "a").read_bytes() == (d.path / "b").read_bytes() == b"old" and d.files() == ["a", "b"]
    with atomic_group():
        atomic_write_bytes(d.path / "a", b"new")
        with atomic_path(d.path / "b") as tmp:
            tmp.write_bytes(b"new")
        assert (d.path / "a").read_bytes() == b"old"  # nothing is replaced before the group ends
    assert (d.path / "a").read_bytes() == (d.path / "b").read_bytes() == b"new" and d.files() == ["a", "b"]


# ---- every command that writes a user path -------------------------------------------------------


@needs_fmnist
def test_training_on_a_full_disk(disk, tmp_path):
    """No room for one checkpoint: refused before the first step (exit 2, no directory left). Room for
    one but not two: training stops when it saves (exit 1), and the last checkpoint is kept whole."""
    d = disk("1m")
    line = _one_line(
        _cli("skipnet-train", *TINY, "--epochs", "1", "--out", d.path / "run"),
        2,
        f"cannot write {d.path / 'run'}",
        "not enough free space",
        "it needs about",
    )
    assert d.files() == [], line
    d = disk("20m")  # a SkipNet-XS checkpoint is ~18 MB with its trainer state; the second does not fit beside it
    line = _one_line(
        _cli("skipnet-train", *TINY, "--epochs", "2", "--out", d.path / "run"),
        1,
        "training stopped at the end of epoch 1",
        "no space left on the device",
        "the checkpoint at the start is kept",
        "--resume",
    )
    assert d.files() == [
        "run",
        "run/.skipnet.lock",
        "run/config.json",
        "run/metrics.csv",
        "run/model.safetensors",
        "run/trainer_state.pt",
    ], line
    state = torch.load(d.path / "run" / "trainer_state.pt", weights_only=True)
    assert state["epoch"] == 0 and state["global_step"] == 0  # the checkpoint written before the first step


@needs_fmnist
def test_export_eval_bench_on_a_full_or_read_only_disk(disk, small_run, tmp_path):
    d = disk("1m")
    out = d.path / "xs_int8.tflite"
    _one_line(
        _cli("skipnet-export", small_run, "--format", "tflite", "--int8", "--out", out),
        2,
        f"cannot write {out}: not enough free space",
        "it needs about",
    )
    model = tmp_path / "xs.onnx"
    assert _cli("skipnet-export", small_run, "--format", "onnx", "--out", model, "--no-verify").returncode == 0
    d.fill(keep=40_000)  # room for the probe, not for the staging folder's files
    _one_line(
        _cli("skipnet-export", small_run, "--format", "onnx", "--out", d.path / "x.onnx"),
        2,
        f"cannot write {d.path / 'x.onnx'}",
    )
    d.fill()
    for command, args in (
        ("skipnet-eval", [model, "--data", "fashion-mnist", "--limit", "64", "--quiet", "--json", d.path / "e.json"]),
        ("skipnet-eval", [model, "--data", "fashion-mnist", "--limit", "64", "--quiet", "--plot", d.path / "e.png"]),
        ("skipnet-bench", ["--models", "skipnet_xs", "--formats", "torch", "--runs", "2", "--json", d.path / "b.json"]),
    ):
        _one_line(_cli(command, *args), 2, "cannot write", str(d.path), "free some space")
    assert d.files() == []
    ro = disk("1m")
    ro.read_only()
    _one_line(
        _cli("skipnet-eval", model, "--data", "fashion-mnist", "--json", ro.path / "e.json"), 2, "Read-only file system"
    )


@needs_fmnist
def test_pipeline_and_arm64_set_up_on_a_full_disk(disk):
    d = disk("1m")
    d.fill()
    _one_line(
        _cli("skipnet-pipeline", "--out", d.path / "p", "--models", "skipnet_xs", "--quiet"),
        2,
        f"cannot write {d.path / 'p' / 'pipeline.json'}: no space left on the device",
    )
    assert d.files() == []  # the directory it made for its lock is taken back
    r = subprocess.run(
        [sys.executable, "-c", "from skipnet.runtime.cli import arm64_main; raise SystemExit(arm64_main())"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SKIPNET_ARM64_HOME": str(d.path / "arm")},
    )
    _one_line(
        r, 2, f"cannot write {d.path / 'arm' / 'manifest.json'}: not enough free space", "it needs about 460.0 MB"
    )


# ---- inputs that are no regular file --------------------------------------------------------------


@needs_fmnist
@pytest.mark.parametrize(
    "command, args",
    [
        ("skipnet-predict", ["RUN", "FIFO"]),
        ("skipnet-predict", ["FIFO.tflite", "IMAGE"]),
        ("skipnet-predict", ["RUN", "/dev/null"]),
        ("skipnet-eval", ["FIFO.onnx", "--data", "fashion-mnist"]),
        ("skipnet-eval", ["RUN", "--data", "fashion-mnist", "--reference", "FIFORUN"]),
        ("skipnet-export", ["FIFORUN", "--format", "onnx"]),
        ("skipnet-train", ["--config", "FIFO", "--out", "NEW"]),
        ("skipnet-train", ["--weights", "FIFO", "--model", "skipnet_xs", "--out", "NEW"]),
        ("skipnet-pipeline", ["--config", "FIFO"]),
        ("skipnet-bench", ["--models", "skipnet_xs", "--accuracy", "FIFO", "--plot", "NEW.png"]),
    ],
)
def test_a_pipe_or_device_is_refused_before_it_is_read(tmp_path, small_run, command, args):
    """Reading a named pipe waits for a writer for ever: every input path is checked first."""
    from PIL import Image

    os.mkfifo(tmp_path / "fifo")
    os.mkfifo(tmp_path / "fifo.tflite")
    os.mkfifo(tmp_path / "fifo.onnx")
    run = tmp_path / "fiforun"
    run.mkdir()
    (run / "config.json").write_bytes((small_run / "config.json").read_bytes())
    os.mkfifo(run / "model.safetensors")
    Image.new("L", (28, 28), 120).save(tmp_path / "image.png")
    names = {
        "RUN": small_run,
        "FIFO": tmp_path / "fifo",
        "FIFO.tflite": tmp_path / "fifo.tflite",
        "FIFO.onnx": tmp_path / "fifo.onnx",
        "FIFORUN": run,
        "IMAGE": tmp_path / "image.png",
        "NEW": tmp_path / "new",
        "NEW.png": tmp_path / "new.png",
    }
    r = _cli(command, *[names.get(a, a) for a in args])
    _one_line(r, 2, "not a regular file; pass the path of a file")
    assert "is a named pipe" in r.stderr or "/dev/null is a device" in r.stderr
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.png").exists()


# ---- a last batch of one image -----------------------------------------------------------------


def test_batches_without_a_single():
    for n in range(1, 40):
        for size in range(1, 12):
            batches = batches_without_a_single(n, size)
            assert sorted(i for b in batches for i in b) == list(range(n))  # every image, once
            assert all(len(b) >= 2 for b in batches) or n == 1 or size == 1
    assert [len(b) for b in batches_without_a_single(257, 128)] == [128, 129]


def test_smallest_batchnorm_map_follows_the_input_size():
    from skipnet.models import create_model

    for name in ("skipnet_xs", "mobilenet_v3_small"):
        model = create_model(name, 10).train()
        assert smallest_batchnorm_map(model, 32) == 1 and smallest_batchnorm_map(model, 64) == 4
        assert model.training  # put back as it was


@pytest.mark.numeric  # trains
@needs_fmnist
@pytest.mark.parametrize(
    "model, limit, batch",
    [("skipnet_xs", 257, 128), ("mobilenet_v3_small", 257, 128), ("skipnet_xs", 129, 64), ("skipnet_xs", 65, 16)],
)
def test_a_last_image_over_trains_to_the_end(tmp_path, model, limit, batch):
    """The last partial batch is dropped in training and merged into the one before when BatchNorm's
    statistics are re-estimated on every image: no batch of one reaches BatchNorm in training mode."""
    r = _cli(
        "skipnet-train",
        "--model",
        model,
        "--data",
        "fashion-mnist",
        "--epochs",
        "1",
        "--limit-train",
        limit,
        "--limit-val",
        "64",
        "--batch-size",
        batch,
        "--lr",
        "0.01",
        "--quiet",
        "--out",
        tmp_path / "run",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["batchnorm_statistics"]["re_estimated_on"] == limit


@pytest.mark.numeric  # trains
@needs_fmnist
def test_batch_size_one_is_refused_only_where_batchnorm_cannot_train(tmp_path):
    r = _cli("skipnet-train", *TINY, "--epochs", "1", "--batch-size", "1", "--out", tmp_path / "run")
    _one_line(r, 2, "--batch-size 1 cannot train skipnet_xs at 32x32", "use --batch-size 2 or more")
    assert not (tmp_path / "run").exists()
    r = _cli(
        "skipnet-train",
        *TINY,
        "--epochs",
        "1",
        "--batch-size",
        "1",
        "--limit-train",
        "9",
        "--img-size",
        "64",
        "--out",
        tmp_path / "run64",
    )  # 2x2 maps: four values per channel even for one image
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.numeric  # trains
@needs_fmnist
@pytest.mark.slow
def test_torchrun_ranks_with_one_image_each_are_refused_and_odd_sizes_train(tmp_path):
    def torchrun(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                "2",
                "-m",
                "skipnet.training",
                *map(str, args),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    r = torchrun(*TINY, "--epochs", "1", "--batch-size", "2", "--out", tmp_path / "one")
    assert r.returncode != 0 and "--batch-size 2 (1 per process of 2) cannot train skipnet_xs at 32x32" in r.stderr
    assert "use --batch-size 4 or more" in r.stderr and not (tmp_path / "one").exists()
    r = torchrun(
        *TINY, "--epochs", "1", "--limit-train", "257", "--batch-size", "16", "--lr", "0.01", "--out", tmp_path / "odd"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "odd" / "config.json").read_text())["batchnorm_statistics"]["re_estimated_on"] == 257
