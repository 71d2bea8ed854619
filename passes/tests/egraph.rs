//! End to end: [`kiln_passes::egraph::optimize`] on graphs built in code, on
//! a 12-layer BERT-base-shaped encoder (timed; run in release to measure),
//! and on the generated models in `build/models` when they exist (skipped
//! with a message otherwise). Every optimized graph verifies and agrees with
//! the original on the interpreter.
//!
//! `cargo test -p kiln-passes --release --test egraph -- --nocapture` prints
//! the reports and timings.

use kiln_ir::{Graph, TargetInfo, Tensor};
use kiln_passes::egraph::{optimize, Extractor, OptimizeOptions};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn parse(src: &str) -> Graph {
    let g = kiln_ir::text::parse(src, "<test>").unwrap_or_else(|e| panic!("{e}"));
    kiln_ir::verify::verify(&g).unwrap_or_else(|e| panic!("{e}"));
    g
}

/// Deterministic inputs in [-1, 1) (integers: 0..3).
fn inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    g.inputs
        .iter()
        .map(|&v| {
            let ty = g.ty(v);
            let dims: Vec<usize> = ty.shape.0.iter().map(|d| d.fixed().unwrap_or(2)).collect();
            let n: usize = dims.iter().product();
            let vals: Vec<f64> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                    if ty.dtype.is_float() {
                        u * 2.0 - 1.0
                    } else {
                        (u * 3.0).floor()
                    }
                })
                .collect();
            Tensor::from_f64s(ty.dtype, dims, &vals).unwrap()
        })
        .collect()
}

fn assert_close(label: &str, want: &[Tensor], got: &[Tensor], tol: f64) {
    assert_eq!(want.len(), got.len(), "{label}: output count");
    for (k, (w, o)) in want.iter().zip(got).enumerate() {
        assert_eq!(w.ty(), o.ty(), "{label}: output {k} type");
        // relative to the output's magnitude (as tests/models.rs measures against
        // onnxruntime): folding BatchNorm into conv weights reassociates 50 layers of
        // products, a few ulps of logits of size ~100
        let (w, o) = (w.to_f64_vec(), o.to_f64_vec());
        let scale = w.iter().fold(1.0f64, |m, a| m.max(a.abs()));
        let worst = w.iter().zip(&o).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) / scale;
        assert!(worst <= tol, "{label}: output {k} differs by {worst} (relative to its largest magnitude {scale})");
    }
}

fn check(label: &str, g: &Graph, opts: &OptimizeOptions) -> (Graph, kiln_passes::egraph::Report) {
    check_on(label, g, opts, &inputs(g, 7))
}

fn check_on(
    label: &str,
    g: &Graph,
    opts: &OptimizeOptions,
    x: &[Tensor],
) -> (Graph, kiln_passes::egraph::Report) {
    let (h, r) = optimize(g, opts).unwrap_or_else(|e| panic!("{label}: {e}"));
    kiln_ir::verify::verify(&h).unwrap_or_else(|e| panic!("{label}: {e}"));
    let want = kiln_ir::interp::run(g, x).unwrap_or_else(|e| panic!("{label}: original: {e}"));
    let got =
        kiln_ir::interp::run(&h, x).unwrap_or_else(|e| panic!("{label}: optimized: {e}\n{h}"));
    assert_close(label, &want, &got, 1e-4);
    (h, r)
}

