//! The fusion phase: saturation proofs and end-to-end models.
//!
//! - Saturation proofs: one e-graph holds a naive subgraph (as the
//!   exporters write it) and the fused ONNX op over the same inputs; after
//!   the fusion phase both roots are in the same e-class. For Attention,
//!   LayerNorm, GELU (erf and tanh, several operand orders) and Softmax.
//! - End to end ([`kiln_passes::egraph::optimize`] on the generated models
//!   in `build/models`, made by `scripts/make_models.py`): the BERT encoder
//!   in both PyTorch exporter forms gets one Attention per layer, fused
//!   LayerNorms, GELU in a FusedMatMul epilogue, no bias add outside an
//!   epilogue and at most 9 kernels per layer; ResNet-50 keeps no
//!   BatchNormalization, Relu or residual Add outside FusedConv; and every
//!   optimized graph matches the original on the interpreter (normwise
//!   relative error ≤ 1e-4).
//!
//! Run with `--nocapture` to see kernel counts, ops and errors.

use egg::Runner;
use kiln_frontend::{import_file_with, read_tensor_pb, ImportOptions};
use kiln_ir::{Graph, Op, TargetInfo, Tensor};
use kiln_passes::egraph::build::build;
use kiln_passes::egraph::{optimize, KAnalysis, OptimizeOptions};
use kiln_passes::rules::Phase;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

// ---------------------------------------------------------------- saturation proofs

/// Builds the e-graph of `src` (whose outputs are the naive form and the
/// fused form), runs the algebra then the fusion phase to saturation (or a
/// generous budget), and asserts that all outputs share one e-class.
fn prove_equal(label: &str, src: &str) {
    let g = kiln_ir::text::parse(src, label).unwrap_or_else(|e| panic!("{label}: {e}"));
    kiln_ir::verify::verify(&g).unwrap_or_else(|e| panic!("{label}: {e}"));
    let built = build(&g, KAnalysis::new(vec![])).unwrap_or_else(|e| panic!("{label}: {e}"));
    let mut eg = built.egraph;
    for phase in [Phase::Algebra, Phase::Fusion] {
        let rewrites: Vec<_> = phase.rules().iter().map(|r| r.rewrite().unwrap()).collect();
        let runner = Runner::default()
            .with_egraph(eg)
            .with_iter_limit(30)
            .with_node_limit(50_000)
            .with_time_limit(Duration::from_secs(20))
            .run(&rewrites);
        eprintln!(
            "{label}: {} stopped: {:?}",
            phase.name(),
            runner.stop_reason
        );
        eg = runner.egraph;
        assert!(
            eg.analysis.errors.is_empty(),
            "{label}: {:?}",
            eg.analysis.errors
        );
    }
    let roots: Vec<_> = built.outputs.iter().map(|&r| eg.find(r)).collect();
    assert!(
        roots.iter().all(|&r| r == roots[0]),
        "{label}: the naive and the fused forms are in different e-classes: {roots:?}"
    );
    // and the two outputs really agree on the interpreter (the proof's premise)
    let ins = random_inputs(&g, 7);
    let outs = kiln_ir::interp::run(&g, &ins).unwrap_or_else(|e| panic!("{label}: {e}"));
    for o in &outs[1..] {
        let err = rel_err(&outs[0], o);
        assert!(
            err <= 1e-5,
            "{label}: the forms differ on the interpreter by {err}"
        );
    }
}

/// Uniform in [-2, 2) floats, small integers, from a splitmix64 stream.
fn random_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    g.inputs
        .iter()
        .map(|&v| {
            let ty = g.ty(v);
            let dims = ty.shape.fixed().expect("static test shapes");
            let n: usize = dims.iter().product();
            let vals: Vec<f64> = (0..n).map(|_| next() * 4.0 - 2.0).collect();
            Tensor::from_f64s(ty.dtype, dims, &vals).unwrap()
        })
        .collect()
}

/// `max |a − b| / max |b|` (normwise relative error; 0 for two zero tensors).
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

