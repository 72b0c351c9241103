"""The ecosystem entry points: timm.create_model after `import skipnet`, and torch.hub from this checkout."""

import importlib.util
import subprocess
import sys
from pathlib import Path

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
