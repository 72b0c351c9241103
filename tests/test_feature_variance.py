"""skipnet-eval --feature-variance: top-1 by feature-map variance, on real trained runs and real images."""

import json

import numpy as np
import pytest
import torch
from conftest import needs_fmnist

from skipnet.models import load_checkpoint
from skipnet.runtime.cli import eval_main
from skipnet.training import FeatureTap
from skipnet.training.bias_loss import BiasLoss, sample_variance

pytestmark = needs_fmnist


def _run(capsys, args):
    rc = eval_main([str(a) for a in args] + ["--quiet"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_sample_variance_is_the_unbiased_variance_the_loss_weighs():
    f = torch.randn(6, 8, 3, 3, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 7).view(6, 1, 1, 1)
    v = sample_variance(f)
    torch.testing.assert_close(v, f.flatten(1).var(dim=1), rtol=1e-5, atol=0)
    loss = BiasLoss(normalization="local").eval()
    vhat = (v - v.min()) / (v.max() - v.min())
    torch.testing.assert_close(loss.weights(f), torch.exp(0.3 * vhat) - 0.3, rtol=1e-5, atol=1e-6)


def test_on_image_folders(capsys, folder_run, small_folder, tmp_path):
    rc, out, err = _run(
        capsys,
        [
            folder_run,
            "--data",
            "imagefolder",
            "--data-dir",
            small_folder,
            "--feature-variance",
            "--json",
            tmp_path / "fv.json",
            "--plot",
            tmp_path / "fv.png",
        ],
    )
    assert rc == 0, err
    r = json.loads((tmp_path / "fv.json").read_text())
    bins = r["deciles"]
    assert [d["bin"] for d in bins] == list(range(1, 11)) and [d["images"] for d in bins] == [30] * 10
    for lower, upper in zip(bins, bins[1:]):  # ranked by variance, lowest first
        assert lower["variance_max"] <= upper["variance_min"]
    assert r["top1"] == pytest.approx(np.mean([d["top1"] for d in bins]))
    config = load_checkpoint(folder_run)[1]
    # the run's own last evaluation of the same 300 images, in other batches: a near tie may go the other way
    assert r["top1"] == pytest.approx(config["metrics"]["val_top1"], abs=0.02)
    w = r["weights"]
    assert w["batch_size"] == config["train"]["batch_size"]
    # z = exp(alpha * v^) - beta with v^ >= 0: never below 1 - beta; below_one is a share of the images
    assert w["min"] >= 1 - w["beta"] - 1e-6 and 0 <= w["below_one"] <= 1
    assert w["below_one"] == pytest.approx(np.mean([d["below_one"] for d in bins]))
    assert "top-1" in out and "below 1" in out and len(out.splitlines()) == 13
    assert (tmp_path / "fv.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_variance_is_the_feature_layers(small_run):
    """The lowest and highest variances reported are those of the images' own feature maps."""
    from skipnet.data import build_datasets, spread_indices
    from skipnet.runtime.feature_variance import feature_variance

    r = feature_variance(small_run, "fashion-mnist", limit=100, bins=2)
    model, config = load_checkpoint(small_run)
    _, val, _ = build_datasets("fashion-mnist", img_size=config["img_size"], augment=False)
    x = torch.stack([val[i][0] for i in spread_indices(len(val), 100)])
    with torch.inference_mode(), FeatureTap(model) as tap:
        model(x)
        v = tap.features.flatten(1).double().var(dim=1)
    assert r["deciles"][0]["variance_min"] == pytest.approx(float(v.min()), rel=1e-4)
    assert r["deciles"][1]["variance_max"] == pytest.approx(float(v.max()), rel=1e-4)
    assert r["images"] == 100 and r["trained_with"] == "bias"


def _bad(capsys, args, match):
    rc, _, err = _run(capsys, args)
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and match in err, err


def test_bad_input(capsys, small_run, tmp_path):
    fv = ["--data", "fashion-mnist", "--feature-variance"]
    (tmp_path / "xs_int8.tflite").write_bytes(b"an exported model")
    _bad(capsys, [tmp_path / "xs_int8.tflite", *fv], "needs the run directory the model was exported from")
    _bad(capsys, [tmp_path, *fv], "config.json does not exist")
    _bad(capsys, [tmp_path / "nope", *fv], "does not exist")
    _bad(capsys, [small_run, *fv, "--limit", "5"], "raise --limit")
    _bad(capsys, [small_run, *fv, "--limit", "0"], "--limit")
    _bad(capsys, [small_run, *fv, "--batch-size", "1"], "--batch-size")
    _bad(capsys, [small_run, *fv, "--reference", small_run], "leave --reference out")
    _bad(capsys, [small_run, *fv, "--min-top1", "0.5"], "leave --min-top1 out")
    _bad(capsys, [small_run, *fv, "--platform", "arm64"], "leave --platform out")
    _bad(capsys, [small_run, "--data", "cifar10", "--feature-variance"], "cifar")
    _bad(capsys, [small_run, *fv, "--json", tmp_path], "--json")
    (tmp_path / "weights.txt").write_text("mine")
    _bad(capsys, [small_run, *fv, "--plot", tmp_path / "weights.txt" / "p.png"], "--plot")
    _bad(capsys, [small_run, *fv, "--plot", tmp_path / "fv.txt"], "must end in .png")  # a PNG under another name
    assert not (tmp_path / "fv.txt").exists()
