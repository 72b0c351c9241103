"""Training stage end to end on real Fashion-MNIST: run directory, accuracy, kill -9 and resume, bad input."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import needs_fmnist

from skipnet.data import build_datasets
from skipnet.models import create_model, load_checkpoint
from skipnet.training.cli import main as train_main

QUICK = ["--model", "skipnet_xs", "--limit-train", "4096", "--limit-val", "500", "--batch-size", "64", "--quiet"]


def _cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "skipnet.training", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def _trainer_weights(run: Path) -> dict:
    return torch.load(run / "trainer_state.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short real Fashion-MNIST run shared by several tests."""
    out = tmp_path_factory.mktemp("run") / "xs"
    r = _cli(*QUICK, "--epochs", "3", "--lr", "0.2", "--out", out)
    assert r.returncode == 0, r.stderr
    return out, r


@needs_fmnist
def test_run_directory_follows_design(trained_run):
    out, r = trained_run
    # The four files of the contract, and the lock file that kept other writers out while it trained.
    assert sorted(p.name for p in out.iterdir()) == [
        ".skipnet.lock",
        "config.json",
        "metrics.csv",
        "model.safetensors",
        "trainer_state.pt",
    ]
    cfg = json.loads((out / "config.json").read_text())
    for key in (
        "model",
        "num_classes",
        "class_names",
        "img_size",
        "mean",
        "std",
        "preprocess",
        "dataset",
        "loss",
        "metrics",
        "version",
    ):
        assert key in cfg, key
    assert cfg["model"] == "skipnet_xs" and cfg["num_classes"] == 10 and cfg["class_names"][0] == "T-shirt/top"
    assert cfg["loss"] == {
        "name": "bias",
        "alpha": 0.3,
        "beta": 0.3,
        "normalization": "global",
        "label_smoothing": pytest.approx(cfg["loss"]["label_smoothing"]),
    }
    assert cfg["preprocess"]["grayscale_to_rgb"] is True and cfg["img_size"] == 32
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert list(rows[0]) == ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "lr", "seconds"]
    assert cfg["metrics"]["val_top1"] == pytest.approx(float(rows[-1]["val_top1"]), abs=1e-5)
    state = torch.load(out / "trainer_state.pt", weights_only=True)
    assert state["epoch"] == 3 and state["batch"] == 0 and state["global_step"] == 3 * (4096 // 64)
    assert "running_min" in state["loss"] and torch.isfinite(state["loss"]["running_min"])
    assert "run saved to" in r.stdout


@needs_fmnist
def test_short_real_training_learns(trained_run):
    out, _ = trained_run
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    # 3 epochs of 4,096 real images: far above chance (10%) on 500 real test images.
    assert float(rows[-1]["val_top1"]) > 0.6
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


@needs_fmnist
def test_run_dir_reloads_with_same_predictions(trained_run):
    out, _ = trained_run
    from skipnet.data import build_datasets

    model, cfg = load_checkpoint(out)
    _, val, _ = build_datasets("fashion-mnist")
    x = torch.stack([val[i][0] for i in range(500)])
    y = torch.tensor([val[i][1] for i in range(500)])
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(cfg["metrics"]["val_top1"], abs=1e-6)
    assert torch.equal(create_model("skipnet_xs", weights=out).eval()(x[:4]), model(x[:4]))


@needs_fmnist
def test_resume_of_finished_run_extends_it(trained_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(trained_run[0], out)
    r = _cli("--out", out, "--resume", "--epochs", "4", "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 4
    # Without --epochs, resuming a finished run keeps its own epoch count (not the recipe's) and only reports.
    r = _cli("--out", out, "--resume", "--quiet")
    assert r.returncode == 0 and "run saved to" in r.stdout, r.stderr
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 4


def test_resume_refuses_to_change_what_is_trained(capsys, tmp_path):
    from skipnet.training.config import TrainConfig
    from skipnet.training.state import save_state

    run = tmp_path / "run"
    # The least a state file must hold to pass the contract's schema; its config is what is compared.
    save_state(
        run / "trainer_state.pt",
        {
            "model": {"w": torch.zeros(1)},
            "optimizer": {},
            "scheduler": {},
            "epoch": 0,
            "batch": 0,
            "global_step": 0,
            "history": [],
            "rng": {},
            "config": TrainConfig(out=str(run), lr=0.2).to_dict(),
        },
    )
    _bad(capsys, ["--out", run, "--resume", "--lr", "0.5"], "--lr 0.5 differs from the run being resumed (0.2)")


DETERMINISTIC = [
    *QUICK,
    "--epochs",
    "2",
    "--deterministic",
    "--save-every",
    "3",
    "--limit-train",
    "768",
    "--workers",
    "1",
]


def _wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if torch.load(run / "trainer_state.pt", weights_only=True)["global_step"] >= step:
                return
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.05)
    raise TimeoutError


@needs_fmnist
def test_kill9_and_resume_is_bit_identical(tmp_path):
    ref = tmp_path / "ref"
    r = _cli(*DETERMINISTIC, "--out", ref)
    assert r.returncode == 0, r.stderr

    run = tmp_path / "killed"
    for target in (4, 16):  # kill twice: mid-epoch 1 and mid-epoch 2, at a random moment after a checkpoint
        args = [*DETERMINISTIC, "--out", run] + (["--resume"] if (run / "trainer_state.pt").exists() else [])
        p = subprocess.Popen(
            [sys.executable, "-m", "skipnet.training", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for_step(run, target, p)
        time.sleep(random.uniform(0.0, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert not [f for f in os.listdir(run) if f.endswith(".tmp") and not f.startswith(".")]
    r = _cli(*DETERMINISTIC, "--out", run, "--resume")
    assert r.returncode == 0, r.stderr

    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ta, tb = _trainer_weights(ref), _trainer_weights(run)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)

    def strip(p):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(p.open())]

    assert strip(ref / "metrics.csv") == strip(run / "metrics.csv")


@needs_fmnist
@pytest.mark.parametrize("sig,workers", [(signal.SIGTERM, 0), (signal.SIGINT, 1)])
def test_signal_saves_checkpoint_and_exits_cleanly(tmp_path, sig, workers):
    run = tmp_path / "stopped"
    args = [*QUICK, "--epochs", "3", "--save-every", "0", "--workers", workers, "--out", run]
    # Own process group, signalled as a whole: what Ctrl-C in a terminal does (workers included).
    p = subprocess.Popen(
        [sys.executable, "-m", "skipnet.training", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for_step(run, 0, p)
    time.sleep(3)
    os.killpg(p.pid, sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err
    assert "Traceback" not in err and "--resume" in err
    state = torch.load(run / "trainer_state.pt", weights_only=True)
    assert 0 < state["global_step"] < 3 * 4096 // 64


# ---- bad input: exit 2, one line on stderr, no traceback -------------------------------------


def _bad(capsys, args, match):
    rc = train_main([*map(str, args)])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]


def test_bad_flags(capsys, tmp_path):
    out = ["--out", tmp_path / "o"]
    _bad(capsys, ["--model", "skipnet_xxl", *out], "unknown --model 'skipnet_xxl'")
    _bad(capsys, ["--data", "mnist", *out], "unknown --data 'mnist'")
    _bad(capsys, ["--loss", "focal", *out], "invalid choice: 'focal'")
    _bad(capsys, ["--optimizer", "lamb", *out], "invalid choice: 'lamb'")
    _bad(capsys, ["--epochs", "0", *out], "--epochs must be a positive integer")
    _bad(capsys, ["--batch-size", "-4", *out], "--batch-size must be a positive integer")
    _bad(capsys, ["--epochs", "two", *out], "invalid int value")
    _bad(capsys, ["--model", "skipnet_xs"], "--out DIR is required")
    _bad(capsys, [*out, "--resume"], "nothing to resume")
    assert not (tmp_path / "o").exists()


def test_bad_data_dirs(capsys, tmp_path):
    out = ["--out", tmp_path / "o"]
    _bad(capsys, ["--data", "imagefolder", *out], "--data-dir")
    _bad(capsys, ["--data", "imagefolder", "--data-dir", tmp_path / "missing", *out], "missing")
    (tmp_path / "empty").mkdir()
    _bad(capsys, ["--data", "imagefolder", "--data-dir", tmp_path / "empty", *out], "train")
    _bad(capsys, ["--data", "fashion-mnist", "--data-dir", tmp_path / "empty", *out], "")
    _bad(capsys, ["--data", "cifar10", "--data-dir", tmp_path / "empty", *out], "--download")


def test_bad_config_files(capsys, tmp_path):
    out = ["--out", tmp_path / "o"]
    _bad(capsys, ["--config", tmp_path / "nope.yaml", *out], "does not exist")
    (tmp_path / "bad.yaml").write_text("epochs: [1, 2\n")
    _bad(capsys, ["--config", tmp_path / "bad.yaml", *out], "not valid YAML")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    _bad(capsys, ["--config", tmp_path / "list.yaml", *out], "must be a mapping")
    (tmp_path / "key.yaml").write_text("epoch: 3\n")
    _bad(capsys, ["--config", tmp_path / "key.yaml", *out], "unknown key 'epoch'")
    (tmp_path / "type.yaml").write_text("epochs: three\n")
    _bad(capsys, ["--config", tmp_path / "type.yaml", *out], "epochs must be of type int")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_corrupt_and_malicious_trainer_state(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trainer_state.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    _bad(capsys, ["--out", run, "--resume"], "is not a readable PyTorch checkpoint")
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "config": {}, "x": _Evil(marker)}, run / "trainer_state.pt")
    _bad(capsys, ["--out", run, "--resume"], "refusing to load")
    assert not marker.exists()
    _bad(capsys, ["--out", run, "--model", "skipnet_xs"], "already holds a run")


def test_config_file_precedence(tmp_path):
    from skipnet.training import resolve_config

    (tmp_path / "c.yaml").write_text("epochs: 7\nbatch-size: 32\nlr: 0.01\nmilestones: 2,4\n")
    cfg = resolve_config({"lr": 0.05, "data": "cifar10"}, str(tmp_path / "c.yaml"))
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.milestones) == (7, 32, 0.05, [2, 4])
    assert cfg.scheduler == "multistep" and cfg.model == "skipnet_m"  # from the cifar10 recipe


def test_named_recipes():
    from skipnet.common import UserError
    from skipnet.training import resolve_config

    fast, full = resolve_config({}), resolve_config({"recipe": "full"})
    assert (fast.recipe, fast.epochs, fast.lr) == ("fast", 3, 0.2)  # Fashion-MNIST's default
    assert (full.recipe, full.epochs, full.scheduler) == ("full", 30, "cosine")
    paper = resolve_config({"recipe": "paper", "model": "resnet18"})  # the paper's CIFAR recipe, any data
    assert (paper.data, paper.model, paper.epochs, paper.lr, paper.milestones) == (
        "fashion-mnist",
        "resnet18",
        160,
        0.1,
        [80, 122],
    )
    assert resolve_config({"data": "cifar100"}).recipe == "paper"
    with pytest.raises(UserError, match="unknown recipe 'long'"):
        resolve_config({"recipe": "long"})


@needs_fmnist
def test_ema_amp_and_ce_variants(tmp_path):
    r = _cli(
        *QUICK,
        "--limit-train",
        "256",
        "--epochs",
        "1",
        "--ema",
        "--ema-decay",
        "0.9",
        "--amp",
        "--out",
        tmp_path / "ema",
    )
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "ema" / "config.json").read_text())
    assert cfg["ema"] is True and 0 <= cfg["metrics"]["val_top1"] <= 1
    r = _cli(
        *QUICK,
        "--limit-train",
        "256",
        "--epochs",
        "1",
        "--loss",
        "ce",
        "--model",
        "mobilenet_v3_small",
        "--optimizer",
        "adamw",
        "--lr",
        "0.002",
        "--out",
        tmp_path / "ce",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "ce" / "config.json").read_text())["loss"]["name"] == "ce"


@needs_fmnist
def test_torchrun_two_processes_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "skipnet.training",
            *map(str, [*QUICK, "--limit-train", "2048", "--epochs", "1", "--out", out]),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    state = torch.load(out / "trainer_state.pt", weights_only=True)
    assert state["global_step"] == 2048 // 64  # the global batch is split, not duplicated
    assert r.stdout.count("run saved to") == 1  # only rank 0 reports and writes
    # Each rank validated its half of the 500 images with its own re-estimated BatchNorm statistics; the
    # all-reduced loss equals rank 0's saved model on all 500 only if every rank computed the same ones.
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["batchnorm_statistics"]["re_estimated_on"] == 512
    model = create_model("skipnet_xs", weights=out).eval()
    x, y = zip(*(build_datasets("fashion-mnist", augment=False)[1][i] for i in range(500)))
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(torch.stack(x)), torch.tensor(y)).item()
    assert loss == pytest.approx(cfg["metrics"]["val_loss"], rel=1e-4)


