#!/usr/bin/env python3
"""Times kiln's reference interpreter against onnxruntime on the end-to-end models.

kiln: wall time of `kiln run MODEL --inputs DIR` (a whole process: import, shape
inference and interpretation), median of N runs. onnxruntime: median of N
`session.run` calls, 2 intra-op threads, session creation excluded. The interpreter
is an oracle, not a fast path: this records that it stays usable ("seconds, not
minutes" for a MiniLM-sized model), not a speed goal.

Usage: bench_interp.py [--kiln target/release/kiln] [--models build/models] [--runs 5]
"""
import argparse
import glob
import os
import statistics
import subprocess
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--models", default="build/models")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("names", nargs="*", default=["bert_torchscript", "minilm", "resnet50"])
    a = ap.parse_args()
    print(f"{'model':<18} {'kiln interp (s)':>16} {'onnxruntime (s)':>16} {'ratio':>8}")
    for name in a.names:
        d = os.path.join(a.models, name)
        model, data = os.path.join(d, "model.onnx"), os.path.join(d, "test_data_set_0")
        ts = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            subprocess.run([a.kiln, "run", model, "--backend", "interp", "--inputs", data], check=True, stdout=subprocess.DEVNULL)
            ts.append(time.perf_counter() - t0)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        feeds = {}
        for i, n in enumerate(names):
            t = onnx.TensorProto()
            with open(os.path.join(data, f"input_{i}.pb"), "rb") as f:
                t.ParseFromString(f.read())
            feeds[n] = numpy_helper.to_array(t)
        sess.run(None, feeds)
        rs = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            rs.append(time.perf_counter() - t0)
        k, r = statistics.median(ts), statistics.median(rs)
        print(f"{name:<18} {k:>16.3f} {r:>16.4f} {k / r:>7.0f}x")


if __name__ == "__main__":
    main()
