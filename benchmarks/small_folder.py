"""Training on a few hundred images: a 3-class Fashion-MNIST image folder through the whole pipeline.

    python benchmarks/small_folder.py                       # -> benchmarks/results/small_folder.{md,json}
    python benchmarks/small_folder.py --work /tmp/small3 --seeds 1 --out /tmp/small_folder

Writes T-shirt/top, Trouser and Sneaker as JPEG image folders (300 training and 100 validation
images per class, 64x64, from the Debian Fashion-MNIST files: train/ from its training split,
val/ from its test split), then runs `skipnet-pipeline` on them with models skipnet_xs and
mobilenet_v3_small, 3 epochs at 64x64 and otherwise the defaults (the imagefolder recipe), once per
training seed, and tabulates float and int8 top-1 and the int8 gate over the seeds (a weakly trained
model's int8 drop on 300 images moves by points from run to run), and validation top-1 per epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

from skipnet.bench import cpu_name, study_out, write_study
from skipnet.common.cli import run_cli
from skipnet.data import build_datasets

CLASSES = {0: "tshirt", 1: "trouser", 7: "sneaker"}
PER_CLASS = {"train": 300, "val": 100}
MODELS = ["skipnet_xs", "mobilenet_v3_small"]


def write_folder(root: Path, size: int = 64) -> None:
    """The folder, unless a complete one is there already."""
    if all(
        (root / split / name).is_dir() and len(list((root / split / name).glob("*.jpg"))) == n
        for split, n in PER_CLASS.items()
        for name in CLASSES.values()
    ):
        return
    train, val, _ = build_datasets("fashion-mnist", None, augment=False)
    for split, source in (("train", train.source), ("val", val.source)):
        taken = {label: 0 for label in CLASSES}
        for i in range(len(source)):
            image, label = source[i]
            if label not in CLASSES or taken[label] == PER_CLASS[split]:
                continue
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            gray = Image.fromarray(np.asarray(image, np.uint8)).convert("L")  # the idx files' 28x28 grayscale
            gray.resize((size, size), Image.BILINEAR).convert("RGB").save(folder / f"{i:05d}.jpg", quality=95)
            taken[label] += 1
            if all(v == PER_CLASS[split] for v in taken.values()):
                break


def epochs_of(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(row["val_top1"]) for row in csv.DictReader(f)]


def run_seed(work: Path, seed: int, epochs: int) -> tuple[int, dict, str]:
    """skipnet-pipeline on the folder with training seed ``seed``: exit code, report, stderr."""
    out = work / f"pipeline-seed{seed}"
    config = work / f"pipeline-seed{seed}.yaml"
    config.write_text(
        json.dumps(
            {
                "out": str(out),
                "data": "imagefolder",
                "data-dir": str(work / "data"),
                "models": MODELS,
                "train": {"epochs": epochs, "img-size": 64, "seed": seed},
            }
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "skipnet.pipeline", "--config", str(config), "--quiet"], capture_output=True, text=True
    )  # resumes a seed already (partly) done
    report = json.loads((out / "report.json").read_text()) if run.returncode in (0, 1) else {}
    return run.returncode, report, run.stderr


def _spread(values: list[float]) -> str:
    a = np.asarray(values)
    return f"{a.mean():.2f} ± {a.std(ddof=1) if len(a) > 1 else 0:.2f} ({a.min():.2f} .. {a.max():.2f})"


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/small_folder", help="where the folder and the pipeline's runs go")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=5, help="training seeds 0..N-1, one pipeline each")
    p.add_argument("--out", default="benchmarks/results/small_folder")
    args = p.parse_args(argv)
    out = study_out(args.out)
    work = Path(args.work)
    write_folder(work / "data")
    runs = [run_seed(work, seed, args.epochs) for seed in range(args.seeds)]
    per_seed = {m: [r["models"][m] if r else None for _, r, _ in runs] for m in MODELS}
    cmd = "python benchmarks/small_folder.py " + " ".join(sys.argv[1:])
    lines = [
        f"# A 3-class image folder, {PER_CLASS['train']} training images per class, {args.epochs} epochs at 64x64",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {cpu_name()}; {date.today()}. Pipeline exit codes per seed: "
        f"{[rc for rc, _, _ in runs]} (1: a gate or parity check failed).",
        "",
        f"Top-1 on the {runs[0][1]['models'][MODELS[0]]['eval_images']} validation images, seeds 0..{args.seeds - 1} "
        "(mean ± standard deviation over seeds, and the range); the gate allows a 1-point drop:",
        "",
        "| model | float top-1 | int8 TFLite top-1 | int8 drop (points) | gate passed | int8 agreement |",
        "|---|---|---|---|---|---|",
    ]
    for m in MODELS:
        rows = per_seed[m]
        lines.append(
            f"| {m} | {_spread([100 * r['float_top1'] for r in rows])} | "
            f"{_spread([100 * r['gated_top1'] for r in rows])} | {_spread([r['drop_points'] for r in rows])} | "
            f"{sum(r['gate_passed'] for r in rows)} of {len(rows)} | "
            f"{_spread([100 * r['top1_agreement'] for r in rows])} |"
        )
    lines += [
        "",
        "Per seed (float -> int8, drop in points):",
        "",
        "| model | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " |",
        "|---|" + "---|" * args.seeds,
    ]
    for m in MODELS:
        lines.append(
            f"| {m} | "
            + " | ".join(
                f"{100 * r['float_top1']:.2f} -> {100 * r['gated_top1']:.2f} ({r['drop_points']:+.2f})"
                for r in per_seed[m]
            )
            + " |"
        )
    epochs = {m: epochs_of(work / "pipeline-seed0" / "runs" / m) for m in MODELS}
    lines += [
        "",
        "Validation top-1 after each epoch, seed 0:",
        "",
        "| model | " + " | ".join(f"epoch {e + 1}" for e in range(args.epochs)) + " |",
        "|---|" + "---|" * args.epochs,
    ]
    lines += [f"| {m} | " + " | ".join(f"{100 * v:.2f}%" for v in epochs[m]) + " |" for m in MODELS]
    lines += [
        "",
        "Pipeline summary, seed 0:",
        "",
        "```",
        *runs[0][1].get("summary", [runs[0][2].strip()[-2000:]]),
        "```",
    ]
    write_study(
        out,
        "\n".join(lines) + "\n",
        {
            "command": cmd,
            "cpu": cpu_name(),
            "seeds": args.seeds,
            "val_top1_seed0": epochs,
            "pipeline_exit_codes": [rc for rc, _, _ in runs],
            "per_seed": {
                m: [
                    {k: r[k] for k in ("float_top1", "gated_top1", "drop_points", "gate_passed", "top1_agreement")}
                    for r in per_seed[m]
                ]
                for m in MODELS
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="small_folder.py"))
