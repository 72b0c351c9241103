"""TFLite model metadata: what MediaPipe Tasks, the TFLite Task Library and Android Studio's ML Model
Binding read to feed an image classifier and name its classes, written and read with MediaPipe's
metadata tools (``mediapipe.tasks.python.metadata``).

What an export carries: the model's name, version and description; the input as an RGB image with
its value range 0..255 and, for float32 input, NormalizationOptions mean 0 / std 1 (the graph takes
raw pixels and normalises inside); the output as class probabilities with the run's class names as
an associated labels.txt (TENSOR_AXIS_LABELS).
"""

from __future__ import annotations

import gc
import json
import sys
import types
from pathlib import Path
from typing import Any

from .. import __version__
from ..common import UserError, atomic_path, first_line

LABELS_FILE = "labels.txt"
_VERSION_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"

# The metadata schema members that need a newer parser than 1.0.0, and the version that reads them
# (MediaPipe's metadata_version.cc, which its Linux wheels leave out: see _provide_parser_version).
_NEWER_MEMBERS = {
    "vocabulary_file": (1, 0, 1),
    "subgraph_process_units": (1, 1, 0),
    "tokenizer": (1, 1, 0),
    "tensor_groups": (1, 2, 0),
    "regex_tokenizer": (1, 2, 1),
    "audio": (1, 3, 0),
    "scann_index_file": (1, 4, 0),
    "file_version": (1, 4, 1),
    "custom_metadata": (1, 5, 0),
}


def _members(metadata) -> set[str]:
    """Which of _NEWER_MEMBERS a ModelMetadataT uses."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    used, files, units = set(), list(metadata.associatedFiles or []), []
    for sub in metadata.subgraphMetadata or []:
        tensors = list(sub.inputTensorMetadata or []) + list(sub.outputTensorMetadata or [])
        files += list(sub.associatedFiles or []) + [f for t in tensors for f in t.associatedFiles or []]
        units += [u for t in tensors for u in t.processUnits or []]
        units += list(sub.inputProcessUnits or []) + list(sub.outputProcessUnits or [])
        used |= {"subgraph_process_units"} if sub.inputProcessUnits or sub.outputProcessUnits else set()
        used |= {"tensor_groups"} if sub.inputTensorGroups or sub.outputTensorGroups else set()
        used |= {"custom_metadata"} if sub.customMetadata else set()
        used |= {
            "audio"
            for t in tensors
            if t.content and t.content.contentPropertiesType == fb.ContentProperties.AudioProperties
        }
    kinds = {
        fb.AssociatedFileType.VOCABULARY: "vocabulary_file",
        fb.AssociatedFileType.SCANN_INDEX_FILE: "scann_index_file",
    }
    used |= {kinds[f.type] for f in files if f.type in kinds} | {"file_version" for f in files if f.version}
    tokenizers = {
        fb.ProcessUnitOptions.BertTokenizerOptions: "tokenizer",
        fb.ProcessUnitOptions.SentencePieceTokenizerOptions: "tokenizer",
        fb.ProcessUnitOptions.RegexTokenizerOptions: "regex_tokenizer",
    }
    return used | {tokenizers[u.optionsType] for u in units if u.optionsType in tokenizers}


def minimum_parser_version(metadata_buf: bytes) -> str:
    """The oldest metadata parser that reads ``metadata_buf``, which the writer records in it."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    metadata = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(bytes(metadata_buf), 0))
    version = max([(1, 0, 0)] + [_NEWER_MEMBERS[m] for m in _members(metadata)])
    return ".".join(map(str, version))


