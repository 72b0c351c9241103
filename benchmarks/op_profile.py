"""Where the time goes: milliseconds per op type of SkipNet-M and MobileNetV3-Large, float and
int8, in LiteRT (XNNPACK), onnxruntime and ExecuTorch (XNNPACK), 224x224, 1 thread.

    python benchmarks/op_profile.py                                  # both models (about 6 minutes)
    python benchmarks/op_profile.py --out benchmarks/results/issue16/op_profile_before

The files are what skipnet-bench times (the export stage's exporters; fresh weights with
BatchNorm statistics from 64 Fashion-MNIST images: latency does not depend on the weights).

onnxruntime: its own profiler (SessionOptions.enable_profiling), the kernel time of every node
of the optimised graph it runs (fused nodes under their fused names), averaged over --runs calls.

LiteRT's Python interpreter has no op profiler, so each op is cut out into a model of its own
(its constant inputs kept, the others fed random values of their type and quantisation) and timed
alone through the same interpreter and delegate, benchmark_model's op-by-op figure without the
binary: median of --runs blocks of 10 calls, less the per-call cost of the interpreter and the
delegate (a model adding two single floats). The sum is checked against the whole model's time.

ExecuTorch: its own event tracer (ETDump, read by executorch.devtools.Inspector), which records
every XNNPACK operator inside the delegate call and every op left to the portable kernels, in the
whole program's run: the median over --runs calls per op. Recording adds a little to each op, so
the sum of ops exceeds the whole program's time measured without it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import io
import json
import re
import statistics
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch

from skipnet.bench import calibration_pixels, cpu_name, study_out, write_study
from skipnet.bench.core import model_files
from skipnet.common.cli import run_cli
from skipnet.export.tflite_graph import _op_name, _schema, load_model
from skipnet.runtime.executorch_runtime import size_thread_pool

FORMATS = ("tflite", "tflite-int8", "onnx", "onnx-int8", "executorch", "executorch-int8")
RUNTIMES = {"tflite": "LiteRT (XNNPACK)", "onnx": "onnxruntime (CPU)", "executorch": "ExecuTorch (XNNPACK)"}


def _interpreter(content: bytes, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=threads)
    it.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in it.get_input_details():
        if np.issubdtype(d["dtype"], np.integer):
            info = np.iinfo(d["dtype"])
            x = rng.integers(info.min, info.max + 1, d["shape"]).astype(d["dtype"])
        else:
            x = rng.normal(0, 1, d["shape"]).astype(d["dtype"])
        it.set_tensor(d["index"], x)
    return it


def _ms_per_call(call, runs: int, block: int = 10) -> float:
    """Median over ``runs`` blocks of ``block`` calls (after 5 unmeasured calls), ms per call."""
    for _ in range(5):
        call()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(block):
            call()
        samples.append((time.perf_counter() - t0) * 1e3 / block)
    return statistics.median(samples)


def _pack(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def single_op_models(path: Path):
    """(op name, output shape, a .tflite holding only that op) for every op of the main subgraph."""
    s, model = _schema(), load_model(path)
    graph = model.subgraphs[0]
    for op in graph.operators:
        m = s.ModelT()
        m.version, m.operatorCodes, m.buffers = 3, model.operatorCodes, [s.BufferT()]
        g = s.SubGraphT()
        g.tensors, g.inputs, index = [], [], {}
        for t in [t for t in op.inputs if t >= 0] + list(op.outputs):
            if t in index:
                continue
            tensor = copy.copy(graph.tensors[t])
            data = model.buffers[tensor.buffer].data
            if data is not None and len(data):
                m.buffers.append(model.buffers[tensor.buffer])
                tensor.buffer = len(m.buffers) - 1
            else:
                tensor.buffer = 0
                if t in op.inputs:
                    g.inputs.append(len(g.tensors))
            index[t] = len(g.tensors)
            g.tensors.append(tensor)
        one = copy.copy(op)
        one.inputs = [index[t] if t >= 0 else t for t in op.inputs]
        one.outputs = [index[t] for t in op.outputs]
        g.operators, g.outputs = [one], [index[t] for t in op.outputs]
        m.subgraphs = [g]
        yield _op_name(model, op), [int(v) for v in graph.tensors[op.outputs[0]].shape], _pack(m)


def _call_overhead(threads: int, runs: int) -> float:
    """One call of a model whose only op adds two single floats, which XNNPACK runs like every op
    of a profiled model: the cost of the interpreter and the delegate, paid once per call."""
    s = _schema()
    m = s.ModelT()
    m.version, m.buffers = 3, [s.BufferT()]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.ADD
    m.operatorCodes = [code]
    tensors = []
    for name in (b"a", b"b", b"y"):
        t = s.TensorT()
        t.name, t.type, t.shape, t.buffer = name, s.TensorType.FLOAT32, np.array([1], np.int32), 0
        tensors.append(t)
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.AddOptions, s.AddOptionsT()
    g = s.SubGraphT()
    g.tensors, g.inputs, g.outputs, g.operators = tensors, [0, 1], [2], [op]
    m.subgraphs = [g]
    return _ms_per_call(_interpreter(_pack(m), threads).invoke, runs)


def tflite_profile(path: Path, threads: int, runs: int) -> dict:
    overhead = _call_overhead(threads, runs)
    ops = []
    for name, shape, content in single_op_models(path):
        ms = max(_ms_per_call(_interpreter(content, threads).invoke, runs) - overhead, 0.0)
        ops.append({"op": name, "shape": shape, "ms": round(ms, 4)})
    whole = _ms_per_call(_interpreter(Path(path).read_bytes(), threads).invoke, runs)
    return {"whole_ms": round(whole, 3), "call_overhead_ms": round(overhead, 4), "ops": ops}


def onnx_profile(path: Path, threads: int, runs: int, work: Path) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as skipnet-bench times it
    opts.enable_profiling, opts.profile_file_prefix = True, str(work / Path(path).stem)
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).uniform(0, 255, [1, *inp.shape[1:]]).astype(np.float32)
    for _ in range(5):
        session.run(None, {inp.name: x})
    t0 = time.perf_counter()
    for _ in range(runs):
        session.run(None, {inp.name: x})
    whole = (time.perf_counter() - t0) * 1e3 / runs
    events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_node = collections.defaultdict(list)
    for e in kernels:
        per_node[(e["args"]["op_name"], e["name"])].append(e["dur"] / 1e3)
    # the last `runs` calls of each node (the profile also holds the warm-up calls)
    ops = [
        {"op": op, "node": node[: -len("_kernel_time")], "ms": round(statistics.fmean(ts[-runs:]), 4)}
        for (op, node), ts in per_node.items()
    ]
    return {"whole_ms": round(whole, 3), "ops": ops}


# Events of an ETDump that hold other events (the call into the delegate, the call of a portable
# op, the whole method), not ops of their own.
_ET_CONTAINERS = {"OPERATOR_CALL", "DELEGATE_CALL", "Method::execute"}
_ET_DELEGATE_OVERHEAD = "XNNPACK delegate call outside its operators (runtime reshape and setup)"


def _et_op_name(event: str) -> str:
    """XNNPACK's operator name without its instance number; a portable op by its ATen name."""
    if event.startswith("native_call_"):
        return "portable " + event.removeprefix("native_call_").removesuffix(".out")
    # XNNPACK's profiler has no name for its int8 h-swish (a table lookup): it says "Invalid Unary Op".
    return re.sub(r" #\d+$", "", event).replace("Invalid Unary Op", "HardSwish (QS8, table lookup)")