#[test]
fn layernorm_decomposition_saturates_to_layernormalization() {
    prove_equal(
        "layernorm",
        "graph @g {
  in %0: f32[2,3,8]
  const %1: i64[1] = [-1]
  const %2: f32[] = 2.0
  const %3: f32[] = 1e-12
  const %4: f32[8] = [1.1, 0.9, 1.2, 0.8, 1.0, 1.3, 0.7, 1.05]
  const %5: f32[8] = [0.1, -0.1, 0.2, -0.2, 0.0, 0.3, -0.3, 0.05]
  %6: f32[2,3,1] = ReduceMean[keepdims=1](%0, %1)
  %7: f32[2,3,8] = Sub(%0, %6)
  %8: f32[2,3,8] = Pow(%7, %2)
  %9: f32[2,3,1] = ReduceMean[keepdims=1](%8, %1)
  %10: f32[2,3,1] = Add(%9, %3)
  %11: f32[2,3,1] = Sqrt(%10)
  %12: f32[2,3,8] = Div(%7, %11)
  %13: f32[2,3,8] = Mul(%12, %4)
  %14: f32[2,3,8] = Add(%13, %5)
  %15: f32[2,3,8] = LayerNormalization[axis=-1, epsilon=1e-12](%0, %4, %5)
  out %14, %15
}",
    );
}

#[test]
fn rmsnorm_decomposition_saturates_to_rmsnormalization() {
    prove_equal(
        "rmsnorm",
        "graph @g {
  in %0: f32[2,8]
  const %1: i64[1] = [-1]
  const %2: f32[] = 1e-6
  const %3: f32[8] = [1.1, 0.9, 1.2, 0.8, 1.0, 1.3, 0.7, 1.05]
  %4: f32[2,8] = Mul(%0, %0)
  %5: f32[2,1] = ReduceMean(%4, %1)
  %6: f32[2,1] = Add(%5, %2)
  %7: f32[2,1] = Sqrt(%6)
  %8: f32[2,1] = Reciprocal(%7)
  %9: f32[2,8] = Mul(%0, %8)
  %10: f32[2,8] = Mul(%3, %9)
  %11: f32[2,8] = RMSNormalization[axis=-1, epsilon=1e-6](%0, %3)
  out %10, %11
}",
    );
}

#[test]
fn gelu_erf_forms_saturate_to_gelu() {
    // (x · (1 + erf(x/√2))) · 0.5, as BERT exports write it
    prove_equal(
        "gelu-erf",
        "graph @g {
  in %0: f32[2,6]
  const %1: f32[] = 1.4142135
  const %2: f32[] = 1.0
  const %3: f32[] = 0.5
  %4: f32[2,6] = Div(%0, %1)
  %5: f32[2,6] = Erf(%4)
  %6: f32[2,6] = Add(%5, %2)
  %7: f32[2,6] = Mul(%0, %6)
  %8: f32[2,6] = Mul(%7, %3)
  %9: f32[2,6] = Gelu(%0)
  out %8, %9
}",
    );
    // 0.5 · x first, 1/√2 as a multiplication, 1 + erf commuted
    prove_equal(
        "gelu-erf-2",
        "graph @g {
  in %0: f32[3,4]
  const %1: f32[] = 0.70710677
  const %2: f32[] = 1.0
  const %3: f32[] = 0.5
  %4: f32[3,4] = Mul(%1, %0)
  %5: f32[3,4] = Erf(%4)
  %6: f32[3,4] = Add(%2, %5)
  %7: f32[3,4] = Mul(%3, %0)
  %8: f32[3,4] = Mul(%6, %7)
  %9: f32[3,4] = Gelu(%0)
  out %8, %9
}",
    );
    // x · (0.5 · (1 + erf(x/√2)))
    prove_equal(
        "gelu-erf-3",
        "graph @g {
  in %0: f32[5]
  const %1: f32[] = 1.4142135
  const %2: f32[] = 1.0
  const %3: f32[] = 0.5
  %4: f32[5] = Div(%0, %1)
  %5: f32[5] = Erf(%4)
  %6: f32[5] = Add(%5, %2)
  %7: f32[5] = Mul(%6, %3)
  %8: f32[5] = Mul(%0, %7)
  %9: f32[5] = Gelu(%0)
  out %8, %9
}",
    );
}