#[test]
fn optimizes_a_small_graph_and_reports() {
    let g = parse(
        r#"
graph @g {
  in %0 "x": f32[4,8]
  const %1: f32[] = 0.0
  const %2: f32[] = 4.0
  %3 "a": f32[4,8] = Add(%0, %1) @add0
  %4 "t": f32[8,4] = Transpose[perm=[1,0]](%3) @t1
  %5 "u": f32[4,8] = Transpose[perm=[1,0]](%4) @t2
  %6 "d": f32[4,8] = Div(%5, %2) @div
  %7 "r": f32[4,8] = Relu(%6) @relu
  out %7
}"#,
    );
    for extractor in [
        Extractor::Greedy,
        Extractor::Ilp {
            time_limit: Duration::from_secs(5),
        },
    ] {
        let mut opts = OptimizeOptions::new(TargetInfo::x86_64_avx2());
        opts.extractor = extractor;
        let (h, r) = check("small", &g, &opts);
        println!("{h}\n{}", r.to_json(true));
        let ops: Vec<_> = h.nodes.iter().map(|n| n.op.name()).collect();
        assert_eq!(ops, ["Mul", "Relu"], "{h}");
        assert_eq!(r.kernels, 2);
        assert_eq!(r.rewrites.get("div-const-to-mul"), Some(&1));
        assert!(r.cost_after < r.cost_before);
        let json = r.to_json(false);
        for key in [
            "\"kernels\":2",
            "\"ops\":{",
            "\"phases\":[",
            "\"stop_reason\":\"saturated\"",
            "\"compile_ms\":",
        ] {
            assert!(json.contains(key), "{key} missing in {json}");
        }
        // provenance: the Relu keeps its name; the Add and Transposes vanished into the Mul's operand
        assert!(h.nodes.iter().any(|n| n.name == "relu"));
        let e = r.explain("div").unwrap();
        assert_eq!(e.kernel.as_ref().map(|k| k.1.as_str()), Some("Mul"));
        assert!(e.alternatives.len() >= 2, "{e:?}");
    }
}

#[test]
fn merges_parallel_matmuls_when_it_is_cheaper() {
    // Q, K, V projections of one input: on a GPU three launches cost more than a split
    let mut src = String::from("graph @qkv {\n in %0: f32[1,16,32]\n");
    for i in 0..3 {
        let w: Vec<String> = (0..32 * 32)
            .map(|j| format!("{}.0", (i * 7 + j) % 5))
            .collect();
        let _ = writeln!(src, " const %{}: f32[32,32] = [{}]", i + 1, w.join(","));
    }
    for i in 0..3 {
        let _ = writeln!(
            src,
            " %{}: f32[1,16,32] = MatMul(%0, %{}) @proj{i}",
            i + 4,
            i + 1
        );
    }
    src.push_str(" out %4, %5, %6\n}");
    let g = parse(&src);
    // greedy counts the shared product once per projection, so it keeps three MatMuls
    let mut opts = OptimizeOptions::new(TargetInfo::sm80());
    let (_, r) = check("qkv", &g, &opts);
    assert_eq!(r.ops.get("MatMul"), Some(&3));
    // ILP counts it once
    opts.extractor = Extractor::Ilp {
        time_limit: Duration::from_secs(5),
    };
    let (h, r) = check("qkv", &g, &opts);
    println!("{}", r.to_json(false));
    assert!(r.extractor.starts_with("ilp: optimal"), "{}", r.extractor);
    assert_eq!(r.ops.get("MatMul"), Some(&1), "{h}");
    assert_eq!(r.ops.get("Split"), Some(&1), "{h}");
}

