"""torch.hub entry points: torch.hub.load("path/to/this/repo", "skipnet_m", source="local").

One per published model of skipnet.models.registry (the SkipNet family). No weights are hosted,
so nothing is downloaded; pass weights=RUN_DIR (or a .safetensors / state_dict .pth file) for a
trained model, and num_classes for a new head.
"""

dependencies = ["torch", "torchvision", "safetensors"]

from skipnet.models.hub import torch_hub_entrypoints  # noqa: E402

globals().update(torch_hub_entrypoints())  # torch.hub looks entry points up as this module's attributes
