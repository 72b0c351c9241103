"""The ecosystem entry points: timm.create_model after `import skipnet` (as a timm model: features_only,
pretrained_cfg, head API, TorchScript, FX), and torch.hub from this checkout."""

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skipnet.models import count_params, create_model

ROOT = Path(__file__).resolve().parents[1]


def test_timm_create_model_after_import_skipnet():
    # A fresh interpreter: skipnet imported first, timm only afterwards (the import hook registers).
    pytest.importorskip("timm")
    # A library asking whether timm is installed (find_spec) must not use up the import hook.
    code = (
        "import importlib.util, skipnet\nimportlib.util.find_spec('timm')\nimport timm, torch\n"
        "assert 'timm' not in skipnet.__dict__\n"
        "m = timm.create_model('skipnet_m', num_classes=7).eval()\n"
        "print(type(m).__name__, tuple(m(torch.zeros(1, 3, 64, 64)).shape), sorted(timm.list_models('skipnet*')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split(" ", 3)[:3] == ["SkipNet", "(1,", "7)"]
    assert "['skipnet_l', 'skipnet_m', 'skipnet_s', 'skipnet_xs']" in out


def test_timm_model_is_the_same_network_and_refuses_pretrained():
    timm = pytest.importorskip("timm")
    import skipnet  # noqa: F401

    m = timm.create_model("skipnet_xs", num_classes=10)
    assert count_params(m) == count_params(create_model("skipnet_xs", 10))
    with pytest.raises(ValueError, match="no pretrained weights are hosted"):
        timm.create_model("skipnet_m", pretrained=True)


def test_torch_hub_local_loads_trained_weights(tmp_path):
    for name in ("skipnet_s", "skipnet_m", "skipnet_l"):  # torch.hub.list reads only GitHub repos
        assert torch.hub.load(str(ROOT), name, source="local").model_name == name
    ref = create_model("skipnet_xs", 10).eval()
    from safetensors.torch import save_file

    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    m = torch.hub.load(
        str(ROOT), "skipnet_xs", source="local", num_classes=10, weights=str(tmp_path / "w.safetensors")
    ).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x))


def test_timm_create_model_after_import_timm():
    # The other order: timm first, then skipnet, which registers at once.
    pytest.importorskip("timm")
    code = (
        "import timm, torch, skipnet\nm = timm.create_model('skipnet_s', num_classes=3).eval()\n"
        "print(tuple(m(torch.zeros(1, 3, 64, 64)).shape))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(1, 3)"


def test_entry_points_are_the_registry_s_published_models():
    timm = pytest.importorskip("timm")
    from skipnet.models.registry import published

    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)

    family = ["skipnet_xs", "skipnet_s", "skipnet_m", "skipnet_l"]
    assert [e.name for e in published()] == family
    assert sorted(timm.list_models(module="skipnet")) == sorted(family)
    assert all(callable(getattr(hubconf, name)) for name in family) and not hasattr(hubconf, "resnet18")
    assert timm.models.get_pretrained_cfg("skipnet_m").first_conv == "first_layer.0"


def test_timm_features_only_matches_feature_info():
    timm = pytest.importorskip("timm")
    import skipnet  # noqa: F401

    m = timm.create_model("skipnet_m", features_only=True).eval()
    x = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        feats = m(x)
    assert m.feature_info.channels() == [16, 40, 80, 112, 160]
    assert m.feature_info.reduction() == [2, 8, 16, 16, 32]
    assert [tuple(f.shape) for f in feats] == [
        (2, c, 96 // r, 64 // r) for c, r in zip(m.feature_info.channels(), m.feature_info.reduction())
    ]
    picked = timm.create_model("skipnet_m", features_only=True, out_indices=(1, -1))
    assert picked.feature_info.channels() == [40, 160]
    with pytest.raises(ValueError, match="feature_cls='getter'"):
        timm.create_model("skipnet_m", features_only=True, feature_cls="hook")


def test_timm_head_api_reset_classifier_torchscript_and_fx():
    timm = pytest.importorskip("timm")
    import skipnet  # noqa: F401

    m = timm.create_model("skipnet_xs", num_classes=10).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feats = m.forward_features(x)
        pre = m.forward_head(feats, pre_logits=True)
        assert feats.shape == (2, m.num_features, 2, 2) and pre.shape == (2, m.head_hidden_size)
        m.reset_classifier(3)
        assert m.get_classifier().out_features == 3 and m(x).shape == (2, 3) and m.num_classes == 3
        scripted = torch.jit.script(m)
        torch.testing.assert_close(scripted(x), m(x))
        traced = torch.fx.symbolic_trace(m)
        torch.testing.assert_close(traced(x), m(x))
        m.reset_classifier(0)
        torch.testing.assert_close(m(x), pre)
        m.reset_classifier(0, "")
        assert m(x).shape == (2, m.head_hidden_size, 2, 2)


def test_timm_pretrained_cfg_overlay_file_loads_a_run_s_weights(small_run):
    timm = pytest.importorskip("timm")
    import skipnet

    ref, config = skipnet.load_checkpoint(small_run)
    overlay = {"file": str(small_run / "model.safetensors"), "num_classes": config["num_classes"]}
    m = timm.create_model("skipnet_xs", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x))


def test_timm_weights_run_carries_the_run_s_preprocessing(small_run):
    timm = pytest.importorskip("timm")
    import skipnet

    ref, config = skipnet.load_checkpoint(small_run)
    pre = config["preprocess"]
    m = timm.create_model("skipnet_xs", weights=small_run).eval()
    data = timm.data.resolve_data_config(model=m)
    assert data["input_size"] == (3, pre["crop"], pre["crop"])
    assert data["mean"] == tuple(pre["mean"]) and data["std"] == tuple(pre["std"])
    assert data["interpolation"] == "bilinear" and data["crop_mode"] == "center"
    assert math.floor(pre["crop"] / data["crop_pct"]) == pre["resize"]
    assert m.pretrained_cfg["label_names"] == tuple(config["class_names"])
    feats = timm.create_model("skipnet_xs", weights=small_run, features_only=True).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x))
        for got, want in zip(feats(x), ref.forward_intermediates(x, intermediates_only=True)):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "dataset,size,resize", [("imagefolder", 224, 256), ("fashion-mnist", 32, 32), ("imagefolder", 64, 93)]
)
def test_timm_transform_gives_the_project_s_pixels(dataset, size, resize):
    # timm's eval transform, from the data config a run's preprocess section becomes, against the
    # project's one implementation. Resizing 64 to 93 needs crop_pct nudged: 64 / (64 / 93) < 93.
    timm = pytest.importorskip("timm")
    from PIL import Image

    from skipnet.data import build_transform
    from skipnet.data.info import make_info
    from skipnet.data.transforms import preprocess_config
    from skipnet.models.hub import timm_data_cfg

    pre = dict(preprocess_config(make_info(dataset, ["a", "b"]), size), resize=resize)
    tf = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=timm_data_cfg(pre)))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 110, 3), dtype=np.uint8))
    if pre["grayscale_to_rgb"]:  # timm has no gray-to-RGB step: a gray-trained run is fed gray images
        img = img.convert("L").convert("RGB")
    torch.testing.assert_close(tf(img), build_transform(pre, train=False)(img))
    if size == 224:  # the family's default cfg is this preprocessing
        from skipnet.models.skipnet import default_cfgs

        assert {k: default_cfgs["skipnet_m"][k] for k in timm_data_cfg(pre)} == timm_data_cfg(pre)