def _provide_parser_version() -> None:
    """MediaPipe's metadata module imports a compiled helper that its Linux wheels (1.2.2) do not
    ship; it computes only minimum_parser_version, so stand in for it before the import."""
    if _VERSION_MODULE in sys.modules:
        return
    try:
        __import__(_VERSION_MODULE)
        return
    except ImportError:
        pass
    parts = _VERSION_MODULE.split(".")
    for i in range(3, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    sys.modules[_VERSION_MODULE].GetMinimumMetadataParserVersion = minimum_parser_version


def _mediapipe_metadata():
    try:
        import mediapipe.tasks.metadata  # noqa: F401 (fails early, with the right message, if absent)
    except ImportError:
        raise UserError("TFLite metadata needs mediapipe: pip install 'skipnet-deploy[tflite]'") from None
    _provide_parser_version()
    from mediapipe.tasks.python.metadata import metadata
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, metadata_writer

    return metadata, metadata_info, metadata_writer


def describe(config: dict[str, Any]) -> dict[str, str]:
    """The name, version and description an export's metadata and sidecar both carry."""
    variant = config["precision"]
    if config.get("qat"):
        variant += " (quantisation-aware trained)"
    return {
        "name": config["model"],
        "version": config.get("model_version", "unversioned"),
        "description": f"{config['model']} image classifier for {config['num_classes']} {config['dataset']} "
        f"classes, {variant}. Input: RGB pixels 0..255; output: class probabilities. "
        f"Exported by skipnet-deploy {config.get('exporter_version', __version__)}.",
    }


def write_metadata(path: Path, config: dict[str, Any]) -> None:
    """Give the .tflite at ``path`` (replaced atomically) its metadata and labels from ``config``
    (the export's sidecar contents, with ``describe``'s fields)."""
    _, info, writer_lib = _mediapipe_metadata()
    from mediapipe.tasks.metadata import schema_py_generated as schema
    from mediapipe.tasks.python.metadata.metadata_writers import writer_utils

    class Writer(writer_lib.MetadataWriter):
        def add_general_info(self, name, description=None, version=None):  # the stock one drops the version
            self._general_md = info.GeneralMd(name=name, version=version, description=description)
            return self

    about = describe(config)
    model = bytearray(Path(path).read_bytes())
    writer = Writer.create(model)
    writer.add_general_info(about["name"], about["description"], about["version"])
    float_input = writer_utils.get_input_tensor_types(model)[0] == schema.TensorType.FLOAT32
    # Raw pixels in: float32 input needs NormalizationOptions (mean 0, std 1: the model normalises);
    # uint8 input is fed as it is and carries only its value range.
    writer.add_image_input(
        [0.0] if float_input else None,
        [1.0] if float_input else None,
        name="image",
        description="RGB image, pixels 0..255",
    )
    writer.add_classification_output(
        writer_lib.Labels().add(list(config["class_names"])),
        name="probabilities",
        description="Probability of each class",
    )
    model, _ = writer.populate()
    # The writer ends in a reference cycle; its __del__ (removing its temporary folder) fails if
    # left to interpreter exit, so collect it now.
    del writer
    gc.collect()
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(bytes(model))


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a .tflite as a dict: name, version, description, labels, and the input's and
    output's content, normalisation and value range. UserError for a file without it."""
    metadata, _, _ = _mediapipe_metadata()
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}; pass an exported .tflite file") from None
    if data[4:8] != b"TFL3":
        raise UserError(f"{path} is not a TFLite model (no TFL3 identifier); pass an exported .tflite file")
    try:
        shown = metadata.MetadataDisplayer.with_model_buffer(data)
        md = json.loads(shown.get_metadata_json())
        labels = shown.get_associated_file_buffer(LABELS_FILE).decode("utf-8").splitlines()
    except Exception as e:  # the displayer raises ValueError and flatbuffers' own errors for foreign files
        raise UserError(
            f"{path} has no readable SkipNet TFLite metadata ({first_line(e)}); export it with skipnet-export"
        ) from None
    sub = md["subgraph_metadata"][0]
    return {
        "name": md.get("name"),
        "version": md.get("version"),
        "description": md.get("description"),
        "min_parser_version": md.get("min_parser_version"),
        "labels": labels,
        "input": _tensor(sub["input_tensor_metadata"][0]),
        "output": _tensor(sub["output_tensor_metadata"][0]),
    }


def _tensor(t: dict[str, Any]) -> dict[str, Any]:
    units = {u["options_type"]: u.get("options", {}) for u in t.get("process_units", [])}
    norm = units.get("NormalizationOptions")
    stats = t.get("stats", {})
    return {
        "name": t.get("name"),
        "content": t.get("content", {}).get("content_properties_type"),
        "color_space": t.get("content", {}).get("content_properties", {}).get("color_space"),
        "normalization": {"mean": norm["mean"], "std": norm["std"]} if norm else None,
        "range": [stats["min"][0], stats["max"][0]] if "min" in stats and "max" in stats else None,
        "associated_files": [f["name"] for f in t.get("associated_files", [])],
    }