def executorch_profile(path: Path, img_size: int, threads: int, runs: int, work: Path) -> dict:
    """Per-op medians from ExecuTorch's event tracer; the whole program timed in blocks of 10 calls
    without it (as tflite_profile times LiteRT)."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, img_size, img_size, 3), dtype=np.uint8))
    plain = Runtime.get().load_program(Path(path)).load_method("forward")  # as skipnet's runtime calls it
    whole = _ms_per_call(lambda: plain.execute([x]), runs)
    module = portable_lib._load_for_executorch(str(path), enable_etdump=True)
    warmup = 5
    for _ in range(warmup + runs):
        module.forward((x,))
    dump = work / (Path(path).stem + ".etdp")
    module.write_etdump_result_to_file(str(dump))
    with _quiet_devtools():
        frame = Inspector(etdump_path=str(dump)).to_dataframe()
    frame = frame[frame.event_block_name == "Execute"]

    def median_of(event: str) -> float:
        return sum(statistics.median(raw[warmup:]) for raw in frame[frame.event_name == event].raw)

    ops = [
        {"op": _et_op_name(name), "event": name, "ms": round(statistics.median(raw[warmup:]), 4)}
        for name, raw in zip(frame.event_name, frame.raw)
        if name not in _ET_CONTAINERS
    ]
    # ExecuTorch's delegate reshapes and sets up the XNNPACK runtime on every call (LiteRT's only
    # when an input's shape changes): the delegate call's time outside its operators.
    inside = sum(o["ms"] for o in ops if not o["op"].startswith("portable"))
    ops.append({"op": _ET_DELEGATE_OVERHEAD, "ms": round(median_of("DELEGATE_CALL") - inside, 4)})
    return {"whole_ms": round(whole, 3), "program_ms": round(median_of("Method::execute"), 3), "ops": ops}


@contextlib.contextmanager
def _quiet_devtools():
    """Inspector prints its parsing notes on stdout and warns that the dump holds no tensors (none
    were asked for: timings only)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def by_type(profile: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for o in profile["ops"]:
        row = out.setdefault(o["op"], {"count": 0, "ms": 0.0})
        row["count"] += 1
        row["ms"] += o["ms"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["ms"]))


