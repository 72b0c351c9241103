"""On-device latency on an Android phone: TensorFlow Lite's benchmark_model through adb.

The .tflite files and the benchmark binary are pushed to a scratch folder on the device, timed
one after another, and the folder is removed again, also when a run fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..common import UserError

REMOTE_DIR = "/data/local/tmp/skipnet_bench"
_NUM = r"([0-9.]+(?:e[+-]?[0-9]+)?)"
_SUMMARY = re.compile(
    rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
    rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}"
)
_COUNT = re.compile(
    rf"count=(\d+) first={_NUM} curr={_NUM} min={_NUM} max={_NUM} avg={_NUM} std={_NUM}"
    rf"(?: p5={_NUM} median={_NUM} p95={_NUM})?"
)
_MEMORY = re.compile(
    rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
    rf"init={_NUM} overall={_NUM}"
)
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUM}")


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """Timing and memory figures of one benchmark_model run, in ms and MB.

    Reads the summary line ("Inference timings in us: ..."), the last "count=..." line (the timed
    runs, after the warm-up's), and the memory lines, with or without a log prefix ("INFO: ").
    """
    summary = _SUMMARY.search(text)
    if summary is None:
        raise ValueError("no 'Inference timings in us' line: benchmark_model did not finish a run")
    init, first, warmup, avg = (float(v) / 1e3 for v in summary.groups())
    out: dict[str, Any] = {"init_ms": init, "first_ms": first, "warmup_avg_ms": warmup, "mean_ms": avg}
    counts = _COUNT.findall(text)
    if counts:
        count, _first, _curr, lo, hi, mean, std, p5, median, p95 = counts[-1]
        out.update(runs=int(count), min_ms=float(lo) / 1e3, max_ms=float(hi) / 1e3, std_ms=float(std) / 1e3)
        if median:
            out.update(p5_ms=float(p5) / 1e3, p50_ms=float(median) / 1e3, p95_ms=float(p95) / 1e3)
    memory = _MEMORY.search(text)
    if memory:
        out.update(memory_init_mb=float(memory.group(1)), memory_overall_mb=float(memory.group(2)))
    peak = _PEAK.search(text)
    if peak:
        out["memory_peak_mb"] = float(peak.group(1))
    return out


class Adb:
    """adb, optionally for one device (--serial); every call checked, its output returned."""

    def __init__(self, serial: str | None = None, adb: str = "adb"):
        self.exe = shutil.which(adb)
        if self.exe is None:
            raise UserError(
                "adb not found on PATH: install Android platform-tools (sdkmanager 'platform-tools' "
                "or apt-get install adb)"
            )
        self.serial = serial

    def require_device(self) -> None:
        try:
            state = self("get-state", timeout=30).strip()
        except UserError:
            state = ""
        if state != "device":
            where = f" with serial {self.serial}" if self.serial else ""
            raise UserError(
                f"no Android device{where} attached: connect one with USB debugging on "
                "(`adb devices` lists it), or pass --serial"
            )

    def __call__(self, *args: str, timeout: float = 600) -> str:
        cmd = [self.exe, *(["-s", self.serial] if self.serial else []), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise UserError(f"adb {' '.join(args[:2])} failed: {msg[-1] if msg else f'exit {r.returncode}'}")
        return r.stdout


def check_binary(benchmark_binary: str | Path) -> Path:
    binary = Path(benchmark_binary)
    if not binary.is_file():
        raise UserError(
            f"--benchmark-binary {binary} does not exist: download TensorFlow Lite's benchmark_model "
            "for your phone's ABI (android_aarch64) and pass its path"
        )
    return binary


def run_on_android(
    models: list[tuple[str, Path]],
    benchmark_binary: str | Path,
    serial: str | None = None,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    delegate: str | None = None,
) -> list[dict[str, Any]]:
    """Time each (name, .tflite path) on the attached phone; one row per model."""
    binary = check_binary(benchmark_binary)
    if delegate not in (None, "gpu", "nnapi"):
        raise UserError(f"--delegate {delegate}: choose gpu or nnapi (CPU with XNNPACK is the default)")
    adb = Adb(serial)
    adb.require_device()
    remote_binary = f"{REMOTE_DIR}/benchmark_model"
    rows = []
    adb("shell", f"mkdir -p {REMOTE_DIR}")
    try:
        adb("push", str(binary), remote_binary)
        adb("shell", f"chmod 755 {remote_binary}")
        device = adb("shell", "getprop ro.product.model").strip()
        for name, path in models:
            remote = f"{REMOTE_DIR}/{Path(path).name}"
            adb("push", str(path), remote)
            flags = [
                f"--graph={remote}",
                f"--num_threads={threads}",
                f"--num_runs={runs}",
                f"--warmup_runs={warmup}",
                "--use_xnnpack=true",
            ]
            if delegate:
                flags.append(f"--use_{delegate}=true")
            text = adb("shell", " ".join([remote_binary, *flags]))
            try:
                row = parse_benchmark_model(text)
            except ValueError as e:
                raise UserError(
                    f"benchmark_model on {device or 'the device'} gave no timing for {path} ({e}); "
                    "run the same command with adb shell to see why"
                ) from None
            row.update(
                model=name,
                file=str(path),
                device=device,
                threads=threads,
                runtime=f"benchmark_model ({delegate or 'CPU, XNNPACK'})",
            )
            rows.append(row)
            adb("shell", f"rm -f {remote}")
    finally:
        adb("shell", f"rm -rf {REMOTE_DIR}")
    return rows
