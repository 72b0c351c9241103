"""The main job end to end: train, export, gate, benchmark, report. Each step writes its artifacts
under ``out`` and is skipped when they are already there, so an interrupted pipeline started
again resumes where it stopped (a half-trained model resumes from its last checkpoint).

    out/pipeline.json               the resolved settings (a rerun with other settings is refused, except
                                    gate/bench settings and the model list: see Pipeline._start)
    out/runs/MODEL/                 skipnet-train run directories
    out/exports/MODEL[_int8].EXT    skipnet-export files with their .json sidecars
    out/eval/MODEL.json             skipnet-eval report: the gated model against its float run
    out/bench.json                  latency of every exported file, interleaved
    out/steps.json                  seconds spent per step (summed over resumed invocations)
    out/report.md, report.json, accuracy_vs_macs.png, accuracy_vs_latency.png
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..common import UserError, output_to, read_json, write_json
from ..common.cli import signal_exit_code
from ..common.contract import (
    CONFIG_FILE,
    FORMATS,
    LOCK_FILE,
    METRICS_FILE,
    PIPELINE_FILE,
    STATE_FILE,
    check_writable_dir,
    exclusive,
    remove_if_unused,
    sidecar_path,
)
from .config import export_path, gated_format, with_new_keys

# Settings whose change redoes only one step. Models can be added to (or dropped from) a study:
# each model's train/export/gate steps are its own, only the benchmark times all files side by side.
REDOABLE = {"gate": "eval", "bench": "bench.json", "models": "bench.json"}
# Everything a pipeline writes in its directory: --overwrite removes these and nothing else.
OUTPUTS = (
    PIPELINE_FILE,
    "runs",
    "exports",
    "eval",
    "logs",
    "bench.json",
    "steps.json",
    "report.md",
    "report.json",
    "accuracy_vs_macs.png",
    "accuracy_vs_latency.png",
)


class Interrupted(Exception):
    """Training was stopped by Ctrl-C or SIGTERM after saving a checkpoint."""

    def __init__(self, signal: int | None):
        super().__init__("interrupted")
        self.signal = signal

    @property
    def exit_code(self) -> int:
        return signal_exit_code(self.signal)


def _finished(run: Path) -> bool:
    """A run whose metrics.csv holds a row for each of its epochs."""
    if not (run / CONFIG_FILE).exists() or not (run / METRICS_FILE).exists():
        return False
    epochs = read_json(run / CONFIG_FILE)["train"]["epochs"]
    rows = (run / METRICS_FILE).read_text(encoding="utf-8").strip().splitlines()[1:]
    return len(rows) >= epochs


class Pipeline:
    def __init__(
        self, cfg: dict[str, Any], progress: bool = True, log: Callable[[str], None] = print, command: str | None = None
    ):
        self.cfg = cfg
        self.command = command
        self.out = Path(cfg["out"])
        self.progress = progress
        self.log = log
        self.steps: dict[str, float] = {}

    # --- bookkeeping ------------------------------------------------------------------------
    def _start(self, overwrite: bool) -> None:
        saved = self.out / PIPELINE_FILE
        if overwrite and saved.exists():  # run() refused a directory that is neither new nor a pipeline's
            for name in OUTPUTS:
                target = self.out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        if saved.exists():
            self._compare(with_new_keys(read_json(saved)))
        write_json(saved, self.cfg)
        steps = self.out / "steps.json"
        self.steps = read_json(steps) if steps.exists() else {}

    def _compare(self, before: dict[str, Any]) -> None:
        """Settings that changed since the directory's last run: refused, or only their step redone."""
        # "out" is where this file lives: a directory moved elsewhere holds the same run.
        changed = sorted(k for k in set(before) | set(self.cfg) if k != "out" and before.get(k) != self.cfg.get(k))
        # New gates or benchmark settings redo only those steps; anything else would mix two runs.
        rest = [k for k in changed if k not in REDOABLE]
        if rest:
            raise UserError(
                f"{self.out} holds a pipeline run with other settings ({', '.join(rest)} "
                "differ); pass --overwrite to start over or choose another --out"
            )
        for key in changed:
            if key == "models":
                old, new = before["models"], self.cfg["models"]
                if set(old) == set(new):
                    continue  # only the order changed
                what = [
                    f"{verb} {', '.join(ms)}"
                    for verb, ms in (
                        ("adding", [m for m in new if m not in old]),
                        ("dropping", [m for m in old if m not in new]),
                    )
                    if ms
                ]
                self.log(f"[models] {'; '.join(what)}: redoing the benchmark")
            else:
                self.log(f"[{key}] settings changed: redoing this step")
            target = self.out / REDOABLE[key]
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)

    def _step(self, name: str, done: bool, what: str, fn: Callable[[], Any]) -> Any:
        if done:
            self.log(f"[{name}] done earlier: {what}")
            return None
        self.log(f"[{name}] {what}")
        t0 = time.perf_counter()
        result = fn()
        self.steps[name] = round(self.steps.get(name, 0.0) + time.perf_counter() - t0, 1)
        write_json(self.out / "steps.json", self.steps)
        return result

    # --- steps ------------------------------------------------------------------------------
    def check_data(self) -> None:
        """Fail in one line before anything runs when the dataset is missing."""
        from ..data import build_datasets

        build_datasets(self.cfg["data"], self.cfg["data_dir"], augment=False)

    def run_dir(self, model: str) -> Path:
        return self.out / "runs" / model

    def train(self, model: str) -> None:
        from ..training import resolve_config, resume, train

        run = self.run_dir(model)

        def go() -> None:
            if (run / STATE_FILE).exists():
                result = resume(run, progress=self.progress)  # a finished run only reports
            else:
                settings = {
                    **self.cfg["train"],
                    "model": model,
                    "data": self.cfg["data"],
                    "data_dir": self.cfg["data_dir"],
                    "out": str(run),
                }
                result = train(resolve_config(settings).validate(), progress=self.progress)
            if result.interrupted:
                raise Interrupted(result.signal)

        resumable = (run / STATE_FILE).exists()
        self._step(f"train {model}", _finished(run), f"{'resume' if resumable else 'train'} {model} -> {run}", go)

    def export(self, model: str, fmt: str) -> None:
        from ..export import ExportOptions, export
        from ..export.speed import speed_line

        path = export_path(self.out, model, fmt)
        sidecar = sidecar_path(path)
        e = self.cfg["export"]
        options = ExportOptions(
            verify_samples=e["verify_samples"],
            data_dir=self.cfg["data_dir"],
            calibration_samples=e["calibration_samples"],
            qat_limit=e["qat_limit"],
            qat_lr=e["qat_lr"],
            qat_epochs=e["qat_epochs"] if FORMATS[fmt].int8 == "qat" else 0,
            full_integer=e["full_integer"],
            batch=e["batch"] if FORMATS[fmt].record.batch_option else None,
        )

        log = self.out / "logs" / f"export_{model}_{fmt}.log"

        def go() -> None:
            # Converters print pages of logs and progress bars: keep them in a file, not on the terminal.
            try:
                with output_to(log):
                    speed = export(self.run_dir(model), fmt, path, options).speed
            except UserError:
                raise
            except Exception:
                self.log(f"  export failed; the converter's output is in {log}")
                raise
            if speed_line(speed):
                self.log(f"  {speed_line(speed)}")
            if speed and "warning" in speed:
                self.log(f"  warning: {speed['warning']}")

        self._step(
            f"export {model} {fmt}",
            path.exists() and sidecar.exists() and self._pair_intact(path, fmt),
            f"{model} {fmt} -> {path} (converter log: {log})",
            go,
        )

    def _pair_intact(self, path: Path, fmt: str) -> bool:
        """An earlier export whose sidecar still describes its model (not one cut short by a kill)."""
        from ..runtime.predictor import model_config

        try:
            model_config(path, FORMATS[fmt])
            return True
        except UserError:
            self.log(f"  {path.name} does not match its sidecar (an export cut short?): exporting it again")
            return False

    def gate(self, model: str) -> None:
        from ..runtime.evaluate import evaluate

        fmt = gated_format(self.cfg["export"]["formats"])
        report_path = self.out / "eval" / f"{model}.json"
        g = self.cfg["gate"]

        def go() -> None:
            report = evaluate(
                export_path(self.out, model, fmt),
                self.cfg["data"],
                self.cfg["data_dir"],
                limit=g["limit"],
                reference=self.run_dir(model),
                min_top1=g["min_top1"],
                max_drop=g["max_drop"],
                progress=self.progress,
            )
            write_json(report_path, report)

        self._step(f"gate {model}", report_path.exists(), f"{model} {fmt} against its float run", go)

    def bench(self) -> None:
        from ..bench import time_files
        from ..data import build_datasets, preprocess_config, sample_pixels

        b = self.cfg["bench"]
        bench_path = self.out / "bench.json"
        files = {
            f"{m} {f}": export_path(self.out, m, f)
            for m in self.cfg["models"]
            for f in self.cfg["export"]["formats"]
            if FORMATS[f].runs_here
        }

        def go() -> None:
            first = read_json(self.run_dir(self.cfg["models"][0]) / CONFIG_FILE)
            _, val, info = build_datasets(self.cfg["data"], self.cfg["data_dir"], augment=False)
            pixels = sample_pixels(val.source, preprocess_config(info, first["img_size"]), 1)[0]
            rows = time_files(
                files, pixels, b["threads"], b["runs"], b["warmup"], keep_times=True, progress=self.progress
            )
            write_json(
                bench_path, {"threads": b["threads"], "runs": b["runs"], "img_size": first["img_size"], "rows": rows}
            )

        if files:
            self._step(
                "bench", bench_path.exists(), f"latency of {len(files)} files, {b['runs']} interleaved rounds", go
            )

    # --- all --------------------------------------------------------------------------------
    def run(self, overwrite: bool = False) -> dict[str, Any]:
        self.check_data()
        check_writable_dir(self.out, "out")
        if (
            self.out.is_dir()
            and not (self.out / PIPELINE_FILE).exists()
            and any(p.name != LOCK_FILE for p in self.out.iterdir())
        ):  # checked before the lock file is made
            raise UserError(
                f"{self.out} exists and is not a pipeline directory (no {PIPELINE_FILE}); choose a new or empty --out"
            )
        created = not self.out.exists()
        try:
            with exclusive(self.out / LOCK_FILE, str(self.out), "wait for it to finish or choose another --out"):
                return self._run(overwrite)
        except BaseException:
            if created:  # failed before writing anything (a full disk): take back the directory it made
                remove_if_unused(self.out, (PIPELINE_FILE,))
            raise

    def _run(self, overwrite: bool) -> dict[str, Any]:
        from .report import write_report

        self._start(overwrite)
        t0 = time.perf_counter()
        models, formats = self.cfg["models"], self.cfg["export"]["formats"]
        for model in models:
            self.train(model)
        for model in models:
            for fmt in formats:
                self.export(model, fmt)
        for model in models:
            self.gate(model)
        self.bench()
        report = write_report(self.cfg, self.out, self.steps, time.perf_counter() - t0, self.command)
        return report


def run_pipeline(
    cfg: dict[str, Any],
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the pipeline described by ``cfg`` (see config.load_config); returns report.json's
    content. ``command``, the command line that ran it, is named in the report."""
    return Pipeline(cfg, progress, log, command).run(overwrite)