/// A BERT-base-shaped encoder: `layers` layers, hidden 768, 12 heads,
/// FFN 3072, sequence 128, with LayerNorm and GELU decomposed as the
/// exporters write them. Weights are graph inputs (85M parameters of
/// constants would dominate the test's memory, not the optimizer's work).
pub fn bert(layers: usize) -> Graph {
    let mut s = String::from("graph @bert {\n");
    let mut n = 0usize;
    let mut fresh = || {
        n += 1;
        n
    };
    let x0 = fresh();
    let _ = writeln!(s, " in %{x0} \"x\": f32[1,128,768]");
    let mask = fresh();
    let _ = writeln!(s, " in %{mask} \"mask\": f32[1,1,1,128]");
    let c = |s: &mut String, id: usize, ty: &str, v: &str| {
        let _ = writeln!(s, " const %{id}: {ty} = {v}");
    };
    let shp4 = fresh();
    c(&mut s, shp4, "i64[4]", "[1, 128, 12, 64]");
    let shp3 = fresh();
    c(&mut s, shp3, "i64[3]", "[1, 128, 768]");
    let scale = fresh();
    c(&mut s, scale, "f32[]", "8.0");
    let axes = fresh();
    c(&mut s, axes, "i64[1]", "[-1]");
    let eps = fresh();
    c(&mut s, eps, "f32[]", "1e-12");
    let half = fresh();
    c(&mut s, half, "f32[]", "0.5");
    let one = fresh();
    c(&mut s, one, "f32[]", "1.0");
    let sqrt2 = fresh();
    c(&mut s, sqrt2, "f32[]", "1.4142135");
    let two = fresh();
    c(&mut s, two, "f32[]", "2.0");
    let mut x = x0;
    let ln = |s: &mut String,
              fresh: &mut dyn FnMut() -> usize,
              x: usize,
              l: usize,
              tag: &str|
     -> usize {
        let g = fresh();
        let b = fresh();
        let _ = writeln!(s, " in %{g} \"l{l}.{tag}.g\": f32[768]");
        let _ = writeln!(s, " in %{b} \"l{l}.{tag}.b\": f32[768]");
        let (m, d, p, v, ve, sd, nm, sc, y) = (
            fresh(),
            fresh(),
            fresh(),
            fresh(),
            fresh(),
            fresh(),
            fresh(),
            fresh(),
            fresh(),
        );
        let t = "f32[1,128,768]";
        let t1 = "f32[1,128,1]";
        let _ = writeln!(
            s,
            " %{m}: {t1} = ReduceMean(%{x}, %{axes}) @\"l{l}.{tag}.mean\""
        );
        let _ = writeln!(s, " %{d}: {t} = Sub(%{x}, %{m}) @\"l{l}.{tag}.sub\"");
        let _ = writeln!(s, " %{p}: {t} = Pow(%{d}, %{two}) @\"l{l}.{tag}.pow\"");
        let _ = writeln!(
            s,
            " %{v}: {t1} = ReduceMean(%{p}, %{axes}) @\"l{l}.{tag}.var\""
        );
        let _ = writeln!(s, " %{ve}: {t1} = Add(%{v}, %{eps}) @\"l{l}.{tag}.addeps\"");
        let _ = writeln!(s, " %{sd}: {t1} = Sqrt(%{ve}) @\"l{l}.{tag}.sqrt\"");
        let _ = writeln!(s, " %{nm}: {t} = Div(%{d}, %{sd}) @\"l{l}.{tag}.div\"");
        let _ = writeln!(s, " %{sc}: {t} = Mul(%{nm}, %{g}) @\"l{l}.{tag}.mul\"");
        let _ = writeln!(s, " %{y}: {t} = Add(%{sc}, %{b}) @\"l{l}.{tag}.add\"");
        y
    };
    for l in 0..layers {
        let t = "f32[1,128,768]";
        let lin = |s: &mut String,
                   fresh: &mut dyn FnMut() -> usize,
                   x: usize,
                   name: &str,
                   k: usize,
                   m: usize| {
            let w = fresh();
            let b = fresh();
            let mm = fresh();
            let y = fresh();
            let _ = writeln!(s, " in %{w} \"l{l}.{name}.w\": f32[{k},{m}]");
            let _ = writeln!(s, " in %{b} \"l{l}.{name}.b\": f32[{m}]");
            let _ = writeln!(
                s,
                " %{mm}: f32[1,128,{m}] = MatMul(%{x}, %{w}) @\"l{l}.{name}.matmul\""
            );
            let _ = writeln!(
                s,
                " %{y}: f32[1,128,{m}] = Add(%{mm}, %{b}) @\"l{l}.{name}.bias\""
            );
            y
        };
        let q = lin(&mut s, &mut fresh, x, "q", 768, 768);
        let k = lin(&mut s, &mut fresh, x, "k", 768, 768);
        let v = lin(&mut s, &mut fresh, x, "v", 768, 768);
        let (qr, kr, vr, qt, kt, vt) = (fresh(), fresh(), fresh(), fresh(), fresh(), fresh());
        let h4 = "f32[1,128,12,64]";
        let _ = writeln!(
            s,
            " %{qr}: {h4} = Reshape(%{q}, %{shp4}) @\"l{l}.q.reshape\""
        );
        let _ = writeln!(
            s,
            " %{kr}: {h4} = Reshape(%{k}, %{shp4}) @\"l{l}.k.reshape\""
        );
        let _ = writeln!(
            s,
            " %{vr}: {h4} = Reshape(%{v}, %{shp4}) @\"l{l}.v.reshape\""
        );
        let _ = writeln!(
            s,
            " %{qt}: f32[1,12,128,64] = Transpose[perm=[0,2,1,3]](%{qr}) @\"l{l}.q.transpose\""
        );
        let _ = writeln!(
            s,
            " %{kt}: f32[1,12,64,128] = Transpose[perm=[0,2,3,1]](%{kr}) @\"l{l}.k.transpose\""
        );
        let _ = writeln!(
            s,
            " %{vt}: f32[1,12,128,64] = Transpose[perm=[0,2,1,3]](%{vr}) @\"l{l}.v.transpose\""
        );
        let (sc, sd, sm, p, ctx, ct, cr) = (
            fresh(),
            fresh(),
            fresh(),
            fresh(),
            fresh(),
            fresh(),
            fresh(),
        );
        let a4 = "f32[1,12,128,128]";
        let _ = writeln!(s, " %{sc}: {a4} = MatMul(%{qt}, %{kt}) @\"l{l}.scores\"");
        let _ = writeln!(s, " %{sd}: {a4} = Div(%{sc}, %{scale}) @\"l{l}.scale\"");
        let _ = writeln!(s, " %{sm}: {a4} = Add(%{sd}, %{mask}) @\"l{l}.mask\"");
        let _ = writeln!(s, " %{p}: {a4} = Softmax[axis=-1](%{sm}) @\"l{l}.softmax\"");
        let _ = writeln!(
            s,
            " %{ctx}: f32[1,12,128,64] = MatMul(%{p}, %{vt}) @\"l{l}.context\""
        );
        let _ = writeln!(
            s,
            " %{ct}: {h4} = Transpose[perm=[0,2,1,3]](%{ctx}) @\"l{l}.context.transpose\""
        );
        let _ = writeln!(
            s,
            " %{cr}: {t} = Reshape(%{ct}, %{shp3}) @\"l{l}.context.reshape\""
        );
        let o = lin(&mut s, &mut fresh, cr, "o", 768, 768);
        let r1 = fresh();
        let _ = writeln!(s, " %{r1}: {t} = Add(%{o}, %{x}) @\"l{l}.residual1\"");
        let h = ln(&mut s, &mut fresh, r1, l, "ln1");
        let f1 = lin(&mut s, &mut fresh, h, "ffn1", 768, 3072);
        let (gd, ge, g1, gm, gh) = (fresh(), fresh(), fresh(), fresh(), fresh());
        let f = "f32[1,128,3072]";
        let _ = writeln!(s, " %{gd}: {f} = Div(%{f1}, %{sqrt2}) @\"l{l}.gelu.div\"");
        let _ = writeln!(s, " %{ge}: {f} = Erf(%{gd}) @\"l{l}.gelu.erf\"");
        let _ = writeln!(s, " %{g1}: {f} = Add(%{ge}, %{one}) @\"l{l}.gelu.add\"");
        let _ = writeln!(s, " %{gm}: {f} = Mul(%{f1}, %{g1}) @\"l{l}.gelu.mul\"");
        let _ = writeln!(s, " %{gh}: {f} = Mul(%{gm}, %{half}) @\"l{l}.gelu.half\"");
        let f2 = lin(&mut s, &mut fresh, gh, "ffn2", 3072, 768);
        let r2 = fresh();
        let _ = writeln!(s, " %{r2}: {t} = Add(%{f2}, %{h}) @\"l{l}.residual2\"");
        x = ln(&mut s, &mut fresh, r2, l, "ln2");
    }
    // ids must be 0..N: %0 is an unused extra input
    let _ = writeln!(s, " in %0 \"unused\": f32[1]");
    let _ = writeln!(s, " out %{x}\n}}");
    parse(&s)
}

