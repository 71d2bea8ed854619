#!/usr/bin/env python3
"""Builds kiln's end-to-end test models with onnx's helper API, and their
reference outputs with onnxruntime.

Each model goes to OUT/<name>/ in the ONNX test-data layout:
    model.onnx, test_data_set_0/input_<i>.pb, test_data_set_0/output_<i>.pb

Models (random weights, fixed seeds):
  bert_torchscript  BERT-class encoder as torch.onnx's TorchScript exporter emits it
                    (opset 14): decomposed LayerNorm (ReduceMean/Sub/Pow/Sqrt/Div), erf GELU,
                    Shape->Gather->Unsqueeze->Concat->Reshape shape chains, additive mask
                    built from attention_mask with Cast/Sub/Mul, Softmax, pooler Tanh.
  bert_dynamo       the same encoder as the dynamo exporter emits it (opset 18):
                    LayerNormalization, constant Reshape shapes, Where mask, Gelu-free erf form.
  resnet50          ResNet-50 topology (stem, 3-4-6-3 bottleneck blocks, widths 64..2048,
                    BatchNorm after every Conv, residual Adds, GlobalAveragePool, Gemm),
                    real widths at a reduced 64x64 resolution so the test stays quick.
  minilm            bert_torchscript at MiniLM-L6 size (6 layers, hidden 384, 12 heads,
                    seq 128; vocabulary cut to 1000 rows to keep the file small).
  qdq               a QDQ-quantized CNN + classifier (uint8 activations, per-channel int8
                    Conv weights, per-tensor int8 MatMul weights).
  tiny_bert         a 2-layer, hidden-32 bert_torchscript: the README's example.

Usage: make_models.py OUT [names...]
"""
import os
import sys

import numpy as np
import onnx
import onnx.external_data_helper
from onnx import TensorProto, helper, numpy_helper

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover
    ort = None


class Builder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, seed):
        self.nodes, self.inits, self.n = [], [], 0
        self.rng = np.random.default_rng(seed)

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, arr, base="c"):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def weight(self, shape, scale=None, base="w"):
        fan_in = shape[0] if len(shape) == 2 else int(np.prod(shape[1:]))
        scale = scale if scale is not None else 1.0 / np.sqrt(fan_in)
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), base)

    def op(self, op_type, inputs, n_out=1, name=None, **attrs):
        name = name or self.name(f"/{op_type}")
        outs = [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs


def i64(*v):
    return np.array(v, dtype=np.int64)


# ---------------------------------------------------------------- BERT

def layer_norm_decomposed(b, x, hidden, prefix):
    # TorchScript exporter at opset < 17 emits LayerNorm as this chain.
    mean = b.op("ReduceMean", [x], axes=[-1], keepdims=1, name=f"{prefix}/ReduceMean")
    d = b.op("Sub", [x, mean], name=f"{prefix}/Sub")
    sq = b.op("Pow", [d, b.const(np.float32(2.0))], name=f"{prefix}/Pow")
    var = b.op("ReduceMean", [sq], axes=[-1], keepdims=1, name=f"{prefix}/ReduceMean_1")
    ve = b.op("Add", [var, b.const(np.float32(1e-12))], name=f"{prefix}/Add")
    sd = b.op("Sqrt", [ve], name=f"{prefix}/Sqrt")
    n = b.op("Div", [d, sd], name=f"{prefix}/Div")
    g = b.op("Mul", [n, b.const(np.ones(hidden, np.float32) + 0.1 * b.rng.standard_normal(hidden).astype(np.float32))], name=f"{prefix}/Mul")
    return b.op("Add", [g, b.const(0.1 * b.rng.standard_normal(hidden).astype(np.float32))], name=f"{prefix}/Add_1")


def layer_norm_op(b, x, hidden, prefix):
    scale = b.const(np.ones(hidden, np.float32) + 0.1 * b.rng.standard_normal(hidden).astype(np.float32))
    bias = b.const(0.1 * b.rng.standard_normal(hidden).astype(np.float32))
    return b.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=1e-12, name=f"{prefix}/LayerNormalization")


