"""What XNNPACK took of a .tflite graph once LiteRT applied it: partitions, and the ops left to the
builtin kernels. The same census for the host's interpreter and for the emulated arm64 one.

LiteRT's Python API has no call for the execution plan. After delegation the graph lists its
original nodes and one DELEGATE node per partition, whose inputs and outputs are the partition's
boundary; a node is delegated when it lies between them.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_REPLACING = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\) node, "
    r"yielding (\d+) partitions"
)


def _is_delegate(name: str) -> bool:
    return name == "DELEGATE" or "Delegate" in name


def nodes(interpreter) -> list[dict[str, Any]]:
    """The graph's nodes as the census reads them (index, op name, input and output tensors)."""
    return [
        {
            "index": int(op["index"]),
            "op_name": op["op_name"],
            "inputs": [int(t) for t in op["inputs"]],
            "outputs": [int(t) for t in op["outputs"]],
        }
        for op in interpreter._get_ops_details()
    ]


def delegation(log: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """{"partitions", "nodes", "delegated_nodes", "builtin_ops": {op: count}, "delegate"} from the
    graph's nodes after delegation and what LiteRT logged while delegating."""
    delegates = [op for op in ops if _is_delegate(op["op_name"])]
    original = [op for op in ops if not _is_delegate(op["op_name"])]
    producer = {t: op for op in original for t in op["outputs"]}
    inside: set[int] = set()
    for d in delegates:
        boundary = set(d["inputs"])
        stack = [t for t in d["outputs"]]
        while stack:
            op = producer.get(stack.pop())
            if op is None or op["index"] in inside:
                continue
            inside.add(op["index"])
            stack += [t for t in op["inputs"] if t not in boundary]
    builtin = Counter(op["op_name"] for op in original if op["index"] not in inside)
    logged = _REPLACING.findall(log)
    return {
        "partitions": len(delegates),
        "nodes": len(original),
        "delegated_nodes": len(inside),
        "builtin_ops": dict(sorted(builtin.items())),
        "delegate": logged[0][2] if logged else ("TfLiteXNNPackDelegate" if delegates else None),
    }


def summary(d: dict[str, Any]) -> str:
    """One line: '1 XNNPACK partition, 64 of 65 nodes; builtin: SOFTMAX x1'."""
    left = ", ".join(f"{op} x{n}" for op, n in d["builtin_ops"].items()) or "none"
    plural = "" if d["partitions"] == 1 else "s"
    return (
        f"{d['partitions']} XNNPACK partition{plural}, {d['delegated_nodes']} of {d['nodes']} nodes; "
        f"left to the builtin kernels: {left}"
    )