#[test]
fn gelu_tanh_forms_saturate_to_gelu_tanh() {
    prove_equal(
        "gelu-tanh",
        "graph @g {
  in %0: f32[2,6]
  const %1: f32[] = 3.0
  const %2: f32[] = 0.044715
  const %3: f32[] = 0.7978846
  const %4: f32[] = 1.0
  const %5: f32[] = 0.5
  %6: f32[2,6] = Pow(%0, %1)
  %7: f32[2,6] = Mul(%2, %6)
  %8: f32[2,6] = Add(%0, %7)
  %9: f32[2,6] = Mul(%3, %8)
  %10: f32[2,6] = Tanh(%9)
  %11: f32[2,6] = Add(%4, %10)
  %12: f32[2,6] = Mul(%5, %0)
  %13: f32[2,6] = Mul(%12, %11)
  %14: f32[2,6] = Gelu[approximate=\"tanh\"](%0)
  out %13, %14
}",
    );
    // x³ as x·Pow(x, 2), the products in another association and order
    prove_equal(
        "gelu-tanh-2",
        "graph @g {
  in %0: f32[4,3]
  const %1: f32[] = 2.0
  const %2: f32[] = 0.044715
  const %3: f32[] = 0.7978846
  const %4: f32[] = 1.0
  const %5: f32[] = 0.5
  %6: f32[4,3] = Pow(%0, %1)
  %7: f32[4,3] = Mul(%0, %6)
  %8: f32[4,3] = Mul(%7, %2)
  %9: f32[4,3] = Add(%8, %0)
  %10: f32[4,3] = Mul(%9, %3)
  %11: f32[4,3] = Tanh(%10)
  %12: f32[4,3] = Add(%11, %4)
  %13: f32[4,3] = Mul(%0, %12)
  %14: f32[4,3] = Mul(%13, %5)
  %15: f32[4,3] = Gelu[approximate=\"tanh\"](%0)
  out %14, %15
}",
    );
}

#[test]
fn softmax_decompositions_saturate_to_softmax() {
    prove_equal(
        "softmax-max",
        "graph @g {
  in %0: f32[2,5]
  const %1: i64[1] = [-1]
  %2: f32[2,1] = ReduceMax(%0, %1)
  %3: f32[2,5] = Sub(%0, %2)
  %4: f32[2,5] = Exp(%3)
  %5: f32[2,1] = ReduceSum(%4, %1)
  %6: f32[2,5] = Div(%4, %5)
  %7: f32[2,5] = Softmax[axis=-1](%0)
  out %6, %7
}",
    );
    prove_equal(
        "softmax-plain",
        "graph @g {
  in %0: f32[3,4,2]
  const %1: i64[1] = [1]
  %2: f32[3,4,2] = Exp(%0)
  %3: f32[3,1,2] = ReduceSum(%2, %1)
  %4: f32[3,4,2] = Div(%2, %3)
  %5: f32[3,4,2] = Softmax[axis=-2](%0)
  out %4, %5
}",
    );
}

/// BERT's self-attention as both exporters write it (3-D Q, K, V after
/// their projections; heads split by Reshape/Transpose, K transposed by
/// the same Transpose; scores divided by √d; a padding mask added).
#[test]
fn bert_attention_saturates_to_3d_attention() {
    prove_equal(
        "attention",
        "graph @g {
  in %0: f32[1,4,8]
  in %1: f32[1,4,8]
  in %2: f32[1,4,8]
  in %3: f32[1,1,1,4]
  const %4: i64[4] = [1, 4, 2, 4]
  const %5: i64[3] = [1, 4, 8]
  const %6: f32[] = 2.0
  %7: f32[1,4,2,4] = Reshape(%0, %4)
  %8: f32[1,2,4,4] = Transpose[perm=[0,2,1,3]](%7)
  %9: f32[1,4,2,4] = Reshape(%1, %4)
  %10: f32[1,2,4,4] = Transpose[perm=[0,2,3,1]](%9)
  %11: f32[1,4,2,4] = Reshape(%2, %4)
  %12: f32[1,2,4,4] = Transpose[perm=[0,2,1,3]](%11)
  %13: f32[1,2,4,4] = MatMul(%8, %10)
  %14: f32[1,2,4,4] = Div(%13, %6)
  %15: f32[1,2,4,4] = Add(%14, %3)
  %16: f32[1,2,4,4] = Softmax[axis=-1](%15)
  %17: f32[1,2,4,4] = MatMul(%16, %12)
  %18: f32[1,4,2,4] = Transpose[perm=[0,2,1,3]](%17)
  %19: f32[1,4,8] = Reshape(%18, %5)
  %20: f32[1,4,8] = Attention[kv_num_heads=2, q_num_heads=2, scale=0.5](%0, %1, %2, %3)
  out %19, %20
}",
    );
}

