"""Training stage: Bias Loss, feature taps, the training loop and its run directory.

    from skipnet.training import BiasLoss, FeatureTap, TrainConfig, train
"""
from .bias_loss import BiasLoss
from .config import RECIPES, TrainConfig, resolve_config
from .loop import TrainResult, build_loss, evaluate, resume, train
from .taps import FeatureTap

__all__ = ["RECIPES", "BiasLoss", "FeatureTap", "TrainConfig", "TrainResult", "build_loss", "evaluate", "resolve_config", "resume", "train"]
