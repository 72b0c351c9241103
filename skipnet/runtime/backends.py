"""Runtime backends: PyTorch run directories, ONNX (onnxruntime), TFLite (LiteRT) and, on macOS, CoreML files."""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common import first_line
from ..common.contract import sidecar_path
from ..common.io import native_stderr_to
from ..models import PixelModel, load_checkpoint
from .delegation import delegation, nodes
from .predictor import ModelLoadError


class TorchBackend:
    format = "torch"
    precision = "float32"
    input_side = num_outputs = None  # the run's own config.json built this model

    def __init__(self, run_dir: Path, threads: int | None = None, config: dict[str, Any] | None = None):
        model, self.config = load_checkpoint(run_dir)
        self.model = PixelModel(model, self.config["mean"], self.config["std"], layout="nhwc").eval()
        self.threads = threads

    @torch.inference_mode()
    def logits(self, pixels: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(np.ascontiguousarray(pixels))).float().numpy()


class OnnxBackend:
    format = "onnx"

    def __init__(self, path: Path, threads: int | None = None, config: dict[str, Any] | None = None, spin: bool = True):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelLoadError("running .onnx models needs onnxruntime: pip install 'skipnet-deploy[onnx]'") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        if not spin:  # idle workers otherwise busy-wait, stealing cores from whatever runs next (skipnet-bench)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own pybind exception types for bad files
            raise ModelLoadError(f"{path} is not a loadable ONNX model ({first_line(e)}); re-export it") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.config = config or _config_from(meta.get("skipnet_config"), path)
        inp = self.session.get_inputs()[0]
        self.batch = input_batch(self.session)
        self.precision = self.config.get("precision", "float32")
        self.nhwc = self.config.get("input", {}).get("layout", "NCHW") == "NHWC"
        side = inp.shape[2 if self.nhwc else 3] if len(inp.shape) == 4 else -1
        classes = self.session.get_outputs()[0].shape[-1]
        self.input_side = side if isinstance(side, int) else None
        self.num_outputs = classes if isinstance(classes, int) else None

    @classmethod
    def for_timing(cls, path: Path, threads: int, config: dict[str, Any] | None = None) -> OnnxBackend:
        # No spinning: onnxruntime's idle workers busy-wait after each run and would slow the next
        # model in the round (measured: LiteRT 1.8 -> 3.2 ms beside a spinning session on 2 cores).
        return cls(path, threads, config, spin=False)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels if self.nhwc else pixels.transpose(0, 3, 1, 2)
        return run_batched(self.session, np.ascontiguousarray(x, dtype=np.float32), self.batch)[0]


def input_batch(session) -> int | None:
    """The batch size an onnxruntime session's input is fixed to; None where it takes any."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def fixed_batches(x: np.ndarray, batch: int):
    """``x`` in batches of exactly ``batch`` images, the last padded with copies of its own images
    (which change neither another image's output nor a min..max calibration range); yields
    (batch, how many of its images are real)."""
    for start in range(0, len(x), batch):
        part = x[start : start + batch]
        yield part[np.arange(batch) % len(part)], len(part)


def run_batched(session, x: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """Every output of an onnxruntime session on ``x``, its one input: at once where the input takes
    any batch, else in fixed batches, the padding's outputs dropped. An output that does not start
    with the batch dimension is the first batch's."""
    name = session.get_inputs()[0].name
    if batch is None:
        return session.run(None, {name: x})
    runs = [(session.run(None, {name: part}), real) for part, real in fixed_batches(x, batch)]
    first = runs[0][0]
    batched = [out.ndim > 0 and len(out) == batch for out in first]
    return [np.concatenate([r[k][:real] for r, real in runs]) if batched[k] else first[k] for k in range(len(first))]


def _config_from(embedded: str | None, path: Path) -> dict[str, Any]:
    """Metadata embedded in the model file (ONNX), for a file without its sidecar."""
    from ..common.contract import RunConfig, parse

    try:
        config = json.loads(embedded) if embedded else None
    except json.JSONDecodeError:
        config = None
    if not isinstance(config, dict):
        raise ModelLoadError(
            f"{path} has no SkipNet metadata and no {sidecar_path(path).name} beside it; export it with skipnet-export"
        )
    parse(RunConfig, config, f"{path} (embedded metadata)", "re-export it with skipnet-export")
    return config


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """Class probabilities as "logits" (their log, which a softmax turns back into them); zeros
    become float32's smallest log instead of -inf."""
    return np.log(np.clip(np.asarray(probs, np.float32), np.finfo(np.float32).tiny, None))


class TFLiteBackend:
    """LiteRT interpreter (ai-edge-litert, else tflite-runtime); quantised inputs/outputs are handled
    here, and a model that outputs probabilities (its sidecar's output "probabilities") gives their log."""

    format = "tflite"

    def __init__(self, path: Path, threads: int | None = None, config: dict[str, Any] | None = None):
        self.interpreter, self._log = load_interpreter(path, threads)
        self.config = config or _config_from(None, path)
        self.precision = self.config.get("precision", "float32")
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        shape_in, shape_out = list(self.input["shape"]), list(self.output["shape"])
        self.input_side = int(shape_in[1]) if len(shape_in) == 4 else -1
        self.num_outputs = int(shape_out[-1]) if shape_out else -1
        self.probabilities = self.config.get("output", {}).get("name") == "probabilities"

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        # Converted at batch 1 (XNNPACK cannot always reshape), so images go one at a time.
        out = np.concatenate([self._one(pixels[i : i + 1]) for i in range(len(pixels))])
        return log_probabilities(out) if self.probabilities else out

    @property
    def delegation(self) -> dict[str, Any]:
        """What XNNPACK took of the graph here (delegation.py), for comparing platforms."""
        return delegation(self._log, nodes(self.interpreter))

    def _one(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], to_input(x, self.input))
        self.interpreter.invoke()
        return from_output(self.interpreter.get_tensor(self.output["index"]), self.output)


