"""Short runs on a few hundred images: BatchNorm statistics re-estimated before every validation,
the small-data rule for image folders, and the chance-level warning.

The folder is the one of benchmarks/small_folder.py: T-shirt, Trouser and Sneaker from Fashion-MNIST
as 64x64 JPEG class folders, 300 training and 100 validation images per class.
"""

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import binomial_floor, needs_fmnist
from torch import nn

RULE_LINE = (
    "900 training images: batch size 16, lr 0.0125, warmup epochs 0.3 (the finetune recipe's: 64, 0.05, 1), "
    "so that 3 epochs are 168 optimiser steps; set --batch-size, --lr or --warmup-epochs to choose yourself"
)


def _train(capfd, folder: Path, out: Path, *flags: str) -> tuple[dict, list[str]]:
    from skipnet.training.cli import main

    rc = main(
        ["--data", "imagefolder", "--data-dir", str(folder), "--img-size", "64", "--out", str(out), "--quiet", *flags]
    )
    err = capfd.readouterr().err
    assert rc == 0, err
    return json.loads((out / "config.json").read_text()), err.splitlines()


def _val_predictions(run: Path, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from skipnet.data import build_datasets
    from skipnet.models import create_model

    model = create_model(json.loads((run / "config.json").read_text())["model"], weights=run).eval()
    x, y = zip(*build_datasets("imagefolder", str(folder), 64, augment=False)[1])
    with torch.no_grad():
        return model(torch.stack(x)).argmax(1), torch.tensor(y)


@needs_fmnist
def test_three_epochs_on_a_small_folder_predict_in_eval_mode(capfd, small_folder, tmp_path):
    cfg, err = _train(capfd, small_folder, tmp_path / "run", "--model", "mobilenet_v3_small", "--epochs", "3")
    assert err[0] == RULE_LINE
    assert not [line for line in err if line.startswith("warning:")]
    _check_small_data_run(tmp_path / "run", small_folder)


@needs_fmnist
def test_the_pipelines_skipnet_on_a_small_folder_predicts_in_eval_mode(folder_run, small_folder):
    _check_small_data_run(folder_run, small_folder)  # the same rule, through skipnet-pipeline


def _check_small_data_run(run: Path, folder: Path):
    cfg = json.loads((run / "config.json").read_text())
    assert {k: cfg["train"][k] for k in ("batch_size", "lr", "warmup_epochs")} == {
        "batch_size": 16,
        "lr": 0.0125,
        "warmup_epochs": 0.3,
    }
    assert cfg["batchnorm_statistics"] == {"re_estimated_on": 512, "split": "train", "preprocessing": "eval"}
    predicted, labels = _val_predictions(run, folder)
    top1 = (predicted == labels).float().mean().item()
    # About 93% on any host (benchmarks/results/small_folder.md); was 33.33%: one class for every image.
    assert top1 >= binomial_floor(0.93, len(labels)) and len(predicted.unique()) == 3
    assert top1 == pytest.approx(cfg["metrics"]["val_top1"], abs=1 / 300)
    assert cfg["warnings"] == []


@needs_fmnist
def test_chance_warning_after_the_epochs_at_chance_and_in_config(capfd, small_folder, tmp_path):
    # The settings that left the model at chance: the recipe's batch, lr and warm-up, statistics not re-estimated.
    cfg, err = _train(
        capfd,
        small_folder,
        tmp_path / "run",
        "--model",
        "skipnet_xs",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--lr",
        "0.05",
        "--warmup-epochs",
        "1",
        "--bn-images",
        "0",
    )
    assert err[0] == (
        "note: 3 epochs of 900 training images at batch size 64 are 42 optimiser steps; with fewer "
        "than 150 a model may not learn to predict from its input: raise --epochs or lower --batch-size"
    )
    assert cfg["batchnorm_statistics"] == "running average"
    rows = _metrics(tmp_path / "run")
    assert rows[-1]["val_top1"] == pytest.approx(1 / 3) and rows[-1]["train_top1"] > 0.5
    warned = [line for line in err if line.startswith("warning:")]
    at_chance = [r for r in rows if abs(r["val_top1"] - 1 / 3) < 0.01 and r["train_top1"] >= 1 / 3 + 0.15]
    assert len(warned) == len(at_chance) >= 1
    last = (
        f"warning: validation top-1 33.3% is chance level (33.3%) while training top-1 is "
        f"{rows[-1]['train_top1']:.1%}: after 42 optimiser steps the model does not yet predict from its input "
        "in eval mode; train for more steps (more --epochs, or a smaller --batch-size)"
    )
    assert warned[-1] == last and cfg["warnings"] == [last]


def _metrics(run: Path) -> list[dict[str, float]]:
    import csv

    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_chance_warning_thresholds():
    from skipnet.training.health import chance_warning

    assert chance_warning(0.105, 0.40, 10, 50) is not None  # within a point of 10%, training 30 points above
    assert chance_warning(0.115, 0.40, 10, 50) is None  # 1.5 points above chance: learning something
    assert chance_warning(0.10, 0.20, 10, 50) is None  # training is near chance too: nothing learnt yet
    assert "after 50 optimiser steps" in chance_warning(0.5, 0.9, 2, 50)


@needs_fmnist
def test_ema_weights_get_their_own_statistics(capfd, small_folder, tmp_path):
    from skipnet.data import build_datasets
    from skipnet.models import create_model
    from skipnet.training.health import bn_indices, reestimate_bn

    cfg, _ = _train(
        capfd, small_folder, tmp_path / "run", "--model", "skipnet_xs", "--epochs", "1", "--ema", "--ema-decay", "0.9"
    )
    saved = create_model("skipnet_xs", weights=tmp_path / "run")  # the EMA's weights and statistics
    again = copy.deepcopy(saved)
    train_eval = build_datasets("imagefolder", str(small_folder), 64, augment=False)[0]
    assert (
        reestimate_bn(
            again, train_eval, bn_indices(list(range(900)), 512, 0), cfg["train"]["batch_size"], torch.device("cpu")
        )
        == 512
    )
    a, b = ({k: v for k, v in m.state_dict().items() if "running_" in k} for m in (saved, again))
    # float32 sums over 512 images in another order (thread count) move the late variances by ~1e-4
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)
    trained = torch.load(tmp_path / "run" / "trainer_state.pt", weights_only=True)["model"]
    assert any(not torch.allclose(trained[k], a[k], rtol=1e-3, atol=1e-4) for k in a)  # not the training model's


