"""pytest plugin for `make test-timm` (tests/timm_peer/run.py loads it with `-p skipnet_timm_peer`):
what timm's own tests/test_models.py needs to test the SkipNet family as one of timm's models.

Not a conftest.py: this directory sits under tests/, and the project's own test run would load a
conftest here and patch timm for every test.
"""

import timm

import skipnet  # noqa: F401  (registers the SkipNet family with timm)

_timm_list_models = timm.list_models


def list_models(filter="", module="", *args, **kwargs):
    """timm.list_models, with module "skipnet" added to the module lists that include "mobilenetv3".

    test_models.py collects its forward_intermediates, features_only-getter and pruning tests from
    the models of a fixed list of timm's own modules (FEAT_INTER_FILTERS, which names mobilenetv3, the
    network SkipNet extends); SkipNet implements that API, so it joins those lists. Every other
    listing (forward, backward, default_cfgs, TorchScript, FX) finds it through timm's registry.
    """
    if not isinstance(module, str) and "mobilenetv3" in module:
        module = [*module, "skipnet"]
    return _timm_list_models(filter, module, *args, **kwargs)


timm.list_models = list_models  # test_models.py imports it by name, after this plugin is loaded


def pytest_configure(config):
    # test_models.py marks its tests with pytest-timeout's marker; that plugin is not a dependency.
    config.addinivalue_line("markers", "timeout(seconds): time limit under pytest-timeout (not installed)")
