#!/usr/bin/env python3
"""kiln's Cranelift backend against onnxruntime and numpy, same machine, same run.

  models     a BERT encoder layer (seq 128, hidden 384, 12 heads) and a MiniLM-L6-sized
             model at batch 1: `kiln bench --json` median latency against onnxruntime's
             session.run median (2 intra-op threads, all graph optimizations on).
  matmul     f32 [n,n] x [n,n], n = 256, 512, 1024, 2048: kiln (a one-node ONNX model)
             against numpy.matmul, in GFLOP/s (numpy's BLAS limited to 2 threads).
  attention  one attention head block, [1, 4 heads, S, 64], S = 512, 2048, 4096: the
             unfused graph (MatMul, Mul, Softmax, MatMul, with an S x S score matrix)
             against the same graph fused by kiln's optimizer into one Attention kernel:
             median time and kiln's peak arena bytes for each.

Every model is generated into build/bench/ (never committed). Prints tables with ratios;
asserts nothing. Usage: bench_cpu.py [--kiln target/release/kiln] [--runs 20] [what ...]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import bert  # noqa: E402

OUT = "build/bench"


def kiln_bench(kiln, model, runs, extra=()):
    out = subprocess.run([kiln, "bench", model, "--runs", str(runs), "--json", "--threads", "2", *extra],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ort_median(model, feeds, runs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, feeds)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def models(a):
    print(f"{'model':<28} {'kiln ms':>9} {'ort ms':>9} {'kiln/ort':>9} {'compile ms':>11}")
    cases = {
        "bert_layer_s128_h384": lambda: bert("torchscript", layers=1, hidden=384, heads=12, seq=128, vocab=1000, seed=11),
        "minilm_l6_s128": lambda: bert("torchscript", layers=6, hidden=384, heads=12, seq=128, vocab=1000, seed=3),
    }
    for name, make in cases.items():
        path = os.path.join(OUT, name + ".onnx")
        model, inputs = make()
        onnx.save(model, path)
        k = kiln_bench(a.kiln, path, a.runs, ["--dim", "batch=1", "--dim", "sequence=128"])
        feeds = {"input_ids": np.ones((1, 128), np.int64), "attention_mask": np.ones((1, 128), np.int64)}
        r = ort_median(path, feeds, a.runs)
        print(f"{name:<28} {k['median_ms']:>9.2f} {r:>9.2f} {k['median_ms'] / r:>8.2f}x {k['compile_ms']:>11.0f}")


def matmul(a):
    print(f"{'n':>6} {'kiln GFLOP/s':>13} {'numpy GFLOP/s':>14} {'kiln/numpy':>11}")
    for n in [256, 512, 1024, 2048]:
        path = os.path.join(OUT, f"matmul_{n}.onnx")
        g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], f"matmul_{n}",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), path)
        runs = max(3, a.runs // (n // 256))
        k = kiln_bench(a.kiln, path, runs)
        x = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        y = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
        np.matmul(x, y)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            np.matmul(x, y)
            ts.append(time.perf_counter() - t0)
        flops = 2.0 * n ** 3
        kg, ng = flops / (k["median_ms"] * 1e-3) / 1e9, flops / statistics.median(ts) / 1e9
        print(f"{n:>6} {kg:>13.1f} {ng:>14.1f} {kg / ng:>10.2f}x")


def attention(a):
    print(f"{'S':>6} {'unfused ms':>11} {'fused ms':>9} {'speedup':>8} {'unfused peak MiB':>17} {'fused peak MiB':>15}")
    h, d = 4, 64
    for s in [512, 2048, 4096]:
        path = os.path.join(OUT, f"attention_{s}.onnx")
        nodes = [
            helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", ["q", "kt"], ["scores"]),
            helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
            helper.make_node("Softmax", ["scaled"], ["p"], axis=-1),
            helper.make_node("MatMul", ["p", "v"], ["y"]),
        ]
        shape = [1, h, s, d]
        g = helper.make_graph(nodes, f"attention_{s}",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "qkv"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              [helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0 / np.sqrt(d)])])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), path)
        runs = max(3, a.runs // (s // 512))
        un = kiln_bench(a.kiln, path, runs, ["--no-opt"])
        fu = kiln_bench(a.kiln, path, runs)
        mib = 1024 * 1024
        print(f"{s:>6} {un['median_ms']:>11.2f} {fu['median_ms']:>9.2f} {un['median_ms'] / fu['median_ms']:>7.2f}x "
              f"{(un['peak_bytes'] or 0) / mib:>17.1f} {(fu['peak_bytes'] or 0) / mib:>15.1f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("what", nargs="*", default=["models", "matmul", "attention"])
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    for w in a.what:
        print(f"== {w}")
        {"models": models, "matmul": matmul, "attention": attention}[w](a)


if __name__ == "__main__":
    main()