def gelu_erf(b, x, prefix):
    d = b.op("Div", [x, b.const(np.float32(np.sqrt(2.0)))], name=f"{prefix}/Div")
    e = b.op("Erf", [d], name=f"{prefix}/Erf")
    a = b.op("Add", [e, b.const(np.float32(1.0))], name=f"{prefix}/Add")
    m = b.op("Mul", [x, a], name=f"{prefix}/Mul")
    return b.op("Mul", [m, b.const(np.float32(0.5))], name=f"{prefix}/Mul_1")


def linear(b, x, din, dout, prefix):
    y = b.op("MatMul", [x, b.weight([din, dout])], name=f"{prefix}/MatMul")
    return b.op("Add", [b.const(0.02 * b.rng.standard_normal(dout).astype(np.float32)), y], name=f"{prefix}/Add")


def dynamic_shape(b, x, prefix, heads, head_dim):
    """[B, S, H] -> shape tensor [B, S, heads, head_dim] via Shape/Gather/Unsqueeze/Concat."""
    s = b.op("Shape", [x], name=f"{prefix}/Shape")
    bdim = b.op("Gather", [s, b.const(np.int64(0))], axis=0, name=f"{prefix}/Gather")
    s2 = b.op("Shape", [x], name=f"{prefix}/Shape_1")
    sdim = b.op("Gather", [s2, b.const(np.int64(1))], axis=0, name=f"{prefix}/Gather_1")
    ub = b.op("Unsqueeze", [bdim, b.const(i64(0))], name=f"{prefix}/Unsqueeze")
    us = b.op("Unsqueeze", [sdim, b.const(i64(0))], name=f"{prefix}/Unsqueeze_1")
    return b.op("Concat", [ub, us, b.const(i64(heads)), b.const(i64(head_dim))], axis=0, name=f"{prefix}/Concat")


def merge_shape(b, x, prefix, hidden):
    """[B, S, heads, d] -> shape tensor [B, S, hidden]."""
    s = b.op("Shape", [x], name=f"{prefix}/Shape")
    bs = b.op("Slice", [s, b.const(i64(0)), b.const(i64(2))], name=f"{prefix}/Slice")
    return b.op("Concat", [bs, b.const(i64(hidden))], axis=0, name=f"{prefix}/Concat")


