"""report.md, report.json and the two plots, built only from the artifacts the steps wrote."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..common import atomic_write_text, path_size, read_json, write_json
from ..common.contract import CONFIG_FILE, FORMATS, sidecar_path
from ..data import dataset_spec
from .config import export_path, gated_format


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3f}" if x < 1 else f"{x:.2f}")


def collect(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Everything the report shows, per model, read from the run, export, eval and bench files."""
    from ..bench import paired_ratio
    from ..runtime.evaluate import gate_failures

    formats = cfg["export"]["formats"]
    gated = gated_format(formats)
    bench = read_json(out / "bench.json") if (out / "bench.json").exists() else {"rows": {}}
    baseline = cfg["baseline"] or (cfg["models"][1] if len(cfg["models"]) > 1 else None)
    models: dict[str, Any] = {}
    for model in cfg["models"]:
        run = read_json(out / "runs" / model / CONFIG_FILE)
        ev = read_json(out / "eval" / f"{model}.json")
        entry: dict[str, Any] = {
            "img_size": run["img_size"],
            "train": {k: run["train"][k] for k in ("recipe", "epochs", "limit_train", "loss")},
            "float_top1": ev["reference"]["top1"],
            "gated_format": gated,
            "gated_top1": ev["top1"],
            "drop_points": ev["reference"]["drop_points"],
            "top1_agreement": ev["reference"]["top1_agreement"],
            "gates": ev["gates"],
            "gate_failures": gate_failures(ev),
            "gate_passed": ev["passed"],
            "eval_images": ev["images"],
            "warnings": run.get("warnings", []),
            "exports": {},
        }
        for fmt in formats:
            path = export_path(out, model, fmt)
            side = read_json(sidecar_path(path))
            entry.setdefault("params", side["complexity"]["params"])
            entry.setdefault("macs", side["complexity"]["macs"])
            if "macs_litert" in side["complexity"]:
                entry["macs_litert"] = side["complexity"]["macs_litert"]
            e = {"path": os.fspath(path), "size_mb": round(path_size(path) / 1e6, 3), "parity": side.get("parity")}
            row = bench["rows"].get(f"{model} {fmt}")
            if row:
                e.update({k: row[k] for k in ("p50_ms", "p90_ms", "mean_ms", "std_ms", "runs")})
                ref = bench["rows"].get(f"{baseline} {fmt}") if baseline else None
                if ref and model != baseline:
                    e["latency_vs_baseline"] = round(paired_ratio(row["times_ms"], ref["times_ms"]), 3)
            entry["exports"][fmt] = e
        models[model] = entry
    return {
        "models": models,
        "baseline": baseline,
        "gated_format": gated,
        "bench": {k: bench.get(k) for k in ("threads", "runs", "img_size")},
    }


def _settings_line(cfg: dict[str, Any], first: dict[str, Any], images_total: int | None) -> str:
    t = first["train"]
    n = f"{t['limit_train']:,}" if t.get("limit_train") else "all"
    of = f" of the {images_total:,}" if images_total and t.get("limit_train") else ""
    return (
        f"{dataset_spec(cfg['data']).title}, {n}{of} training images x {t['epochs']} "
        f"epoch{'s' if t['epochs'] != 1 else ''} "
        f"({t['recipe']} recipe, {'Bias Loss' if t['loss'] == 'bias' else 'cross-entropy'}), "
        f"{first['img_size']}x{first['img_size']} input, accuracy on {first['eval_images']:,} held-out images"
    )


def plots(data: dict[str, Any], out: Path) -> list[str]:
    from ..bench.plots import draw_accuracy, figure, save

    points = []
    for model, m in data["models"].items():
        g = m["exports"].get(m["gated_format"], {})
        points.append({"label": f"{model} float", "model": model, "top1": m["float_top1"], "macs": m["macs"] / 1e6})
        points.append(
            {
                "label": f"{model} {m['gated_format']}",
                "model": model,
                "top1": m["gated_top1"],
                "macs": m["macs"] / 1e6,
                "p50_ms": g.get("p50_ms"),
                "int8": True,
            }
        )
        for fmt, e in m["exports"].items():
            if fmt != m["gated_format"] and e.get("p50_ms") is not None and FORMATS[fmt].precision != "int8":
                points.append(
                    {"label": f"{model} {fmt}", "model": model, "top1": m["float_top1"], "p50_ms": e["p50_ms"]}
                )
    written = []
    for name, x, xlabel in [
        ("accuracy_vs_macs.png", "macs", "MACs (M)"),
        ("accuracy_vs_latency.png", "p50_ms", "latency p50 (ms), this host"),
    ]:
        fig, (ax,) = figure(1)
        draw_accuracy(ax, points, x, xlabel)
        save(fig, out / name, "SkipNet (red) vs baselines (blue); int8 circles, float squares")
        written.append(name)
    return written


