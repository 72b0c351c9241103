"""Pipeline stage: the main job end to end, on top of every other stage.

    cfg = skipnet.pipeline.load_config("my.yaml")        # or load_config() for the demo
    report = skipnet.pipeline.run_pipeline(cfg)           # runs/demo/report.md, report.json, plots

Train each model the same way, export (int8 TFLite, float ONNX, CoreML), gate the int8 model
against its float run, time every exported file interleaved, and write a report. Each step's
artifacts are kept, so a rerun resumes where an interrupted one stopped.
"""

from .config import DEFAULTS, load_config
from .run import Interrupted, run_pipeline

__all__ = ["DEFAULTS", "Interrupted", "load_config", "run_pipeline"]
