"""One record per backend: a runtime family that model files are exported to and run in.

Every stage reads what it needs of a backend from its record; none branches on a backend's
name. The record names its exporter and runtime classes by import path ("module:Class"), so that
these facts stay here, below every stage, and a converter is imported only when it is used.
Adding a backend: its exporter (skipnet/export) and runtime (skipnet/runtime) modules, one
record in RECORDS, its extra in pyproject.toml, its tests and docs.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError


@dataclass(frozen=True)
class Backend:
    name: str  # what --format takes: NAME, NAME-int8, NAME-int8-qat
    title: str  # in messages: "TFLite"
    extension: str  # the model's file (or, with directory, folder) suffix
    exporter: str  # "module:Class" in skipnet.export: its write(job, path) makes the file
    runtime: str  # "module:Class" in skipnet.runtime: Class(path, threads, config) runs it
    extra: str  # pip install 'skipnet-deploy[EXTRA]'
    needs: tuple[str, ...]  # the modules the extra installs: checked before any work
    runtime_label: tuple[str, str]  # (distribution, "name {version} notes") for benchmark tables
    int8: tuple[str, ...] = ("ptq", "qat")  # int8 variants: "ptq", "qat" or "weights" (weights only)
    directory: bool = False  # the model is a folder (an .mlpackage)
    os: str | None = None  # the only sys.platform its runtime runs on (None: any)
    runtimes: dict[str, str] = field(default_factory=dict)  # other runtimes for its files: name -> "module:Class"
    platforms: dict[str, str] = field(default_factory=dict)  # other machines: name -> "module:Class"
    android: bool = False  # skipnet-bench --android times its files on a phone (benchmark_model)
    full_integer: bool = False  # --full-integer: an int8 graph with no float ops
    batch_option: bool = False  # --batch: its files have a fixed batch size of the user's choice, or any (else 1)
    # skipnet-bench times its float file once per variant: name -> (label, runtime options for for_timing)
    variants: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    slow_int8: str = ""  # what an int8 file slower than float on this host means, and what to do
    qat_exact: bool = False  # a QAT file mirrors the fake-quantised graph op by op (parity.py's stricter bar)
    # Its runtime runs one thread count per process, set by the runtime class's
    # size_thread_pool(threads) before any of its work (lowering included).
    one_thread_count: bool = False

    @property
    def runs_here(self) -> bool:
        return self.os is None or sys.platform == self.os

    @property
    def where(self) -> str:
        return {"darwin": "macOS"}.get(self.os, self.os or "any OS")

    def missing(self) -> list[str]:
        """The modules of its extra that are not installed."""
        return [m for m in self.needs if importlib.util.find_spec(m) is None]

    def require(self, why: str) -> None:
        """Refuse in one line, before any work, when its extra is not installed."""
        if self.missing():
            raise UserError(
                f"{why} needs the {self.title} packages ({', '.join(self.missing())} missing): "
                f"pip install 'skipnet-deploy[{self.extra}]'"
            )

    def size_thread_pool(self, threads: int) -> None:
        """For a one_thread_count backend: fix this process's thread count before any of its work."""
        if self.one_thread_count:
            self.runtime_class().size_thread_pool(threads)

    def exporter_class(self) -> type:
        return load_object(self.exporter)

    def runtime_class(self, runtime: str | None = None, platform: str | None = None) -> type:
        return load_object(
            self.platforms[platform] if platform else self.runtimes[runtime] if runtime else self.runtime
        )


def load_object(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


RECORDS: tuple[Backend, ...] = (
    Backend(
        name="onnx",
        title="ONNX",
        extension=".onnx",
        exporter="skipnet.export.onnx_export:OnnxExporter",
        runtime="skipnet.runtime.backends:OnnxBackend",
        extra="onnx",
        needs=("onnx", "onnxsim", "onnxruntime", "onnxscript"),
        runtime_label=("onnxruntime", "onnxruntime {version} CPU"),
        batch_option=True,
        slow_int8="int8 ONNX pays off on ARM CPUs and with the NNAPI and QNN execution providers; on x86 "
        "ship the float .onnx",
    ),
    Backend(
        name="tflite",
        title="TFLite",
        extension=".tflite",
        exporter="skipnet.export.tflite_export:TFLiteExporter",
        runtime="skipnet.runtime.backends:TFLiteBackend",
        extra="tflite",
        needs=("litert_torch", "ai_edge_litert", "ai_edge_quantizer", "mediapipe"),
        runtime_label=("ai-edge-litert", "LiteRT {version} XNNPACK"),
        runtimes={
            "litert": "skipnet.runtime.backends:TFLiteBackend",
            "mediapipe": "skipnet.runtime.backends:MediaPipeBackend",
        },
        platforms={"arm64": "skipnet.runtime.backends:Arm64Backend"},
        android=True,
        full_integer=True,
        slow_int8="a phone's ARM kernels differ: time it there (skipnet-bench --android) before shipping float instead",
        qat_exact=True,
    ),
    Backend(
        name="coreml",
        title="CoreML",
        extension=".mlpackage",
        exporter="skipnet.export.coreml_export:CoreMLExporter",
        runtime="skipnet.runtime.backends:CoreMLBackend",
        extra="coreml",
        needs=("coremltools",),
        runtime_label=("coremltools", "coremltools {version}"),
        int8=("weights", "qat"),
        directory=True,
        os="darwin",
        variants={
            "coreml-cpu": ("CPU only", {"compute_units": "CPU_ONLY"}),
            "coreml-all": ("all compute units", {"compute_units": "ALL"}),
        },
    ),
    Backend(
        name="executorch",
        title="ExecuTorch",
        extension=".pte",
        exporter="skipnet.export.executorch_export:ExecuTorchExporter",
        runtime="skipnet.runtime.executorch_runtime:ExecuTorchBackend",
        extra="executorch",
        needs=("executorch",),
        runtime_label=("executorch", "ExecuTorch {version} XNNPACK"),
        int8=("ptq",),
        one_thread_count=True,
        slow_int8="a phone's ARM kernels differ: time the .pte there (ExecuTorch's executor_runner) before "
        "shipping float instead",
    ),
)
BACKEND_RECORDS: dict[str, Backend] = {b.name: b for b in RECORDS}


def backend(name: str) -> Backend:
    return BACKEND_RECORDS[name]