def write_report(
    cfg: dict[str, Any], out: Path, steps: dict[str, float], wall: float, command: str | None = None
) -> dict[str, Any]:
    """Write report.json, report.md and the plots; a check that failed (parity after export, an
    accuracy gate) is listed in "failures" and makes "passed" false."""
    from ..bench import cpu_name
    from ..common import DiskFull, UserError

    data = collect(cfg, out)
    models = data["models"]
    first_name = cfg["models"][0]
    first = models[first_name]
    base = data["baseline"]
    gated = data["gated_format"]
    images_total = dataset_spec(cfg["data"]).train_images
    failures: list[str] = []
    for model, m in models.items():
        for fmt, e in m["exports"].items():
            if e["parity"] and not e["parity"].get("passed", True):
                failures.append(f"{model} {fmt}: parity check after export failed")
        failures += [f"{model} {gated}: {why}" for why in m["gate_failures"]]
    try:
        written = plots(data, out)
    except DiskFull:
        raise
    except UserError as e:  # matplotlib is optional
        written = []
        failures_note = f"plots not drawn: {e}"
    else:
        failures_note = None

    summary = [_settings_line(cfg, first, images_total)]
    for model, m in models.items():
        e = m["exports"].get(gated, {})
        summary.append(
            f"{model}: float {_pct(m['float_top1'])} -> {gated} {_pct(m['gated_top1'])} "
            f"(drop {m['drop_points']:.2f} points, gate {'passed' if m['gate_passed'] else 'FAILED'}), "
            f"{m['params'] / 1e6:.2f} M params, {m['macs'] / 1e6:.1f} M MACs, {e.get('size_mb', 0):.2f} MB"
        )
        summary += [f"{model}: {line}" for line in m["warnings"]]
        if not m["gate_passed"]:
            summary.append(f"{model}: {gate_advice(cfg, m)}")
    if base:
        e1, e2 = models[first_name]["exports"].get(gated, {}), models[base]["exports"].get(gated, {})
        if e1.get("p50_ms") is not None and e2.get("p50_ms") is not None:
            summary.append(
                f"{gated} latency ({data['bench']['threads']} thread, this CPU): {first_name} "
                f"{_ms(e1['p50_ms'])} ms vs {base} {_ms(e2['p50_ms'])} ms "
                f"({e1['latency_vs_baseline']:.2f}x, paired over {e1['runs']} interleaved rounds)"
            )
    total = sum(steps.values())
    summary.append(
        f"{'all checks passed' if not failures else f'{len(failures)} check(s) FAILED'}; "
        f"compute time {total / 60:.1f} min over all invocations (this one {wall / 60:.1f} min)"
    )

    report = {
        "images_total": images_total,
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "skipnet_version": __version__,
        "config": cfg,
        **data,
        "steps_seconds": steps,
        "compute_seconds": round(total, 1),
        "wall_seconds_this_run": round(wall, 1),
        "failures": failures,
        "passed": not failures,
        "summary": summary,
        "plots": written,
    }
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", _markdown(cfg, report, failures_note))
    return report


def gate_advice(cfg: dict[str, Any], m: dict[str, Any]) -> str:
    """What to try when ``m``'s gated file failed its gate; for a failed drop gate, how many images
    the drop is and how far it could move on another run over this few images."""
    n, e, fmt = m["eval_images"], cfg["export"], FORMATS[m["gated_format"]]
    tries = []
    if fmt.int8 == "ptq" and f"{fmt.name}-qat" in FORMATS:
        tries.append(
            f"QAT (export: formats: [{fmt.name}-qat], which ships the fine-tuning only when it wins on "
            "held-out training images)"
        )
    if fmt.needs_calibration:
        tries.append(
            f"more calibration images (export: calibration-samples: {2 * e['calibration_samples']}, now "
            f"{e['calibration_samples']})"
        )
    epochs = m["train"]["epochs"]
    tries.append(
        f"more epochs (train: epochs: {2 * epochs}, now {epochs})"
        + (": a weakly trained model's int8 drop varies from run to run" if fmt.precision == "int8" else "")
    )
    said = f"to try: {'; '.join(tries)}"
    if not any(g["gate"] == "max_drop" and not g["passed"] for g in m["gates"]):
        return said
    changed = round((1 - m["top1_agreement"]) * n)  # images the two models answer differently
    margin = 196 * math.sqrt(changed) / n  # 95% of the drop's spread over images like these, in points
    return (
        f"the drop of {m['drop_points']:.2f} points is {round(m['drop_points'] * n / 100)} of {n} images "
        f"(+/-{margin:.1f} points at 95% on this many); {said}"
    )


