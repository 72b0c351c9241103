"""torch.hub entry points: torch.hub.load("path/to/this/repo", "skipnet_m", source="local").

No weights are hosted, so nothing is downloaded; pass weights=RUN_DIR (or a .safetensors /
state_dict .pth file) for a trained model, and num_classes for a new head.
"""

dependencies = ["torch", "torchvision", "safetensors"]

from skipnet.models.hub import skipnet_l, skipnet_m, skipnet_s, skipnet_xs  # noqa: E402,F401
