"""Timing models side by side: interleaved rounds, medians, ratios paired by round.

The one implementation behind skipnet-bench, the pipeline's bench step and the export's int8
speed check. It lives in the runtime stage because it only runs models; converting them is the
later stages' business.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

# Untimed calls before each timed one in a round. Right after another runtime ran, a model is
# slower (cold caches, other thread pools winding down): measured +15-35% for LiteRT and
# onnxruntime alternating at 64x64. A few calls restore the steady state of an app that calls its
# model repeatedly, while the round-robin still spreads the machine's drift over every model.
SETTLE_CALLS = 2


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median of the per-round ratios a/b of two series timed in the same rounds: drift between
    rounds hits both sides of each ratio alike."""
    return statistics.median(x / y for x, y in zip(a, b))


def latency_stats(ts: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(ts), 3),
        "p90_ms": round(float(np.percentile(ts, 90)), 3),
        "mean_ms": round(statistics.fmean(ts), 3),
        "std_ms": round(statistics.pstdev(ts), 3),
        "runs": len(ts),
    }


def cpu_name() -> str:
    """The CPU's model name and its widest vector ISA: hosts sold under one name ("AMD EPYC") differ
    in what decides int8 speed (AVX2 only, or AVX-512 with VNNI dot products)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    isa = next(
        (
            label
            for label, need in (
                ("AVX-512 VNNI", {"avx512f", "avx512_vnni"}),
                ("AVX-512", {"avx512f"}),
                ("AVX2", {"avx2"}),
            )
            if need <= flags
        ),
        None,
    )
    name = name or platform.processor() or platform.machine()
    return f"{name} ({isa})" if isa else name


def interleaved_times(
    runners: dict[Any, Callable[[np.ndarray], Any]], x: np.ndarray, runs: int, warmup: int, progress: bool = True
) -> dict[Any, list[float]]:
    """Milliseconds per call of every runner on ``x``: ``warmup`` calls each, then ``runs`` rounds
    that time each runner once, in turn, after SETTLE_CALLS untimed calls."""
    torch_threads = torch.get_num_threads()  # a torch runner sets its own per call
    try:
        for run in runners.values():
            for _ in range(warmup):
                run(x)
        times: dict[Any, list[float]] = {k: [] for k in runners}
        for _ in tqdm(range(runs), desc="timing (interleaved rounds)", disable=not progress):
            for k, run in runners.items():
                for _ in range(SETTLE_CALLS):
                    run(x)
                t0 = time.perf_counter()
                run(x)
                times[k].append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(torch_threads)
    return times


def file_runner(path: str | os.PathLike, threads: int, config: dict[str, Any] | None = None, **options: Any):
    """The backend timing an exported file: its ``logits`` takes raw uint8 NHWC pixels. A runtime
    that times differently from how it predicts has a ``for_timing`` constructor (``options``: a
    backend record's timing variant)."""
    from ..common.contract import format_of_path
    from . import load

    runtime = format_of_path(path).record.runtime_class()
    if hasattr(runtime, "for_timing"):
        return runtime.for_timing(Path(path), threads, config, **options)
    return load(path, threads=threads, config=config).backend


def speedup(
    baseline: str | os.PathLike,
    candidate: str | os.PathLike,
    pixels: np.ndarray,
    config: dict[str, Any],
    threads: int = 1,
    budget_s: float = 2.0,
    rounds: tuple[int, int] = (15, 100),
) -> dict[str, Any]:
    """How much faster ``candidate`` runs than ``baseline`` (two files of one model, both fed
    ``config``'s input) on one image: interleaved rounds, as many as fit in about ``budget_s``
    (within ``rounds``), the median of per-round ratios baseline/candidate."""
    runners = {k: file_runner(p, threads, config).logits for k, p in (("baseline", baseline), ("candidate", candidate))}
    x = pixels[:1]
    t0 = time.perf_counter()
    interleaved_times(runners, x, 0, 3, progress=False)  # warm-up, and the cost of one call of each
    per_round = (time.perf_counter() - t0) / 3 * (1 + SETTLE_CALLS)
    n = int(min(max(budget_s / max(per_round, 1e-6), rounds[0]), rounds[1]))
    times = interleaved_times(runners, x, n, 0, progress=False)
    return {
        "speedup": round(paired_ratio(times["baseline"], times["candidate"]), 3),
        "baseline_ms": latency_stats(times["baseline"])["p50_ms"],
        "candidate_ms": latency_stats(times["candidate"])["p50_ms"],
        "threads": threads,
        "rounds": n,
        "cpu": cpu_name(),
    }
