"""Runs a .tflite file in the aarch64 build of LiteRT, inside the emulated arm64 platform (arm64.py).

It imports only the standard library, numpy and ai_edge_litert: the emulated Python has nothing
else. Started once per model as ``python3 arm64_worker.py MODEL THREADS``, it writes one JSON
line describing the loaded model (tensors, the ops the interpreter runs, the LiteRT log that
says what XNNPACK took), then answers batches: each request and each answer on the pipes is an
8-byte little-endian length followed by a .npy array (a length of 0 ends the worker). A batch
is the model's input tensor stacked N times, already in its dtype; the answer is the raw output
tensors stacked the same way.
"""

import io
import json
import os
import platform
import struct
import sys
import tempfile

import numpy as np


def _tensor(detail):
    scale, zero = detail["quantization"]
    return {
        "index": int(detail["index"]),
        "shape": [int(s) for s in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "quantization": [float(scale), int(zero)],
    }


def _node(op):
    return {
        "index": int(op["index"]),
        "op_name": op["op_name"],
        "inputs": [int(t) for t in op["inputs"]],
        "outputs": [int(t) for t in op["outputs"]],
    }


def _load(path, threads):
    """The interpreter, and what LiteRT wrote to file descriptor 2 while delegating (its INFO lines)."""
    from ai_edge_litert.interpreter import Interpreter

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            interpreter = Interpreter(model_path=path, num_threads=threads)
            interpreter.allocate_tensors()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            text = log.read().decode("utf-8", "replace")
    return interpreter, text


def _read(stream, n):
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("the host closed the pipe")
    return data


def main(path, threads):
    out, inp = sys.stdout.buffer, sys.stdin.buffer
    interpreter, log = _load(path, threads)
    i, o = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    ops = [_node(op) for op in interpreter._get_ops_details()]
    header = {
        "machine": platform.machine(),
        "numpy": np.__version__,
        "input": _tensor(i),
        "output": _tensor(o),
        "ops": ops,
        "log": log,
    }
    out.write((json.dumps(header) + "\n").encode())
    out.flush()
    while True:
        (n,) = struct.unpack("<Q", _read(inp, 8))
        if n == 0:
            return 0
        batch = np.load(io.BytesIO(_read(inp, n)), allow_pickle=False)
        rows = []
        for x in batch:
            interpreter.set_tensor(i["index"], x[None])
            interpreter.invoke()
            rows.append(interpreter.get_tensor(o["index"])[0].copy())
        buf = io.BytesIO()
        np.save(buf, np.stack(rows), allow_pickle=False)
        out.write(struct.pack("<Q", buf.tell()) + buf.getvalue())
        out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if sys.argv[2] != "default" else None))