#[test]
fn bert_base_12_layers_optimizes_within_budget() {
    let g = bert(12);
    let opts = OptimizeOptions::new(TargetInfo::x86_64_avx512());
    let t = std::time::Instant::now();
    let (h, r) = optimize(&g, &opts).unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    kiln_ir::verify::verify(&h).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "bert-base 12 layers: {} nodes -> {} nodes, {} kernels, optimized in {:.3} s ({} build)\n{}",
        g.nodes.len(),
        h.nodes.len(),
        r.kernels,
        secs,
        if cfg!(debug_assertions) { "debug" } else { "release" },
        r.to_json(false)
    );
    assert!(!r.phases.is_empty());
    if !cfg!(debug_assertions) {
        assert!(secs < 2.0, "took {secs} s");
    }
}

#[test]
fn one_bert_layer_agrees_with_the_interpreter() {
    let g = bert(1);
    let opts = OptimizeOptions::new(TargetInfo::x86_64_avx2());
    let (h, r) = optimize(&g, &opts).unwrap_or_else(|e| panic!("{e}"));
    kiln_ir::verify::verify(&h).unwrap_or_else(|e| panic!("{e}"));
    println!("{}", r.to_json(false));
    let x = inputs(&g, 3);
    let want = kiln_ir::interp::run(&g, &x).unwrap();
    let got = kiln_ir::interp::run(&h, &x).unwrap();
    assert_close("bert1", &want, &got, 1e-3);
}

