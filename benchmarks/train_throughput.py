"""Training throughput (images/s) of full SGD steps, models interleaved step by step.

    python benchmarks/train_throughput.py                       # skipnet_m vs mobilenet_v3_large, 32x32, batch 128
    python benchmarks/train_throughput.py --img-size 64 --formats nchw,channels_last

Each step is forward + Bias Loss (FeatureTap) + backward + SGD update, on random data:
throughput does not depend on pixel values. Variants run round-robin after warm-up so that
machine noise hits all of them alike; the figure is the median step time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from skipnet.models import create_model
from skipnet.training import BiasLoss, FeatureTap


def make_step(name: str, memory_format: str, batch: int, size: int, num_classes: int):
    torch.manual_seed(0)
    model = create_model(name, num_classes).train()
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, num_classes, (batch,))
    if memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    tap, loss_fn = FeatureTap(model), BiasLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> float:
        t = time.perf_counter()
        loss = loss_fn(model(x), y, features=tap.features)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="skipnet_m,mobilenet_v3_large")
    p.add_argument("--formats", default="channels_last", help="comma list of nchw, channels_last")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", default="benchmarks/results/train_throughput.json")
    args = p.parse_args()

    variants = [(m, f) for m in args.models.split(",") for f in args.formats.split(",")]
    steps = {v: make_step(*v, args.batch_size, args.img_size, args.num_classes) for v in variants}
    for v in variants:
        for _ in range(args.warmup):
            steps[v]()
    times: dict = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            times[v].append(steps[v]())

    rows = []
    print(
        f"{'model':<20} {'layout':<14} {'ms/step':>8} {'img/s':>7}   batch {args.batch_size}, "
        f"{args.img_size}x{args.img_size}, {torch.get_num_threads()} threads"
    )
    for (m, f), ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {"model": m, "layout": f, "median_ms": round(med * 1e3, 1), "images_per_s": round(args.batch_size / med, 1)}
        )
        print(f"{m:<20} {f:<14} {med * 1e3:8.1f} {args.batch_size / med:7.0f}")
    result = {
        "command": "python " + " ".join(sys.argv),
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "img_size": args.img_size,
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
