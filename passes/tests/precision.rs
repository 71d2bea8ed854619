//! The accuracy budget end to end ([`kiln_passes::precision::choose_precision`]):
//! `auto` keeps f32 under a tight budget and lowers MatMuls under a loose one;
//! Attention is lowered where the cost model says so; forced f16 on the
//! generated BERT encoder (`build/models/bert_dynamo`, when it exists) stays
//! within 1e-2 relative error on random inputs.
//!
//! Run with `--nocapture` to see the measured errors.

use kiln_ir::{Attrs, DType, Graph, Op, TargetInfo, Tensor, TensorType};
use kiln_passes::egraph::OptimizeOptions;
use kiln_passes::precision::{choose_precision, Precision, PrecisionOptions, PrecisionReport};
use std::path::Path;

/// Deterministic weights in [-s, s).
fn weights(shape: Vec<usize>, seed: u64, s: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * s
        })
        .collect();
    Tensor::from_vec(shape, v).unwrap()
}

fn f32s(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape.to_vec())
}

/// x[m,d] → MatMul W1[d,d] → Relu → MatMul W2[d,d], weights constant.
fn mlp(m: usize, d: usize) -> Graph {
    let mut g = Graph::new("mlp");
    let x = g.add_value(Some("x".into()), f32s(&[m, d]));
    g.inputs.push(x);
    let s = 1.0 / (d as f32).sqrt();
    let w1 = g.add_const(Some("w1".into()), weights(vec![d, d], 1, s));
    let w2 = g.add_const(Some("w2".into()), weights(vec![d, d], 2, s));
    let h = g.add_node(
        "fc1",
        Op::MatMul,
        Attrs::new(),
        vec![Some(x), Some(w1)],
        vec![(None, f32s(&[m, d]))],
    );
    let r = g.add_node(
        "relu",
        Op::Relu,
        Attrs::new(),
        vec![Some(h[0])],
        vec![(None, f32s(&[m, d]))],
    );
    let y = g.add_node(
        "fc2",
        Op::MatMul,
        Attrs::new(),
        vec![Some(r[0]), Some(w2)],
        vec![(Some("y".into()), f32s(&[m, d]))],
    );
    g.outputs.push(y[0]);
    kiln_ir::verify::verify(&g).unwrap();
    g
}

