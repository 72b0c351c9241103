"""What SkipNet-M's parts cost in place, float and int8, against MobileNetV3-Large (LiteRT, XNNPACK).

    python benchmarks/skipnet_ablation.py --out benchmarks/results/issue16/skipnet_ablation

A per-op profile times each op alone; this times whole networks with one part taken out, so each
figure includes what the delegate fuses and the caches it shares. Variants of SkipNet-M (the
same weights, BatchNorm statistics from Fashion-MNIST images, exported by skipnet-export's
exporters; they are not networks to ship, only to see where the time goes):
  skipnet_m            as shipped
  no-skip-blocks       without skip1 and skip2 (their pools, convolutions and the two joining adds)
  relu-base            the stem's and the base block's h-swish as ReLU: MobileNetV3-Large's
                       first block at 112x112 uses ReLU, SkipNet's uses h-swish
  no-skip-relu-base    both
and mobilenet_v3_large. Rounds interleave every file; ratios are medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from skipnet.bench import calibration_pixels, cpu_name, paired_ratio, study_out, write_study
from skipnet.bench.core import _export, built_model
from skipnet.common.cli import run_cli
from skipnet.models import count_macs
from skipnet.runtime.timing import file_runner, interleaved_times


def _without_skips(self, x: torch.Tensor) -> torch.Tensor:
    x = self.base_block(self.first_layer(x))
    x = self.blocks[1](self.blocks[0](x))
    return self.conv(self.blocks[3](self.blocks[2](x)))


def _relu_base(model: torch.nn.Module) -> None:
    for parent in (model.first_layer, model.base_block.conv):
        for i, m in enumerate(parent):
            if isinstance(m, torch.nn.Hardswish):
                parent[i] = torch.nn.ReLU()


def _variants(calib) -> dict[str, torch.nn.Module]:
    out = {}
    for label in ("skipnet_m", "no-skip-blocks", "relu-base", "no-skip-relu-base"):
        model, _ = built_model("skipnet_m", calib)
        if "no-skip" in label:
            model.forward_features = types.MethodType(_without_skips, model)
        if "relu" in label:
            _relu_base(model)
        out[label] = model
    out["mobilenet_v3_large"] = built_model("mobilenet_v3_large", calib)[0]
    return out


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--out", default="benchmarks/results/skipnet_ablation")
    args = p.parse_args(argv)
    out = study_out(args.out)
    calib = calibration_pixels(64, args.img_size)
    work = Path(tempfile.mkdtemp())
    runners, macs = {}, {}
    for label, model in _variants(calib).items():
        macs[label] = count_macs(model, args.img_size)
        for fmt in ("tflite", "tflite-int8"):
            built = _export(fmt, model, label, args.img_size, calib, work / label)
            runners[(label, fmt)] = file_runner(built["path"], 1, built["config"]).logits
    t0 = time.time()
    times = interleaved_times(runners, calib[:1], args.rounds, warmup=5)
    ref = "mobilenet_v3_large"
    rows = [
        {
            "variant": v,
            "format": f,
            "MACs_M": round(macs[v] / 1e6, 1),
            "median_ms": round(statistics.median(ts), 3),
            "vs_mobilenet_v3_large": round(paired_ratio(ts, times[(ref, f)]), 3),
            "vs_skipnet_m": round(paired_ratio(ts, times[("skipnet_m", f)]), 3),
        }
        for (v, f), ts in times.items()
    ]
    cmd = "python " + " ".join(sys.argv)
    lines = [
        f"# SkipNet-M ablation, {args.img_size}x{args.img_size}, LiteRT XNNPACK, 1 thread",
        "",
        f"Command: `{cmd}` ({(time.time() - t0) / 60:.1f} min of timing)",
        "",
        f"Machine: {cpu_name()}; {time.strftime('%Y-%m-%d')}; {args.rounds} interleaved rounds; latency ratios "
        "are medians of per-round ratios (below 1: faster). Variants: see the script's docstring.",
        "",
        "| variant | format | MACs (M) | median ms | vs MobileNetV3-Large | vs SkipNet-M |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {r['format']} | {r['MACs_M']} | {r['median_ms']:.2f} | "
        f"{r['vs_mobilenet_v3_large']:.3f}x | {r['vs_skipnet_m']:.3f}x |"
        for r in rows
    ]
    write_study(out, "\n".join(lines) + "\n", {"command": cmd, "cpu": cpu_name(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="skipnet_ablation.py"))
