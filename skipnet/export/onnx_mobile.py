"""What phones' onnxruntime execution providers would take of an .onnx file, in onnxruntime's own words.

onnxruntime's checker (`python -m onnxruntime.tools.check_onnx_model_mobile_usability FILE`)
optimises the model as ORT Mobile loads it (basic level), then counts, per execution provider,
the nodes whose op that provider supports and whose inputs have fixed shapes, and the partitions
they fall into. Its functions are called here as the command calls them, and its numbers go into
the sidecar's "mobile" block instead of its log lines.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

# Sidecar key -> the checker's list of a provider's supported ops (one of its mobile_helpers files).
PROVIDERS = {
    "nnapi": None,  # check_nnapi_partitions finds its own list
    "coreml_mlprogram": "coreml_supported_mlprogram_ops.md",
    "coreml_neuralnetwork": "coreml_supported_neuralnetwork_ops.md",
}


def mobile_usability(path: Path) -> dict[str, Any]:
    """Per execution provider: its partitions, the nodes it takes of all, the ops it lacks, the nodes
    it refuses for a dynamic input shape, and the checker's verdict on using it as the file is
    (YES, MAYBE or NO)."""
    from importlib.metadata import version

    from onnxruntime.tools.mobile_helpers import usability_checker
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory() as tmp:
        optimised = Path(tmp) / Path(path).name
        optimize_model(Path(path), optimised, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimised).model_with_shape_info
    out: dict[str, Any] = {"checker": f"onnxruntime {version('onnxruntime')} check_onnx_model_mobile_usability"}
    for name, ops in PROVIDERS.items():
        if ops is None:
            info = usability_checker.check_nnapi_partitions(model, require_fixed_input_sizes=True)
        else:
            info = usability_checker.check_coreml_partitions(model, require_fixed_input_sizes=True, config_filename=ops)
        out[name] = {
            "partitions": info.num_partitions,
            "nodes": f"{info.num_supported_nodes}/{info.num_nodes}",
            "unsupported_ops": sorted(info.unsupported_ops),
            "dynamic_shape_nodes": info.nodes_unsupported_due_to_dynamic_input,
            "verdict": info.suitability().name,
        }
    return out