/// A causal decoder's attention on 4-D heads: Q pre-scaled, a constant
/// −∞ upper triangle, K transposed by an explicit Transpose.
#[test]
fn causal_attention_saturates_to_is_causal() {
    prove_equal(
        "causal-attention",
        "graph @g {
  in %0: f32[1,2,3,4]
  in %1: f32[1,2,3,4]
  in %2: f32[1,2,3,4]
  const %3: f32[] = 0.5
  const %4: f32[3,3] = [0.0, -inf, -inf, 0.0, 0.0, -inf, 0.0, 0.0, 0.0]
  %5: f32[1,2,3,4] = Mul(%0, %3)
  %6: f32[1,2,4,3] = Transpose[perm=[0,1,3,2]](%1)
  %7: f32[1,2,3,3] = MatMul(%5, %6)
  %8: f32[1,2,3,3] = Add(%7, %4)
  %9: f32[1,2,3,3] = Softmax[axis=-1](%8)
  %10: f32[1,2,3,4] = MatMul(%9, %2)
  %11: f32[1,2,3,4] = Attention[is_causal=1, scale=0.5](%0, %1, %2)
  out %10, %11
}",
    );
}

// ---------------------------------------------------------------- end to end

fn models_dir() -> PathBuf {
    let d = std::env::var_os("KILN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/models"));
    assert!(
        d.join("bert_torchscript/model.onnx").is_file(),
        "{} has no generated models: run scripts/test.sh (or `.venv/bin/python scripts/make_models.py build/models`) first",
        d.display()
    );
    d
}