def load_interpreter(path: Path, threads: int | None = None, latest_features: bool = False) -> tuple[Any, str]:
    """A LiteRT interpreter with its tensors allocated, and what LiteRT logged while delegating.
    latest_features: XNNPACK's flag-protected features on (a benchmark's question, not a default)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ModelLoadError(
                "running .tflite models needs ai-edge-litert (pip install 'skipnet-deploy[tflite]') or tflite-runtime"
            ) from None
    _check_tflite_header(path)
    log: list[str] = []
    try:
        with native_stderr_to(log, replay_on_error=False):  # LiteRT's INFO lines are not the user's business
            extra = {"experimental_default_delegate_latest_features": True} if latest_features else {}
            interpreter = Interpreter(model_path=str(path), num_threads=threads, **extra)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelLoadError(f"{path} is not a loadable TFLite model ({first_line(e)}); re-export it") from None
    return interpreter, "".join(log)


def census(path, platform: str = "host", threads: int | None = None) -> dict[str, Any]:
    """The delegation of a .tflite file as LiteRT applies it on ``platform`` ("host" or "arm64")."""
    if platform == "arm64":
        from . import arm64

        worker = arm64.Worker(arm64.platform(), path, threads)
        try:
            return delegation(worker.header["log"], worker.header["ops"])
        finally:
            worker.close()
    interpreter, log = load_interpreter(path, threads)
    return delegation(log, nodes(interpreter))


def check_identifier(path: Path, identifier: bytes, what: str) -> None:
    """Refuse a file without the flatbuffer file identifier (bytes 4..8) of ``what``: never hand a
    runtime random bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] != identifier:
        raise ModelLoadError(f"{path} is not {what} (no {identifier.decode()} identifier); re-export it")


def _check_tflite_header(path: Path) -> None:
    check_identifier(path, b"TFL3", "a TFLite model")


def to_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Raw pixels as a LiteRT input tensor: quantised with its scale and zero point when it has them."""
    scale, zero = detail["quantization"]
    if scale:
        info = np.iinfo(detail["dtype"])
        x = np.clip(np.round(x.astype(np.float32) / scale + zero), info.min, info.max)
    return x.astype(detail["dtype"])


def from_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A LiteRT output tensor as float32, dequantised when it is quantised."""
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale if scale else y.astype(np.float32)


