"""Training stage: Bias Loss, feature taps, the training loop and its run directory.

    from skipnet.training import BiasLoss, FeatureTap, TrainConfig, train
"""
from .bias_loss import BiasLoss
from .config import DEFAULT_RECIPE, RECIPES, TrainConfig, resolve_config
from .loop import TrainResult, build_loss, evaluate, resume, train
from .taps import FeatureTap

__all__ = ["DEFAULT_RECIPE", "RECIPES", "BiasLoss", "FeatureTap", "TrainConfig", "TrainResult", "build_loss", "evaluate", "resolve_config", "resume", "train"]
