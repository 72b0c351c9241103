"""Benchmark stage: SkipNet against MobileNetV3 per model and runtime format, on this host.

    rows = skipnet.bench.benchmark(["skipnet_m", "mobilenet_v3_large"], ["tflite", "tflite-int8"])

Each model is built by name, given BatchNorm statistics from real images (latency does not depend
on the weights, but int8 scales do), exported with the export stage's own converters, and timed
in its real runtime. This stage comes after export and runtime and may import both: the
benchmark must convert models, which the runtime stage cannot (export imports the runtime); the
timing itself (interleaved rounds, paired ratios) is the runtime stage's (skipnet.runtime.timing),
shared with the export's int8 speed check.
"""

from .core import (
    FORMATS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    benchmark,
    calibration_pixels,
    cpu_name,
    estimate_bn_statistics,
    interleaved_times,
    latency_stats,
    paired_ratio,
    pixel_interpreter,
    study_out,
    time_files,
    write_study,
)

__all__ = [
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "benchmark",
    "calibration_pixels",
    "cpu_name",
    "estimate_bn_statistics",
    "interleaved_times",
    "latency_stats",
    "paired_ratio",
    "pixel_interpreter",
    "study_out",
    "time_files",
    "write_study",
]
