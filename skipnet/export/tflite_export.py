"""TFLite via litert-torch. Input NHWC float32 raw pixels 0..255 (the layout Android/iOS apps feed)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from .qat import qat_tflite_int8, report
from .tflite_convert import export_tflite, quantization_of, quantize_tflite_int8
from .tflite_metadata import write_metadata


class TFLiteExporter:
    """NHWC raw RGB pixels in, class probabilities out, with TFLite metadata (labels, input range and
    normalisation) so MediaPipe's ImageClassifier and the TFLite Task Library take the file as it is.
    Float: float32 in. int8 (PTQ, or QAT fine-tuning first): uint8 pixels in, the probabilities
    still float32 (a float softmax after the int8 graph)."""

    def write(self, job, path: Path) -> dict[str, Any]:
        spec = job.pixel_io("NHWC", "float32", "probabilities")
        pixel_model = job.pixel_model("nhwc", probabilities=True)
        graph = None
        if job.fmt.precision != "int8":
            spec["macs_litert"] = export_tflite(pixel_model, job.img_size, path)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                float_path = Path(tmp) / "float.tflite"
                spec["macs_litert"] = export_tflite(pixel_model, job.img_size, float_path)
                if job.float_copy is not None:
                    shutil.copyfile(float_path, job.float_copy)
                if job.fmt.int8 == "qat":
                    graph, spec["qat"] = qat_tflite_int8(job, float_path, path, progress=True)
                else:
                    quantize_tflite_int8(float_path, job.calibration, path, full_integer=job.options.full_integer)
            q = quantization_of(path)
            spec["int8_graph"] = "full-integer" if job.options.full_integer else "float-prefix"
            spec["input"].update(dtype=q["input"]["dtype"], quantization=q["input"])
        write_metadata(path, dict(job.config, **spec))
        if graph is not None:
            report(spec, graph, job, path)
        return spec