fn test_inputs(dir: &Path) -> Vec<Tensor> {
    let data = dir.join("test_data_set_0");
    (0..)
        .map(|i| data.join(format!("input_{i}.pb")))
        .take_while(|p| p.is_file())
        .map(|p| {
            read_tensor_pb(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .1
        })
        .collect()
}

/// Imports (with `dims` bound), simplifies and optimizes model `name`;
/// checks the result against the original on the test data. Returns the
/// optimized graph.
fn optimized(name: &str, dims: &[(&str, usize)]) -> Graph {
    let dir = models_dir().join(name);
    let dims: BTreeMap<String, usize> = dims.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let mut g = import_file_with(&dir.join("model.onnx"), &ImportOptions { dims })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    kiln_passes::simplify(&mut g).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut opts = OptimizeOptions::new(TargetInfo::x86_64_avx512());
    if cfg!(debug_assertions) {
        // The default budgets are sized for a release build. In the test
        // profile, folding ResNet-50's BatchNorms into its 23.5 M conv
        // weights (and interning the new constants) alone takes about a
        // second, so the phases get more time here; the printed phase
        // times show what was used.
        for l in [&mut opts.algebra, &mut opts.fusion, &mut opts.precision] {
            l.time = l.time.max(Duration::from_secs(20));
        }
    }
    let (out, report) = optimize(&g, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    kiln_ir::verify::verify(&out).unwrap_or_else(|e| panic!("{name}: optimized graph: {e}\n{out}"));
    for p in &report.phases {
        println!(
            "{name}: phase {} stopped {:?} after {} iterations, {} nodes, {:.0} ms",
            p.name, p.stop_reason, p.iterations, p.egraph_nodes, p.ms
        );
    }
    println!("{name}: {} kernels; ops {:?}", report.kernels, report.ops);
    println!("{name}: rewrites used {:?}", report.rewrites);
    if !report.rejected.is_empty() {
        println!(
            "{name}: rejected by admission control {:?}",
            report.rejected
        );
    }
    let inputs = test_inputs(&dir);
    let want =
        kiln_ir::interp::run(&g, &inputs).unwrap_or_else(|e| panic!("{name}: original: {e}"));
    let got = kiln_ir::interp::run(&out, &inputs)
        .unwrap_or_else(|e| panic!("{name}: optimized: {e}\n{out}"));
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        let err = rel_err(a, b);
        println!("{name}: output {i}: relative error {err:.3e}");
        assert!(
            err <= 1e-4,
            "{name}: output {i} differs by {err:.3e} (relative)\n{out}"
        );
    }
    out
}

fn count(g: &Graph, op: Op) -> usize {
    g.nodes.iter().filter(|n| n.op == op).count()
}

fn epilogue(n: &kiln_ir::Node) -> String {
    n.attrs
        .str("epilogue")
        .ok()
        .flatten()
        .unwrap_or("%0")
        .to_string()
}

/// The BERT checks shared by both exporter forms.
fn check_bert(name: &str, g: &Graph, layers: usize) {
    assert_eq!(
        count(g, Op::Attention),
        layers,
        "{name}: one Attention per layer\n{g}"
    );
    for n in g.nodes.iter().filter(|n| n.op == Op::Attention) {
        assert_eq!(
            g.ty(n.inputs[0].unwrap()).shape.rank(),
            3,
            "{name}: the 3-D Attention form\n{g}"
        );
    }
    // embeddings + 2 per layer
    assert_eq!(
        count(g, Op::LayerNormalization),
        1 + 2 * layers,
        "{name}: LayerNorm fused\n{g}"
    );
    for op in [
        Op::Softmax,
        Op::ReduceMean,
        Op::Erf,
        Op::Sqrt,
        Op::Pow,
        Op::MatMul,
        Op::Gemm,
        Op::Div,
    ] {
        assert_eq!(count(g, op), 0, "{name}: {op} left\n{g}");
    }
    let gelu_epilogues = g
        .nodes
        .iter()
        .filter(|n| n.op == Op::FusedMatMul && epilogue(n).contains("Gelu("))
        .count();
    assert_eq!(
        gelu_epilogues, layers,
        "{name}: GELU in the FFN MatMul's epilogue\n{g}"
    );
    // every product adds its bias in its epilogue
    for n in g.nodes.iter().filter(|n| n.op == Op::FusedMatMul) {
        assert!(
            epilogue(n).contains("Add("),
            "{name}: {} has no bias in its epilogue\n{g}",
            n.name
        );
    }
    assert_eq!(
        count(g, Op::FusedMatMul),
        6 * layers + 1,
        "{name}: Q, K, V, out, FFN1, FFN2 + pooler\n{g}"
    );
    for l in 0..layers {
        let tag = format!("/encoder/layer.{l}/");
        let kernels: Vec<String> = g
            .nodes
            .iter()
            .filter(|n| kiln_passes::cost::is_kernel(n.op) && n.name.contains(&tag))
            .map(|n| format!("{} {}", n.op, n.name))
            .collect();
        println!("{name}: layer {l}: {} kernels: {kernels:#?}", kernels.len());
        assert!(
            kernels.len() <= 9,
            "{name}: layer {l} has {} kernels\n{g}",
            kernels.len()
        );
    }
}

#[test]
fn bert_torchscript_fuses_to_nine_kernels_per_layer() {
    let g = optimized("bert_torchscript", &[("batch", 1), ("sequence", 16)]);
    check_bert("bert_torchscript", &g, 2);
}

#[test]
fn bert_dynamo_fuses_to_nine_kernels_per_layer() {
    let g = optimized("bert_dynamo", &[]);
    check_bert("bert_dynamo", &g, 2);
}

#[test]
fn minilm_fuses_to_nine_kernels_per_layer() {
    let g = optimized("minilm", &[("batch", 1), ("sequence", 128)]);
    check_bert("minilm", &g, 6);
}

#[test]
fn resnet50_folds_batchnorm_and_fuses_relu_and_residuals() {
    let g = optimized("resnet50", &[]);
    for op in [Op::BatchNormalization, Op::Relu, Op::Add, Op::Conv, Op::Mul] {
        assert_eq!(count(&g, op), 0, "resnet50: {op} left\n{g}");
    }
    // 53 convolutions (stem, 16 blocks × 3, 4 downsamples)
    assert_eq!(count(&g, Op::FusedConv), 53, "resnet50\n{g}");
    let residual = g
        .nodes
        .iter()
        .filter(|n| {
            n.op == Op::FusedConv && {
                let e = epilogue(n);
                e.starts_with("Relu(") && e.matches("Add(").count() == 2
            }
        })
        .count();
    assert_eq!(
        residual, 16,
        "resnet50: every block's residual Add and ReLU in a conv epilogue\n{g}"
    );
    let relu = g
        .nodes
        .iter()
        .filter(|n| n.op == Op::FusedConv && epilogue(n).starts_with("Relu("))
        .count();
    println!(
        "resnet50: {} FusedConv, {relu} with a ReLU epilogue, {residual} with the residual",
        count(&g, Op::FusedConv)
    );
}
