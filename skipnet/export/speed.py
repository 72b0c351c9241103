"""int8 against float on this host, after every int8 export: an int8 file that runs slower than
the float one is never shipped without saying so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..common.contract import Format


def speed_check(
    fmt: Format, int8_path: Path, float_path: Path | None, pixels, config: dict[str, Any], threads: int = 1
) -> dict[str, Any] | None:
    """The sidecar's ``speed``: int8 and float latency (medians) and the int8 speed-up (median of
    per-round ratios), timed side by side for about 2 s at ``threads``; a ``warning`` if int8 is
    slower. None for a float export."""
    if fmt.precision != "int8":
        return None
    if float_path is None or not float_path.exists():
        where = fmt.record.where
        return {
            "skipped": f"{fmt.name} is not timed here: {fmt.record.title} runs only on {where} "
            f"(time it there with skipnet-bench)"
        }
    from ..runtime.timing import speedup

    r = speedup(float_path, int8_path, pixels, config, threads)
    out = {
        "int8_speedup": r["speedup"],
        "float_ms": r["baseline_ms"],
        "int8_ms": r["candidate_ms"],
        "threads": threads,
        "rounds": r["rounds"],
        "img_size": int(pixels.shape[1]),
        "cpu": r["cpu"],
    }
    return with_warning(out, fmt.record.slow_int8)


def with_warning(speed: dict[str, Any], advice: str) -> dict[str, Any]:
    """``speed`` plus, when int8 is the slower file, the ``warning`` to print."""
    s, threads = speed["int8_speedup"], speed["threads"]
    if s < 1:
        speed = dict(
            speed,
            warning=f"int8 runs at {s:.2f}x the speed of float on this CPU ({speed['cpu']}, "
            f"{threads} thread{'s' if threads > 1 else ''}); {advice or 'time it on the phone before shipping it'}",
        )
    return speed


def speed_line(speed: dict[str, Any] | None) -> str:
    """The summary line's clause, e.g. "int8 1.45x faster than float here (2.90 vs 4.21 ms, 1 thread)"."""
    if not speed or "int8_speedup" not in speed:
        return ""
    s = speed["int8_speedup"]
    how = f"{s:.2f}x faster than" if s >= 1 else f"{1 / s:.2f}x slower than"
    return (
        f"int8 {how} float here ({speed['int8_ms']:.2f} vs {speed['float_ms']:.2f} ms, "
        f"{speed['threads']} thread{'s' if speed['threads'] > 1 else ''})"
    )