def table(profiles: dict, model: str, runtime: str, fmts: tuple[str, str]) -> list[str]:
    a, b = (by_type(profiles[(model, f)]) for f in fmts)
    names = list(dict.fromkeys(list(a) + list(b)))
    lines = [
        f"### {model}, {runtime}",
        "",
        "| op | float: count | float: ms | int8: count | int8: ms |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        fa, fb = a.get(n, {"count": 0, "ms": 0}), b.get(n, {"count": 0, "ms": 0})
        lines.append(f"| {n} | {fa['count'] or ''} | {fa['ms']:.3f} | {fb['count'] or ''} | {fb['ms']:.3f} |")
    sums = [sum(r["ms"] for r in d.values()) for d in (a, b)]
    wholes = [profiles[(model, f)]["whole_ms"] for f in fmts]
    lines += [
        f"| **sum of ops** | | {sums[0]:.3f} | | {sums[1]:.3f} |",
        f"| **whole model, one call** | | {wholes[0]:.3f} | | {wholes[1]:.3f} |",
        "",
    ]
    return lines


# Op types of both XNNPACK runtimes (LiteRT's TFLite names, ExecuTorch's XNNPACK operator names)
# by what they do, so the int8 files compare kind by kind: the first pattern that matches wins.
KINDS = (
    ("input cast uint8 -> float (ExecuTorch portable kernel)", r"^portable"),
    ("delegate call outside its operators (ExecuTorch reshapes XNNPACK's runtime every call)", r"^XNNPACK delegate"),
    ("depthwise convolution", r"^DEPTHWISE_CONV_2D$|DWConv"),
    ("convolution and fully connected (GEMM)", r"^CONV_2D$|^FULLY_CONNECTED$|IGEMM|GEMM"),
    ("explicit padding", r"^PAD$"),
    ("h-swish", r"HARD_SWISH|HardSwish"),
    ("add, multiply, clamp", r"^ADD$|^MUL$|^Add|^Multiply|^Clamp"),
    ("pooling and means", r"AVERAGE_POOL|^MEAN$|Average Pooling|^Mean"),
    ("layout and type conversions", r"QUANTIZE|Transpose|Convert|Reshape|RESHAPE"),
)


def kind_of(op: str) -> str:
    return next((kind for kind, pattern in KINDS if re.search(pattern, op)), "other")


def kinds_table(profiles: dict, model: str) -> list[str]:
    """The int8 files of LiteRT and ExecuTorch, kind by kind (see KINDS)."""
    fmts = ("tflite-int8", "executorch-int8")
    sums = {f: collections.Counter() for f in fmts}
    for f in fmts:
        for o in profiles[(model, f)]["ops"]:
            sums[f][kind_of(o["op"])] += o["ms"]
    lines = [
        f"### {model}, int8: LiteRT against ExecuTorch by kind of op",
        "",
        "| kind | LiteRT int8: ms | ExecuTorch int8: ms | ExecuTorch - LiteRT: ms |",
        "|---|---|---|---|",
    ]
    for kind in [k for k, _ in KINDS] + ["other"]:
        a, b = sums["tflite-int8"][kind], sums["executorch-int8"][kind]
        if a or b:
            lines.append(f"| {kind} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    totals = [sum(sums[f].values()) for f in fmts]
    wholes = [profiles[(model, f)]["whole_ms"] for f in fmts]
    lines += [
        f"| **sum of ops** | {totals[0]:.3f} | {totals[1]:.3f} | {totals[1] - totals[0]:+.3f} |",
        f"| **whole model, one call** | {wholes[0]:.3f} | {wholes[1]:.3f} | {wholes[1] - wholes[0]:+.3f} |",
        "",
        f"Under its event tracer ExecuTorch's program took {profiles[(model, fmts[1])]['program_ms']:.3f} ms per "
        "call (Method::execute: its ops, the delegate's per-call work and the recording); the whole call "
        "above is timed without the tracer.",
        "",
    ]
    return lines


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="skipnet_m,mobilenet_v3_large")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--out", default="benchmarks/results/op_profile")
    a = p.parse_args(argv)
    out = study_out(a.out)
    command = "python benchmarks/op_profile.py" + "".join(f" {arg}" for arg in sys.argv[1:])
    calib = calibration_pixels(64, a.img_size)
    size_thread_pool(a.threads)  # before the .pte exports lower anything: one pool size per process
    profiles = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model in a.models.split(","):
            files = model_files(model, list(FORMATS), a.img_size, calib, work)
            for fmt, path in files.items():
                print(f"profiling {model} {fmt}", file=sys.stderr)
                if fmt.startswith("tflite"):
                    profiles[(model, fmt)] = tflite_profile(path, a.threads, a.runs)
                elif fmt.startswith("onnx"):
                    profiles[(model, fmt)] = onnx_profile(path, a.threads, a.runs, work)
                else:
                    profiles[(model, fmt)] = executorch_profile(path, a.img_size, a.threads, a.runs, work)
    lines = [
        f"# Per-op time, {a.img_size}x{a.img_size}, {a.threads} thread{'s' if a.threads > 1 else ''}",
        "",
        f"Command: `{command}` ({(time.perf_counter() - t0) / 60:.1f} min)",
        "",
        f"Machine: {cpu_name()}; {date.today()}. Milliseconds per call summed over the ops of each type "
        "(LiteRT: each op timed alone, less the interpreter's per-call cost; onnxruntime: its profiler's "
        "kernel times; ExecuTorch: its event tracer, in the whole program's run). The methods differ, so "
        "compare kinds of op within a runtime, and across runtimes only as shares of each one's sum. "
        "See the script's docstring for the method.",
        "",
    ]
    for model in a.models.split(","):
        for fp, runtime in RUNTIMES.items():
            lines += table(profiles, model, runtime, (fp, f"{fp}-int8"))
        lines += kinds_table(profiles, model)
    write_study(
        out,
        "\n".join(lines) + "\n",
        {
            "command": command,
            "cpu": cpu_name(),
            "date": str(date.today()),
            "profiles": {f"{m} {f}": v for (m, f), v in profiles.items()},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="op_profile.py"))