def bert(style, layers=2, hidden=64, heads=4, ffn=None, vocab=100, seq=16, batch=1, seed=0):
    ffn = ffn or 4 * hidden
    hd = hidden // heads
    b = Builder(seed)
    ids, mask = "input_ids", "attention_mask"
    ts = style == "torchscript"
    ln = layer_norm_decomposed if ts else layer_norm_op

    # embeddings
    we = b.op("Gather", [b.weight([vocab, hidden], 0.5, "word_embeddings"), ids], name="/embeddings/word_embeddings/Gather")
    if ts:
        s = b.op("Shape", [ids], name="/embeddings/Shape")
        sl = b.op("Gather", [s, b.const(np.int64(1))], axis=0, name="/embeddings/Gather")
        pos = b.op("Range", [b.const(np.int64(0)), sl, b.const(np.int64(1))], name="/embeddings/Range")
        pos = b.op("Unsqueeze", [pos, b.const(i64(0))], name="/embeddings/Unsqueeze")
    else:
        pos = b.const(np.arange(seq, dtype=np.int64)[None, :])
    pe = b.op("Gather", [b.weight([max(seq, 32), hidden], 0.5, "position_embeddings"), pos], name="/embeddings/position_embeddings/Gather")
    tt = b.op("Gather", [b.weight([2, hidden], 0.5, "token_type_embeddings"), b.const(np.zeros((1, seq), np.int64))], name="/embeddings/token_type_embeddings/Gather")
    x = b.op("Add", [we, tt], name="/embeddings/Add")
    x = b.op("Add", [x, pe], name="/embeddings/Add_1")
    x = ln(b, x, hidden, "/embeddings/LayerNorm")

    # extended attention mask: (1 - mask[:, None, None, :]) * -10000  (or Where on bool)
    m = b.op("Unsqueeze", [mask, b.const(i64(1))], name="/Unsqueeze")
    m = b.op("Unsqueeze", [m, b.const(i64(2))], name="/Unsqueeze_1")
    if ts:
        m = b.op("Cast", [m], to=TensorProto.FLOAT, name="/Cast")
        m = b.op("Sub", [b.const(np.float32(1.0)), m], name="/Sub")
        m = b.op("Mul", [m, b.const(np.float32(-10000.0))], name="/Mul")
    else:
        mb = b.op("Cast", [m], to=TensorProto.BOOL, name="/Cast")
        m = b.op("Where", [mb, b.const(np.float32(0.0)), b.const(np.float32(-3.4028234663852886e38))], name="/Where")

    for l in range(layers):
        p = f"/encoder/layer.{l}"
        q = linear(b, x, hidden, hidden, f"{p}/attention/self/query")
        k = linear(b, x, hidden, hidden, f"{p}/attention/self/key")
        v = linear(b, x, hidden, hidden, f"{p}/attention/self/value")
        heads_out = []
        for nm, t in (("query", q), ("key", k), ("value", v)):
            shp = dynamic_shape(b, t, f"{p}/attention/self/{nm}_shape", heads, hd) if ts else b.const(i64(batch, seq, heads, hd))
            r = b.op("Reshape", [t, shp], name=f"{p}/attention/self/Reshape_{nm}")
            perm = [0, 2, 3, 1] if nm == "key" else [0, 2, 1, 3]
            heads_out.append(b.op("Transpose", [r], perm=perm, name=f"{p}/attention/self/Transpose_{nm}"))
        qh, kh, vh = heads_out
        sc = b.op("MatMul", [qh, kh], name=f"{p}/attention/self/MatMul")
        sc = b.op("Div", [sc, b.const(np.float32(np.sqrt(hd)))], name=f"{p}/attention/self/Div")
        sc = b.op("Add", [sc, m], name=f"{p}/attention/self/Add")
        pr = b.op("Softmax", [sc], axis=-1, name=f"{p}/attention/self/Softmax")
        ctx = b.op("MatMul", [pr, vh], name=f"{p}/attention/self/MatMul_1")
        ctx = b.op("Transpose", [ctx], perm=[0, 2, 1, 3], name=f"{p}/attention/self/Transpose")
        shp = merge_shape(b, ctx, f"{p}/attention/self/merge", hidden) if ts else b.const(i64(batch, seq, hidden))
        ctx = b.op("Reshape", [ctx, shp], name=f"{p}/attention/self/Reshape")
        ao = linear(b, ctx, hidden, hidden, f"{p}/attention/output/dense")
        x = ln(b, b.op("Add", [ao, x], name=f"{p}/attention/output/Add"), hidden, f"{p}/attention/output/LayerNorm")
        h = linear(b, x, hidden, ffn, f"{p}/intermediate/dense")
        h = gelu_erf(b, h, f"{p}/intermediate/intermediate_act_fn")
        o = linear(b, h, ffn, hidden, f"{p}/output/dense")
        x = ln(b, b.op("Add", [o, x], name=f"{p}/output/Add"), hidden, f"{p}/output/LayerNorm")

    last = b.op("Identity", [x], name="/last_hidden_state")
    first = b.op("Gather", [x, b.const(np.int64(0))], axis=1, name="/pooler/Gather")
    pooled = b.op("Tanh", [linear(b, first, hidden, hidden, "/pooler/dense")], name="/pooler/activation/Tanh")

    b.nodes.append(helper.make_node("Identity", [last], ["last_hidden_state"], name="/out/Identity"))
    b.nodes.append(helper.make_node("Identity", [pooled], ["pooler_output"], name="/out/Identity_1"))
    dims = ["batch", "sequence"] if ts else [batch, seq]
    g = helper.make_graph(
        b.nodes, f"bert_{style}",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, dims),
         helper.make_tensor_value_info(mask, TensorProto.INT64, dims)],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, dims + [hidden]),
         helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, dims[:1] + [hidden])],
        b.inits)
    opset = 14 if ts else 18
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="kiln make_models.py", ir_version=8)
    rng = np.random.default_rng(seed + 1)
    ids_v = rng.integers(0, vocab, (batch, seq)).astype(np.int64)
    mask_v = np.ones((batch, seq), np.int64)
    mask_v[:, seq - seq // 4:] = 0  # padding at the end
    return model, [ids_v, mask_v]


# ---------------------------------------------------------------- ResNet-50

def resnet50(res=64, classes=1000, seed=0, blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512)):
    b = Builder(seed)

    def conv_bn(x, cin, cout, k, stride, pfx, relu=True):
        w = b.weight([cout, cin, k, k], np.sqrt(2.0 / (cin * k * k)))
        y = b.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, name=f"{pfx}/conv")
        scale = b.const((1.0 + 0.1 * b.rng.standard_normal(cout)).astype(np.float32))
        bias = b.const((0.1 * b.rng.standard_normal(cout)).astype(np.float32))
        mean = b.const((0.1 * b.rng.standard_normal(cout)).astype(np.float32))
        var = b.const((1.0 + 0.1 * np.abs(b.rng.standard_normal(cout))).astype(np.float32))
        y = b.op("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-5, name=f"{pfx}/bn")
        return b.op("Relu", [y], name=f"{pfx}/relu") if relu else y

    x = conv_bn("input", 3, 64, 7, 2, "/stem")
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], name="/stem/maxpool")
    cin = 64
    for stage, (n, w) in enumerate(zip(blocks, widths)):
        for i in range(n):
            stride = 2 if (i == 0 and stage > 0) else 1
            pfx = f"/layer{stage + 1}.{i}"
            y = conv_bn(x, cin, w, 1, 1, f"{pfx}/conv1")
            y = conv_bn(y, w, w, 3, stride, f"{pfx}/conv2")
            y = conv_bn(y, w, 4 * w, 1, 1, f"{pfx}/conv3", relu=False)
            sc = conv_bn(x, cin, 4 * w, 1, stride, f"{pfx}/downsample", relu=False) if i == 0 else x
            x = b.op("Relu", [b.op("Add", [y, sc], name=f"{pfx}/add")], name=f"{pfx}/relu")
            cin = 4 * w
    x = b.op("GlobalAveragePool", [x], name="/avgpool")
    x = b.op("Flatten", [x], axis=1, name="/flatten")
    b.nodes.append(helper.make_node("Gemm", [x, b.weight([classes, cin]), b.const(np.zeros(classes, np.float32))], ["logits"], transB=1, name="/fc/Gemm"))
    g = helper.make_graph(b.nodes, "resnet50",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, res, res])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="kiln make_models.py", ir_version=8)
    x = np.random.default_rng(seed + 1).standard_normal((1, 3, res, res)).astype(np.float32)
    return model, [x]


