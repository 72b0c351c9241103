"""Benchmark stage: SkipNet against MobileNetV3 per model and runtime format, on this host.

    rows = skipnet.bench.benchmark(["skipnet_m", "mobilenet_v3_large"], ["tflite", "tflite-int8"])

Each model is built by name, given BatchNorm statistics from real images (latency does not depend
on the weights, but int8 scales do), exported with the export stage's own converters, and timed
in its real runtime. This stage comes after export and runtime and may import both: the
benchmark must convert models, and the export stage already imports the runtime, so timing
cannot live in the runtime stage without an import cycle; here the data flow stays one way.
"""
from .core import (FORMATS, IMAGENET_MEAN, IMAGENET_STD, benchmark, calibration_pixels, cpu_name,
                   estimate_bn_statistics, interleaved_times, latency_stats, paired_ratio, time_files)

__all__ = ["FORMATS", "IMAGENET_MEAN", "IMAGENET_STD", "benchmark", "calibration_pixels", "cpu_name",
           "estimate_bn_statistics", "interleaved_times", "latency_stats", "paired_ratio", "time_files"]
