#!/usr/bin/env python3
"""Regenerates ONNX's backend node tests for kiln's conformance runner.

Writes every case of ``onnx.backend.test.case.node.collect_testcases()`` (1,884
cases in onnx 1.23.2) into ``<repo>/build/onnx-node-tests/<case name>/`` in the
standard ONNX layout::

    model.onnx
    test_data_set_0/input_<i>.pb     TensorProto (SequenceProto / OptionalProto
    test_data_set_0/output_<i>.pb    for the few non-tensor inputs and outputs)
    case.txt                         metadata for tests/conformance.rs (below)

``case.txt`` holds ``key: value`` lines:

    op:        the op under test, ``Op`` or ``domain:Op`` outside the default
               domain; for a ``*_expanded`` case (the op's function body) the
               op it expands
    expanded:  ``true`` for a function-body expansion of the op, else ``false``
    nodes:     the op types of the model's nodes, in order, space-separated
    opsets:    the model's opset imports, ``domain=version`` (``ai.onnx`` for "")
    rtol, atol: the TestCase's own tolerances
    nontensor: the inputs and outputs that are not tensors (``input 0 sequence``),
               comma-separated, or empty

The data is generated, never committed (``/build`` is git-ignored). A stamp file
(``build/onnx-node-tests/STAMP``) records the onnx version and a hash of this
script; when it matches, the script exits at once (``--force`` regenerates).
Generation goes to a temporary folder that replaces the old one when complete.

Usage: gen-node-tests.py [--out DIR] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "build" / "onnx-node-tests"


def stamp_text() -> str:
    from importlib.metadata import version  # quicker than importing onnx

    script_hash = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return f"onnx {version('onnx')}\ngenerator {script_hash}\n"


def op_label(node) -> str:
    return f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def value_kind(vi) -> str:
    return vi.type.WhichOneof("value") or "undefined"


def serialize(value, vi) -> bytes:
    """One input or output as ONNX's own tools write it (onnx/backend/test/cmd_tools.py)."""
    from onnx import TensorProto, numpy_helper

    kind = value_kind(vi)
    if kind == "map_type":
        return numpy_helper.from_dict(value, vi.name).SerializeToString()
    if kind == "sequence_type":
        return numpy_helper.from_list(value, vi.name).SerializeToString()
    if kind == "optional_type":
        return numpy_helper.from_optional(value, vi.name).SerializeToString()
    if isinstance(value, TensorProto):
        return value.SerializeToString()
    return numpy_helper.from_array(value, vi.name).SerializeToString()


EXPANDED = re.compile(r"_expanded(_ver\d+)?$")


def write_case(case, base_ops: dict[str, str], out: Path) -> None:
    graph = case.model.graph
    d = out / case.name
    d.mkdir(parents=True)
    (d / "model.onnx").write_bytes(case.model.SerializeToString())
    for k, (inputs, outputs) in enumerate(case.data_sets):
        ds = d / f"test_data_set_{k}"
        ds.mkdir()
        for i, x in enumerate(inputs):
            (ds / f"input_{i}.pb").write_bytes(serialize(x, graph.input[i]))
        for i, y in enumerate(outputs):
            (ds / f"output_{i}.pb").write_bytes(serialize(y, graph.output[i]))

    expanded = EXPANDED.search(case.name) is not None
    if expanded:
        base = EXPANDED.sub("", case.name)
        op = base_ops.get(base) or (op_label(graph.node[0]) if graph.node else "?")
    else:
        op = op_label(graph.node[0]) if len(graph.node) == 1 else "?"
    nontensor = [
        f"{side} {i} {value_kind(vi).removesuffix('_type')}"
        for side, vis in (("input", graph.input), ("output", graph.output))
        for i, vi in enumerate(vis)
        if value_kind(vi) != "tensor_type"
    ]
    opsets = " ".join(f"{o.domain or 'ai.onnx'}={o.version}" for o in case.model.opset_import)
    meta = {
        "op": op,
        "expanded": "true" if expanded else "false",
        "nodes": " ".join(op_label(n) for n in graph.node),
        "opsets": opsets,
        "rtol": repr(case.rtol),
        "atol": repr(case.atol),
        "nontensor": ", ".join(nontensor),
    }
    (d / "case.txt").write_text("".join(f"{k}: {v}".rstrip() + "\n" for k, v in meta.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--force", action="store_true", help="regenerate even if the stamp matches")
    args = ap.parse_args()
    out: Path = args.out.resolve()

    stamp = stamp_text()
    if not args.force and (out / "STAMP").is_file() and (out / "STAMP").read_text() == stamp:
        print(f"gen-node-tests: {out} is up to date ({stamp.splitlines()[0]})")
        return 0

    t0 = time.time()
    # The test cases' own numpy code warns on purpose (overflowing casts, log(0)).
    warnings.simplefilter("ignore")
    from onnx.backend.test.case.node import collect_testcases

    cases = collect_testcases()
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        print("gen-node-tests: duplicate case names", file=sys.stderr)
        return 1
    base_ops = {
        c.name: op_label(c.model.graph.node[0])
        for c in cases
        if not EXPANDED.search(c.name) and len(c.model.graph.node) == 1
    }

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for case in cases:
        write_case(case, base_ops, tmp)
    (tmp / "STAMP").write_text(stamp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"gen-node-tests: wrote {len(cases)} cases to {out} in {time.time() - t0:.1f}s ({stamp.splitlines()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