class Arm64Backend:
    """The .tflite file in the aarch64 build of LiteRT (XNNPACK's ARM kernels), in one emulated
    process for the backend's life (arm64.py, arm64_worker.py): batches go over a pipe, and the
    inputs and outputs are quantised here exactly as TFLiteBackend does."""

    format = "tflite"
    platform = "arm64"

    def __init__(self, path: Path, threads: int | None = None, config: dict[str, Any] | None = None):
        from . import arm64

        _check_tflite_header(path)
        self.config = config or _config_from(None, path)
        self.precision = self.config.get("precision", "float32")
        self.probabilities = self.config.get("output", {}).get("name") == "probabilities"
        self.worker = arm64.Worker(arm64.platform(), path, threads)
        weakref.finalize(self, self.worker.close)
        h = self.worker.header
        self.input, self.output = h["input"], h["output"]
        self.input_side = int(self.input["shape"][1]) if len(self.input["shape"]) == 4 else -1
        self.num_outputs = int(self.output["shape"][-1]) if self.output["shape"] else -1
        self.delegation = delegation(h["log"], h["ops"])  # the same census as the host's

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        out = from_output(self.worker.run(to_input(pixels, self.input)), self.output)
        return log_probabilities(out) if self.probabilities else out


class CoreMLBackend:
    """coremltools on macOS (CoreML runs nowhere else). The model is a classifier with an image
    input; "logits" are the log of its class probabilities, so the Predictor's softmax returns
    them unchanged."""

    format = "coreml"

    def __init__(
        self, path: Path, threads: int | None = None, config: dict[str, Any] | None = None, compute_units: str = "ALL"
    ):
        try:
            import coremltools as ct
        except ImportError:
            raise ModelLoadError(
                "running .mlpackage models needs coremltools: pip install 'skipnet-deploy[coreml]'"
            ) from None
        try:  # coremltools has no thread setting; it picks the compute units (CPU only, or all)
            self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as e:  # coremltools raises several types for unreadable packages
            raise ModelLoadError(f"{path} is not a loadable CoreML model ({first_line(e)}); re-export it") from None
        self.config = config or _config_from(None, path)
        self.precision = self.config.get("precision", "float32")
        self.labels = list(self.config["class_names"])
        self.input_side = self.num_outputs = None  # the spec was checked at export (validate_coreml)

    @classmethod
    def for_timing(cls, path: Path, threads: int, config: dict[str, Any] | None = None, compute_units: str = "ALL"):
        return cls(path, threads, config, compute_units)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        from PIL import Image

        rows = []
        for image in pixels:
            probs = self.model.predict({"image": Image.fromarray(image)})["classLabel_probs"]
            rows.append([probs[label] for label in self.labels])
        return log_probabilities(rows)


class MediaPipeBackend:
    """A .tflite through MediaPipe Tasks' ImageClassifier: the API Android and iOS apps call, here
    in its C++ build for this machine. It reads the file's own metadata (labels, input
    normalisation) and is handed each image at the model's input size, so it resizes nothing."""

    format = "tflite"

    def __init__(self, path: Path, threads: int | None = None, config: dict[str, Any] | None = None):
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError:
            raise ModelLoadError(
                "the mediapipe runtime needs mediapipe: pip install 'skipnet-deploy[tflite]'"
            ) from None
        self.config = config or _config_from(None, path)
        self.precision = self.config.get("precision", "float32")
        self.labels = list(self.config["class_names"])
        self.input_side = self.num_outputs = None  # LiteRT's checks apply: it is the same file
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=-1)
        try:
            with native_stderr_to([], replay_on_error=False):
                self.classifier = vision.ImageClassifier.create_from_options(options)
        except Exception as e:  # MediaPipe raises RuntimeError/ValueError with its C++ status text
            raise ModelLoadError(
                f"MediaPipe's ImageClassifier refuses {path} ({first_line(e, 300)}); re-export it"
            ) from None
        weakref.finalize(self, self.classifier.close)  # closed before interpreter exit, not in __del__
        self._image = lambda pixels: mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        rows = np.zeros((len(pixels), len(self.labels)), np.float32)
        for row, image in zip(rows, pixels):
            for c in self.classifier.classify(self._image(image)).classifications[0].categories:
                ours = self.labels[c.index] if c.index < len(self.labels) else None
                if c.category_name != ours:
                    raise ModelLoadError(
                        f"MediaPipe names class {c.index} {c.category_name!r}, the sidecar "
                        f"{ours!r}: the file's metadata is not this model's"
                    )
                row[c.index] = c.score
        return log_probabilities(rows)
