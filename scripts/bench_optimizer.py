#!/usr/bin/env python3
"""Optimizer time against graph size: BERT-base-shaped encoders (hidden 768, 12 heads,
FFN 3072, seq 128, TorchScript-exporter form) with 1, 6, 12 and 24 layers.

For each size: `kiln opt MODEL --report R.json --dim batch=1 --dim sequence=128` (release
binary), N runs; prints the median of the report's compile_ms (the optimizer alone:
graph -> e-graph, phases, extraction), the whole process's wall time, the kernels and
the stop reason of each phase. Models are generated into build/bench/ (never committed).
This is a benchmark, not a test: it asserts nothing.

Usage: bench_optimizer.py [--kiln target/release/kiln] [--runs 3] [--layers 1 6 12 24]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import bert  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--layers", type=int, nargs="*", default=[1, 6, 12, 24])
    ap.add_argument("--out", default="build/bench")
    ap.add_argument("--extractor", default="greedy")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    print(f"{'layers':>6} {'nodes':>6} {'optimize ms':>12} {'process s':>10} {'kernels':>8}  phases (stop reason, e-nodes)")
    for n in a.layers:
        path = os.path.join(a.out, f"bert_base_{n}.onnx")
        if not os.path.exists(path):
            model, _ = bert("torchscript", layers=n, hidden=768, heads=12, seq=128, vocab=1000, seed=n)
            onnx.save(model, path)
        report = os.path.join(a.out, f"bert_base_{n}.report.json")
        opt_ms, wall = [], []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            subprocess.run([a.kiln, "opt", path, "--report", report, "--extractor", a.extractor,
                            "--dim", "batch=1", "--dim", "sequence=128", "-o", os.devnull],
                           check=True, stderr=subprocess.DEVNULL)
            wall.append(time.perf_counter() - t0)
            with open(report) as f:
                r = json.load(f)
            opt_ms.append(r["compile_ms"])
        nodes = len(onnx.load(path, load_external_data=False).graph.node)
        phases = ", ".join(f"{p['name']}: {p['stop_reason']} {p['egraph_nodes']}" for p in r["phases"])
        print(f"{n:>6} {nodes:>6} {statistics.median(opt_ms):>12.1f} {statistics.median(wall):>10.2f} {r['kernels']:>8}  {phases}")


if __name__ == "__main__":
    main()
