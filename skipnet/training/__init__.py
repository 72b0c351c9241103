"""Training stage: Bias Loss, feature taps, the training loop and its run directory.

Usage:

    from skipnet.training import BiasLoss, FeatureTap, TrainConfig, train
"""

from ..models.features import FeatureTap  # the training loop's tap, where the public API has always had it
from .bias_loss import BiasLoss
from .config import DEFAULT_RECIPE, LOSS_NAMES, RECIPES, TrainConfig, resolve_config
from .loop import TrainResult, build_loss, evaluate, is_finished, resume, train

__all__ = [
    "DEFAULT_RECIPE",
    "LOSS_NAMES",
    "RECIPES",
    "BiasLoss",
    "FeatureTap",
    "TrainConfig",
    "TrainResult",
    "build_loss",
    "evaluate",
    "is_finished",
    "resolve_config",
    "resume",
    "train",
]