def _markdown(cfg: dict[str, Any], r: dict[str, Any], note: str | None) -> str:
    models, base, gated = r["models"], r["baseline"], r["gated_format"]
    first = models[cfg["models"][0]]
    t = first["train"]
    short = t.get("limit_train") or t["recipe"] != "full"
    L = ["# SkipNet Deploy pipeline report", ""]
    if r.get("command"):
        L += ["Command:", "", f"    {r['command']}", ""]
    L += [
        f"{r['date']}, {r['cpu']} ({r['cores']} cores), skipnet-deploy {r['skipnet_version']}. "
        f"Settings: `{Path(cfg['out']) / 'pipeline.json'}`.",
        "",
        _settings_line(cfg, first, r["images_total"]) + ".",
    ]
    if short:
        L += [
            "",
            "This is a short training budget so that the whole chain runs in minutes on a CPU; the "
            "accuracies are therefore below what the full recipe reaches (`make demo FULL=1`, or "
            "`skipnet-pipeline --full`: the full recipe on every training image).",
        ]
    L += [
        "",
        "## Accuracy, size and speed",
        "",
        f"Top-1 on the held-out images: float = the PyTorch model, {gated} = the exported file in its runtime, "
        "gated against the float model on the same images. MACs and parameters are counted at the trained input "
        f"size. Latency: p50 of {r['bench']['runs']} interleaved rounds, {r['bench']['threads']} thread, "
        f"this host's CPU" + (f"; ratio against {base}, paired per round" if base else "") + ".",
        "",
        f"| model | params | MACs | float top-1 | {gated} top-1 | drop (points) | agreement | gate | "
        f"{gated} size | {gated} p50 | vs {base or '-'} |",
        "|---" * 11 + "|",
    ]
    for model, m in models.items():
        e = m["exports"].get(gated, {})
        ratio = e.get("latency_vs_baseline")
        L.append(
            f"| {model} | {m['params'] / 1e6:.2f} M | {m['macs'] / 1e6:.1f} M | {_pct(m['float_top1'])} | "
            f"{_pct(m['gated_top1'])} | {m['drop_points']:.2f} | {_pct(m['top1_agreement'], 1)} | "
            f"{'passed' if m['gate_passed'] else '**FAILED**'} | {e.get('size_mb', 0):.2f} MB | "
            f"{_ms(e.get('p50_ms'))} ms | {f'{ratio:.2f}x' if ratio else '-'} |"
        )
    gates = [
        f"top-1 >= {100 * g['threshold']:.1f}%" if g["gate"] == "min_top1" else f"drop <= {g['threshold']} points"
        for g in first["gates"]
    ]
    L += [
        "",
        f"Gates: {'; '.join(gates) or 'none'} (skipnet-eval --reference; reports in `{Path(cfg['out']) / 'eval'}`).",
        "",
        "## Every export",
        "",
        "| model | format | file | size | latency p50 / p90 | vs baseline | parity after export |",
        "|---" * 7 + "|",
    ]
    for model, m in models.items():
        for fmt, e in m["exports"].items():
            p = e.get("parity") or {}
            if "top1_agreement" in p:
                check = (
                    f"{'passed' if p['passed'] else 'FAILED'}: {_pct(p['top1_agreement'], 1)} top-1 agreement"
                    f" with PyTorch on {p['images']:,} images (top-1 {_pct(p['exported_top1'])} vs "
                    f"{_pct(p['torch_top1'])}), max logit diff {p['max_abs_logit_diff']:.2g}"
                )
            elif p:
                check = f"spec checks {'passed' if p.get('passed') else 'FAILED'}; {p.get('numeric', '')}".rstrip("; ")
            else:
                check = "-"
            lat = f"{_ms(e['p50_ms'])} / {_ms(e['p90_ms'])} ms" if "p50_ms" in e else "not timed (CoreML needs macOS)"
            ratio = e.get("latency_vs_baseline")
            L.append(
                f"| {model} | {fmt} | `{e['path']}` | {e['size_mb']:.2f} MB | {lat} | "
                f"{f'{ratio:.2f}x' if ratio else '-'} | {check} |"
            )
    L += ["", "## Plots", ""]
    L += [f"![{p}]({p})" for p in r["plots"]] if r["plots"] else [note or "no plots"]
    L += ["", "## Time", "", "| step | seconds |", "|---|---|"]
    L += [f"| {k} | {v:.0f} |" for k, v in r["steps_seconds"].items()]
    L += [
        f"| **total** | **{r['compute_seconds']:.0f}** |",
        "",
        "Seconds are summed over every invocation that worked on this directory (a resumed pipeline adds to them).",
        "",
        "## Result",
        "",
    ]
    L += [f"- {f}" for f in r["failures"]] or [
        "All exports passed their parity checks and every model passed its gate."
    ]
    L += [f"- {model}: {gate_advice(cfg, m)}" for model, m in models.items() if not m["gate_passed"]]
    warned = [f"- {model}: {line}" for model, m in models.items() for line in m["warnings"]]
    L += ["", *warned] if warned else []
    return "\n".join(L) + "\n"
