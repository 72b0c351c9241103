"""skipnet-train's checks: bad values refused before any work (exit 2), a diverging run stopped with
its last good checkpoint kept (exit 1), a finished run's files checked on --resume."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import needs_fmnist
from safetensors.torch import load_file, save_file

from skipnet.common import CheckFailed
from skipnet.training import TrainConfig, resolve_config
from skipnet.training.cli import build_parser
from skipnet.training.cli import main as train_main

TINY = [
    "--model",
    "skipnet_xs",
    "--limit-train",
    "128",
    "--batch-size",
    "64",
    "--limit-val",
    "64",
    "--epochs",
    "1",
    "--quiet",
]


def _run(capfd, args) -> tuple[int, str, str]:
    rc = train_main([*map(str, args)])
    out, err = capfd.readouterr()
    return rc, out, err


def _one_error_line(capfd, args, rc_expected: int) -> str:
    rc, _, err = _run(capfd, args)
    lines = err.strip().splitlines()
    assert rc == rc_expected, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- bad values: exit 2, one line naming the flag or the config file's key ------------------

BAD_FLAGS = [
    ("lr", "nan"),
    ("lr", "inf"),
    ("lr", "0"),
    ("lr", "-0.1"),
    ("momentum", "1"),
    ("momentum", "nan"),
    ("weight-decay", "-1e-4"),
    ("weight-decay", "inf"),
    ("alpha", "-1"),
    ("alpha", "nan"),
    ("beta", "1.5"),
    ("beta", "-inf"),
    ("label-smoothing", "1"),
    ("label-smoothing", "nan"),
    ("gamma", "0"),
    ("gamma", "inf"),
    ("warmup-epochs", "-1"),
    ("warmup-epochs", "nan"),
    ("ema-decay", "1"),
    ("ema-decay", "nan"),
    ("epochs", "0"),
    ("batch-size", "0"),
    ("img-size", "0"),
    ("limit-train", "0"),
    ("limit-val", "-1"),
    ("workers", "-1"),
    ("save-every", "-1"),
    ("seed", "-1"),
    ("milestones", "a,b"),
    ("milestones", "0,3"),
]


@pytest.mark.parametrize("flag,value", BAD_FLAGS)
def test_bad_flag_value_is_refused_before_any_work(capfd, tmp_path, flag, value):
    out = tmp_path / "run"
    line = _one_error_line(capfd, ["--out", out, f"--{flag}={value}"], 2)
    assert line.startswith(f"skipnet-train: error: --{flag} must be "), line
    assert f"e.g. --{flag} " in line  # says what would be accepted
    assert not out.exists()


BAD_YAML = [
    ("milestones: 'a,b'", "milestones"),
    ("out: 5", "out"),
    ("lr: .nan", "lr"),
    ("epochs: 0", "epochs"),
    ("ema: 1", "ema"),
    ("seed: -1", "seed"),
    ("batch-size: 2.5", "batch-size"),
    ("loss: focal", "loss"),
]


@pytest.mark.parametrize("text,key", BAD_YAML)
def test_bad_config_file_value_names_the_file_and_key(capfd, tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    line = _one_error_line(capfd, ["--out", tmp_path / "run", "--config", path], 2)
    assert f"config file {path}: {key} must be " in line, line
    assert not (tmp_path / "run").exists()


def test_bad_value_on_resume_is_refused_before_the_run_is_read(capfd, tmp_path):
    from skipnet.training.state import save_state

    run = tmp_path / "run"
    save_state(run / "trainer_state.pt", {"model": {}, "config": TrainConfig(out=str(run)).to_dict()})
    line = _one_error_line(capfd, ["--out", run, "--resume", "--epochs", "0"], 2)
    assert "--epochs must be a positive integer, got 0" in line


def test_help_lists_every_setting_with_its_help():
    text = " ".join(build_parser().format_help().split())
    for name, field in TrainConfig.model_fields.items():
        assert f"--{name.replace('_', '-')}" in text
        assert " ".join(field.description.split()) in text, name
    assert "--lr LR peak learning rate; > 0" in text and "--no-channels-last" in text


def test_one_definition_gives_types_defaults_and_ranges():
    cfg = resolve_config({"milestones": "3,5", "lr": 1, "scheduler": "multistep"})
    assert cfg.milestones == [3, 5] and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert TrainConfig().to_dict()["channels_last"] is True
    args = vars(build_parser().parse_args(["--lr", "0.5", "--no-channels-last", "--ema", "--milestones", "2,4"]))
    assert (args["lr"], args["channels_last"], args["ema"], args["milestones"], args["epochs"]) == (
        0.5,
        False,
        True,
        "2,4",
        None,
    )  # None: not given, so the recipe and --config apply


# ---- a loss that stops being finite: exit 1, the last good checkpoint kept ---------------------


@needs_fmnist
def test_diverging_loss_stops_training_and_keeps_the_last_good_checkpoint(capfd, tmp_path):
    run = tmp_path / "diverged"
    # lr 1e8 with SGD (the fast recipe: momentum 0.9, weight decay 5e-5) gives a NaN loss within a few
    # steps of the first epoch's 8; --save-every 2 puts a checkpoint before it.
    args = [*TINY, "--limit-train", "512", "--lr", "1e8", "--save-every", "2", "--out", run]
    rc, _, err = _run(capfd, args)
    note, line = err.strip().splitlines()  # the run started (its 8 steps are few, it says), then failed
    assert rc == 1 and note.startswith("note: 1 epoch of 512 training images at batch size 64 are 8 optimiser steps")
    found = re.search(r"diverged at epoch 1, step (\d) of 8 \(the loss is nan\)", line)
    assert found and "Lower --lr (now 1e+08)" in line and "--overwrite" in line, line
    step = int(found.group(1))
    state = torch.load(run / "trainer_state.pt", weights_only=True)
    assert state["global_step"] == (step - 1) // 2 * 2 >= 2  # the last save before the failing step
    assert f"checkpoint at epoch 1, step {state['global_step']} of 8" in line

    weights = load_file(str(run / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert weights.keys() == state["model"].keys()
    assert all(torch.equal(weights[k], state["model"][k]) for k in weights)  # the checkpoint's own weights
    assert json.loads((run / "config.json").read_text())["metrics"] == {}
    assert (run / "metrics.csv").read_text().count("\n") == 1  # the header: no epoch finished

    # Resumed, it replays the same steps into the same NaN and leaves every file byte for byte as it was.
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    again = _one_error_line(capfd, ["--out", run, "--resume", "--quiet"], 1)
    assert f"step {step} of 8" in again
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@needs_fmnist
def test_non_finite_weights_are_never_checkpointed(tmp_path):
    # The guard behind a gradient step that makes the weights inf while the step's loss was finite.
    from skipnet.training.distributed import DistInfo
    from skipnet.training.loop import Trainer

    cfg = resolve_config(
        {
            "model": "skipnet_xs",
            "limit_train": 128,
            "batch_size": 64,
            "limit_val": 64,
            "epochs": 1,
            "out": str(tmp_path / "run"),
        }
    ).validate()
    trainer = Trainer(cfg, Path(cfg.out), DistInfo(), progress=False).setup(None)
    trainer.checkpoint(0, 1)
    before = {p.name: p.read_bytes() for p in Path(cfg.out).iterdir()}
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("inf"))
    with pytest.raises(
        CheckFailed,
        match=r"at epoch 1, step 2 of 2 \(the weights are not finite\).*"
        r"checkpoint at epoch 1, step 1 of 2",
    ):
        trainer.checkpoint(0, 2)
    assert {p.name: p.read_bytes() for p in Path(cfg.out).iterdir()} == before


# ---- --resume of a finished run: its files checked, one line on stdout -------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from skipnet.training import train

    out = tmp_path_factory.mktemp("finished") / "run"
    cfg = resolve_config(
        {"model": "skipnet_xs", "limit_train": 128, "batch_size": 64, "limit_val": 64, "epochs": 2, "out": str(out)}
    )
    train(cfg.validate(), progress=False)
    return out


@pytest.fixture
def finished_copy(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


@needs_fmnist
def test_resume_of_finished_run_says_so_and_changes_nothing(capfd, finished_copy):
    run = finished_copy
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    rc, out, err = _run(capfd, ["--out", run, "--resume", "--quiet"])
    assert rc == 0 and err == "", err
    top1 = json.loads((run / "config.json").read_text())["metrics"]["val_top1"]
    assert out.splitlines() == [
        f"nothing to train: the run saved to {run} is finished (2 of 2 epochs, val top-1 "
        f"{top1:.4f}); to train longer: skipnet-train --out {run} --resume --epochs M (M > 2)"
    ]
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    line = _one_error_line(capfd, ["--out", run, "--resume", "--epochs", "1"], 2)
    assert "--epochs 1 is fewer than the 2 epochs" in line and "--epochs M with M > 2" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@needs_fmnist
@pytest.mark.parametrize(
    "damage,match",
    [
        ("truncate", "model.safetensors is not a valid safetensors file"),
        ("nan", "model.safetensors holds NaN or inf weights"),
        ("config", "config.json is not valid JSON"),
    ],
)
def test_resume_of_finished_run_with_damaged_files_is_refused(capfd, finished_copy, damage, match):
    run = finished_copy
    weights = run / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "nan":
        tensors = load_file(str(weights))
        next(t for t in tensors.values() if t.is_floating_point()).view(-1)[0] = float("nan")
        save_file(tensors, str(weights), metadata={"format": "pt", "model": "skipnet_xs"})
    else:
        (run / "config.json").write_text('{"model": "skipnet_xs", ')
    line = _one_error_line(capfd, ["--out", run, "--resume", "--quiet"], 2)
    assert match in line, line