# ---------------------------------------------------------------- QDQ-quantized CNN + MLP

def qdq(seed=0, res=16):
    """A statically quantized model in the QDQ form PyTorch's quantization flow and
    onnxruntime's quantizer export: uint8 activations (per-tensor scale and zero point),
    int8 weights quantized per output channel (axis 0) for Conv and per tensor for
    MatMul, int32 biases, each float op wrapped in DequantizeLinear ... QuantizeLinear."""
    b = Builder(seed)

    def q(x, scale, zp, pfx):
        s, z = b.const(np.float32(scale)), b.const(np.uint8(zp))
        y = b.op("QuantizeLinear", [x, s, z], name=f"{pfx}/QuantizeLinear")
        return b.op("DequantizeLinear", [y, s, z], name=f"{pfx}/DequantizeLinear")

    def qweight(w, axis, pfx):
        if axis is None:
            scale = np.float32(np.abs(w).max() / 127)
        else:
            scale = (np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127).astype(np.float32)
        wq = np.clip(np.round(w / (scale if axis is None else scale.reshape(-1, *[1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
        zp = np.zeros_like(scale, dtype=np.int8)
        attrs = {} if axis is None else {"axis": axis}
        return b.op("DequantizeLinear", [b.const(wq), b.const(scale), b.const(zp)], name=f"{pfx}/w/DequantizeLinear", **attrs)

    x = q("input", 0.02, 128, "/input")
    cin = 3
    for i, cout in enumerate([8, 16]):
        w = (b.rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        y = b.op("Conv", [x, qweight(w, 0, f"/conv{i}"), b.const((0.05 * b.rng.standard_normal(cout)).astype(np.float32))],
                 kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], name=f"/conv{i}/Conv")
        y = b.op("Relu", [y], name=f"/conv{i}/Relu")
        x = q(y, 0.03, 0, f"/conv{i}/out")
        cin = cout
    x = b.op("GlobalAveragePool", [x], name="/pool")
    x = b.op("Flatten", [x], axis=1, name="/flatten")
    x = q(x, 0.02, 0, "/flat")
    w = (b.rng.standard_normal((cin, 10)) / np.sqrt(cin)).astype(np.float32)
    y = b.op("MatMul", [x, qweight(w, None, "/fc")], name="/fc/MatMul")
    y = b.op("Add", [y, b.const((0.05 * b.rng.standard_normal(10)).astype(np.float32))], name="/fc/Add")
    yq = q(y, 0.01, 128, "/logits")
    b.nodes.append(helper.make_node("Identity", [yq], ["logits"], name="/out"))
    g = helper.make_graph(b.nodes, "qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, res, res])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln make_models.py", ir_version=8)
    x = np.random.default_rng(seed + 1).uniform(-1, 1, (1, 3, res, res)).astype(np.float32)
    return model, [x]


# ---------------------------------------------------------------- small cases for error tests

def ext_data():
    """A MatMul whose weight lives in an external-data file (weights.bin)."""
    b = Builder(5)
    w = b.weight([8, 4])
    b.nodes.append(helper.make_node("MatMul", ["x", w], ["y"], name="/MatMul"))
    g = helper.make_graph(b.nodes, "ext_data", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    return model, [np.random.default_rng(6).standard_normal((2, 8)).astype(np.float32)]


def unknown_op():
    """A model with an op no ONNX opset has (written without the checker)."""
    n = helper.make_node("FancyOp", ["x"], ["y"], name="fancy_node")
    g = helper.make_graph([n], "unknown_op", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), None


def future_opset():
    n = helper.make_node("Relu", ["x"], ["y"], name="relu")
    g = helper.make_graph([n], "future_opset", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 999)], ir_version=8), None


MODELS = {
    "ext_data": ext_data,
    "unknown_op": unknown_op,
    "future_opset": future_opset,
    "bert_torchscript": lambda: bert("torchscript", layers=2, hidden=64, heads=4, seq=16),
    "bert_dynamo": lambda: bert("dynamo", layers=2, hidden=64, heads=4, seq=16),
    "minilm": lambda: bert("torchscript", layers=6, hidden=384, heads=12, seq=128, vocab=1000, seed=3),
    "resnet50": lambda: resnet50(),
    "qdq": lambda: qdq(),
    "tiny_bert": lambda: bert("torchscript", layers=2, hidden=32, heads=2, seq=8, vocab=50, seed=7),
}


def write_case(out_dir, model, inputs):
    os.makedirs(os.path.join(out_dir, "test_data_set_0"), exist_ok=True)
    path = os.path.join(out_dir, "model.onnx")
    if inputs is None:  # a deliberately invalid model: no checker, no reference
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
        return
    onnx.save(model, path)
    onnx.checker.check_model(path)
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    for i, (n, v) in enumerate(zip(names, inputs)):
        onnx.save_tensor(numpy_helper.from_array(v, n), os.path.join(out_dir, "test_data_set_0", f"input_{i}.pb"))
    if ort is None:
        raise SystemExit("onnxruntime is needed for reference outputs (scripts/setup-python.sh)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    # op-by-op reference: no fusion (onnxruntime would turn QDQ pairs into integer kernels
    # whose rounding differs from the ONNX definition kiln follows)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, dict(zip(names, inputs)))
    for i, (o, v) in enumerate(zip(model.graph.output, outs)):
        onnx.save_tensor(numpy_helper.from_array(v, o.name), os.path.join(out_dir, "test_data_set_0", f"output_{i}.pb"))


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    out = sys.argv[1]
    names = sys.argv[2:] or [n for n in MODELS if n != "tiny_bert"]
    for n in names:
        model, inputs = MODELS[n]()
        write_case(os.path.join(out, n), model, inputs)
        print(f"wrote {os.path.join(out, n)}")


if __name__ == "__main__":
    main()