def test_reestimated_mean_is_the_mean_over_the_images():
    """For a torchvision baseline too: the first BatchNorm's running mean becomes the mean of its input
    over exactly the chosen images, whatever training left there; dropout's randomness does not leak."""
    from torchvision.models import mobilenet_v3_small

    from skipnet.training.health import reestimate_bn

    torch.manual_seed(0)
    model = mobilenet_v3_small(num_classes=3).eval()
    bn = model.features[0][1]
    bn.running_mean.fill_(5.0)
    images = torch.randn(40, 3, 64, 64)
    dataset = list(zip(images, torch.zeros(40, dtype=torch.long)))
    state = torch.random.get_rng_state()
    assert reestimate_bn(model, dataset, list(range(8, 40)), 8, torch.device("cpu")) == 32
    assert torch.equal(torch.random.get_rng_state(), state) and not model.training
    with torch.no_grad():
        conv_out = model.features[0][0](images[8:40])
    assert torch.allclose(bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.01  # torchvision's value, put back


def test_no_batchnorm_or_no_images_is_a_no_op():
    from skipnet.training.health import bn_indices, reestimate_bn

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert reestimate_bn(model, [(torch.zeros(3, 8, 8), 0)], [0], 1, torch.device("cpu")) == 0
    assert bn_indices(list(range(100)), 0, 0) == []
    picked = bn_indices(list(range(0, 1000, 2)), 50, 3)
    assert len(set(picked)) == 50 and all(i % 2 == 0 for i in picked) and max(picked) > 500  # drawn, not the first