fn run(
    g: &Graph,
    target: TargetInfo,
    precision: Precision,
    budget: f64,
) -> (Graph, PrecisionReport) {
    let opts = OptimizeOptions::new(target);
    let mut p = PrecisionOptions::new(precision);
    p.max_rel_error = budget;
    let (out, r) = choose_precision(g, &opts, &p, &[]).unwrap_or_else(|e| panic!("{e}"));
    kiln_ir::verify::verify(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    println!(
        "{} {} budget {budget:e}: max rel error {:.3e} (f32 program {:?}), lowered {:?}, kept f32 {:?}, {} steps",
        g.name,
        precision.name(),
        r.max_rel_error,
        r.f32_rel_error,
        r.lowered.iter().map(|l| format!("{}:{}", l.node, l.dtype.name())).collect::<Vec<_>>(),
        r.kept_f32,
        r.steps.len()
    );
    (out, r)
}

/// Products of the graph that read a 16-bit operand.
fn low_products(g: &Graph) -> Vec<(Op, DType)> {
    g.nodes
        .iter()
        .filter(|n| {
            matches!(
                n.op,
                Op::MatMul | Op::FusedMatMul | Op::Attention | Op::Conv | Op::FusedConv
            )
        })
        .filter_map(|n| n.inputs[0].map(|v| (n.op, g.ty(v).dtype)))
        .filter(|(_, d)| matches!(d, DType::F16 | DType::BF16))
        .collect()
}

/// sm90 without launch overhead (as if kernels were batched into a CUDA
/// graph): the f16 tensor-core peak decides, not the launch count, so the
/// cost model lowers every product worth lowering, and the accuracy is
/// what is being tested.
fn launch_free_sm90() -> TargetInfo {
    let mut t = TargetInfo::sm90();
    t.name = "sm90-launch-free".into();
    t.launch_overhead = 1e-12;
    t
}

#[test]
fn auto_lowers_matmuls_under_a_loose_budget_and_keeps_f32_under_a_tight_one() {
    let g = mlp(64, 512);
    // x86-64-avx512 has a 2× bf16 dot-product peak and no f16 one
    let (loose, r) = run(&g, TargetInfo::x86_64_avx512(), Precision::Auto, 0.5);
    assert!(r.measured && r.within_budget, "{}", r.to_json());
    assert_eq!(r.lowered.len(), 2, "{}", r.to_json());
    assert!(
        r.lowered.iter().all(|l| l.dtype == DType::BF16),
        "{}",
        r.to_json()
    );
    assert!(r
        .lowered
        .iter()
        .all(|l| l.local_rel_error.is_some_and(|e| e > 0.0 && e < 0.05)));
    assert_eq!(low_products(&loose).len(), 2, "{loose}");
    assert!(r.max_rel_error > 0.0 && r.max_rel_error <= 0.5);
    assert!(
        r.optimizer.cost_after < r.optimizer.cost_before,
        "{}",
        r.optimizer.to_json(false)
    );
    assert!(r.optimizer.phases.iter().any(|p| p.name == "precision"));

    let (tight, r) = run(&g, TargetInfo::x86_64_avx512(), Precision::Auto, 1e-5);
    assert!(r.within_budget, "{}", r.to_json());
    assert!(r.lowered.is_empty(), "{}", r.to_json());
    assert_eq!(r.kept_f32.len(), 2, "{}", r.to_json());
    assert!(low_products(&tight).is_empty(), "{tight}");
    assert!(
        r.steps.len() >= 2 && !r.steps[0].within_budget,
        "{}",
        r.to_json()
    );
    assert!(r.max_rel_error <= 1e-5);
}

#[test]
fn a_budget_between_the_extremes_is_met_with_the_fewest_pins_found() {
    let g = mlp(64, 512);
    let (_, all) = run(&g, TargetInfo::x86_64_avx512(), Precision::Auto, 1.0);
    let budget = all.max_rel_error * 0.6;
    let (_, r) = run(&g, TargetInfo::x86_64_avx512(), Precision::Auto, budget);
    assert!(
        r.within_budget && r.max_rel_error <= budget,
        "{}",
        r.to_json()
    );
    assert!(!r.kept_f32.is_empty(), "{}", r.to_json());
    // every step is reported, and the answer is the last success
    assert!(r.steps.iter().any(|s| s.within_budget));
    assert_eq!(r.lowered.len() + r.kept_f32.len(), 2, "{}", r.to_json());
}

#[test]
fn forced_precision_is_measured_not_reverted_and_the_target_decides() {
    let g = mlp(64, 512);
    // avx512 has no f16 peak: f16 saves bytes but not time here, so nothing is lowered
    let (_, r) = run(&g, TargetInfo::x86_64_avx512(), Precision::F16, 1e-9);
    assert!(r.lowered.is_empty(), "{}", r.to_json());
    // bf16 is faster there: lowered, and over a budget it is only reported
    let (_, r) = run(&g, TargetInfo::x86_64_avx512(), Precision::BF16, 1e-9);
    assert_eq!(r.lowered.len(), 2, "{}", r.to_json());
    assert!(
        !r.within_budget && r.kept_f32.is_empty() && r.steps.len() == 1,
        "{}",
        r.to_json()
    );
    // f32 lowers and measures nothing
    let (out, r) = run(&g, TargetInfo::x86_64_avx512(), Precision::F32, 1e-9);
    assert!(!r.measured && r.lowered.is_empty() && low_products(&out).is_empty());
    let json = r.to_json();
    assert!(
        json.starts_with("{\"precision\":\"f32\"") && json.contains("\"optimizer\":{"),
        "{json}"
    );
}

#[test]
fn attention_is_lowered_where_f16_tensor_cores_pay() {
    let mut g = Graph::new("attention");
    let ty = f32s(&[1, 2, 256, 64]);
    let ins: Vec<_> = ["q", "k", "v"]
        .iter()
        .map(|n| g.add_value(Some(n.to_string()), ty.clone()))
        .collect();
    g.inputs.extend(&ins);
    let y = g.add_node(
        "attn",
        Op::Attention,
        Attrs::new(),
        ins.iter().map(|&v| Some(v)).collect(),
        vec![(Some("y".into()), ty.clone())],
    );
    g.outputs.push(y[0]);
    kiln_ir::verify::verify(&g).unwrap();
    let (out, r) = run(&g, launch_free_sm90(), Precision::Auto, 1e-2);
    assert!(r.within_budget, "{}", r.to_json());
    assert_eq!(r.lowered.len(), 1, "{}", r.to_json());
    assert_eq!(
        r.lowered[0].dtype,
        DType::F16,
        "f16 wins the tie with bf16: {}",
        r.to_json()
    );
    assert_eq!(
        low_products(&out),
        vec![(Op::Attention, DType::F16)],
        "{out}"
    );
    // and a budget below f16's error keeps it in f32
    let (out, r) = run(
        &g,
        launch_free_sm90(),
        Precision::Auto,
        r.max_rel_error / 4.0,
    );
    assert!(
        r.lowered.is_empty() && low_products(&out).is_empty(),
        "{}",
        r.to_json()
    );
}

#[test]
fn forced_f16_on_the_bert_encoder_stays_within_1e_2() {
    let dir = std::env::var_os("KILN_MODELS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/models"));
    let model = dir.join("bert_dynamo/model.onnx");
    if !model.is_file() {
        eprintln!(
            "skipped: {} does not exist (run scripts/make_models.py)",
            model.display()
        );
        return;
    }
    let g = kiln_frontend::import_file(&model).unwrap_or_else(|e| panic!("{e}"));
    let (out, r) = run(&g, launch_free_sm90(), Precision::F16, 1e-2);
    println!("bert_dynamo f16: {}", r.to_json());
    assert!(!r.lowered.is_empty(), "nothing lowered: {}", r.to_json());
    assert!(r.lowered.iter().all(|l| l.dtype == DType::F16));
    assert!(!low_products(&out).is_empty());
    assert!(
        r.within_budget && r.max_rel_error <= 1e-2,
        "{}",
        r.to_json()
    );
}
