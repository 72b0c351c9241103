"""skipnet-train's checks: a diverging run is stopped with its last good checkpoint kept (exit 1)."""
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import needs_fmnist
from skipnet.common import CheckFailed
from skipnet.training import resolve_config
from skipnet.training.cli import main as train_main

TINY = ["--model", "skipnet_xs", "--limit-train", "128", "--batch-size", "64", "--limit-val", "64", "--epochs", "1",
        "--quiet"]


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


# ---- a loss that stops being finite: exit 1, the last good checkpoint kept ---------------------

@needs_fmnist
def test_diverging_loss_stops_training_and_keeps_the_last_good_checkpoint(capfd, tmp_path):
    run = tmp_path / "diverged"
    # lr 1e8 with SGD (the fast recipe: momentum 0.9, weight decay 5e-5) gives a NaN loss within a few
    # steps of the first epoch's 8; --save-every 2 puts a checkpoint before it.
    args = [*TINY, "--limit-train", "512", "--lr", "1e8", "--save-every", "2", "--out", run]
    line = _one_error_line(capfd, args, 1)
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

    cfg = resolve_config({"model": "skipnet_xs", "limit_train": 128, "batch_size": 64, "limit_val": 64,
                          "epochs": 1, "out": str(tmp_path / "run")}).validate()
    trainer = Trainer(cfg, Path(cfg.out), DistInfo(), progress=False).setup(None)
    trainer.checkpoint(0, 1)
    before = {p.name: p.read_bytes() for p in Path(cfg.out).iterdir()}
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("inf"))
    with pytest.raises(CheckFailed, match=r"at epoch 1, step 2 of 2 \(the weights are not finite\).*"
                                          r"checkpoint at epoch 1, step 1 of 2"):
        trainer.checkpoint(0, 2)
    assert {p.name: p.read_bytes() for p in Path(cfg.out).iterdir()} == before