/// `test_data_set_0/input_<i>.pb`, in order.
fn test_inputs(dir: &Path) -> Vec<Tensor> {
    let data = dir.join("test_data_set_0");
    (0..)
        .map(|i| data.join(format!("input_{i}.pb")))
        .take_while(|p| p.is_file())
        .map(|p| {
            kiln_frontend::read_tensor_pb(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .1
        })
        .collect()
}

fn models_dir() -> Option<PathBuf> {
    let d = std::env::var_os("KILN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/models"));
    d.join("bert_torchscript/model.onnx").is_file().then_some(d)
}

#[test]
fn generated_models_optimize_and_agree() {
    let Some(dir) = models_dir() else {
        eprintln!("skipped: no generated models in build/models (run scripts/test.sh first)");
        return;
    };
    for name in ["bert_torchscript", "bert_dynamo", "minilm", "resnet50"] {
        let path = dir.join(name).join("model.onnx");
        let mut g = kiln_frontend::import_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        kiln_passes::simplify(&mut g).unwrap_or_else(|e| panic!("{name}: {e}"));
        for extractor in [
            Extractor::Greedy,
            Extractor::Ilp {
                time_limit: Duration::from_secs(3),
            },
        ] {
            let mut opts = OptimizeOptions::new(TargetInfo::x86_64_avx2());
            opts.extractor = extractor;
            let (_, r) = check_on(name, &g, &opts, &test_inputs(&dir.join(name)));
            println!(
                "{name}: {} nodes -> {} kernels\n{}",
                g.nodes.len(),
                r.kernels,
                r.to_json(false)
            );
        }
    }
}