def test_bad_weights_for_fine_tuning(capsys, tmp_path):
    from skipnet.models import save_weights

    out = ["--out", tmp_path / "o", "--model", "skipnet_xs"]
    _bad(capsys, [*out, "--weights", tmp_path / "none.pth"], "does not exist")
    save_weights(create_model("skipnet_s", 10), tmp_path / "s.safetensors", {"model": "skipnet_s"})
    _bad(capsys, [*out, "--weights", tmp_path / "s.safetensors"], "holds a skipnet_s model, not skipnet_xs")
    torch.save(create_model("skipnet_xs", 1000).state_dict(), tmp_path / "in1k.pth")
    _bad(capsys, [*out, "--weights", tmp_path / "in1k.pth"], "the checkpoint has 1000 classes")
    (tmp_path / "junk.pth").write_bytes(os.urandom(4096))
    _bad(capsys, [*out, "--weights", tmp_path / "junk.pth"], "not a readable PyTorch checkpoint")
    # A bare pickle that refers to a memo entry it never stored: the unpickler raises KeyError (seen in CI).
    (tmp_path / "memo.pth").write_bytes(b"\x80\x02h\xee" + os.urandom(64))
    _bad(capsys, [*out, "--weights", tmp_path / "memo.pth"], "not a readable PyTorch checkpoint")
    marker = tmp_path / "pwned"
    torch.save({"w": _Evil(marker)}, tmp_path / "evil.pth")
    _bad(capsys, [*out, "--weights", tmp_path / "evil.pth"], "refusing to load")
    assert not marker.exists()


@needs_fmnist
def test_fine_tune_from_imagenet_layout_checkpoint(tmp_path):
    # A 1000-class state_dict (the authors' release has this form) fine-tuned on Fashion-MNIST's 10 classes.
    torch.manual_seed(1)
    src = create_model("skipnet_xs", 1000)
    torch.save(src.state_dict(), tmp_path / "in1k.pth")
    r = _cli(
        *QUICK,
        "--limit-train",
        "256",
        "--epochs",
        "1",
        "--lr",
        "1e-9",
        "--weights",
        tmp_path / "in1k.pth",
        "--reset-head",
        "--out",
        tmp_path / "ft",
    )
    assert r.returncode == 0, r.stderr
    state = torch.load(tmp_path / "ft" / "trainer_state.pt", weights_only=True)["model"]
    # With a vanishing lr the backbone is still the checkpoint's (BN running stats aside).
    w = "blocks.2.0.conv.0.weight"
    torch.testing.assert_close(state[w], src.state_dict()[w], atol=1e-6, rtol=0)
    assert state["classifier.3.weight"].shape == (10, 1280)
