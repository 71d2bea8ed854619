//! End to end: graph → schedule (kiln-passes) → memory plan → Cranelift,
//! compared bit for bit with the kernel-IR interpreter on the same program,
//! and with the graph interpreter within `common::GRAPH_*_TOL`.

mod common;

use common::{check_program_with, random_tensor, Rng, GRAPH_ABS_TOL, GRAPH_REL_TOL};
use kiln_cranelift::{compile, Options};
use kiln_ir::{Graph, Tensor};
use kiln_passes::schedule;

pub fn parse(src: &str) -> Graph {
    kiln_ir::text::parse(src, "test").unwrap_or_else(|e| panic!("{e}\n{src}"))
}

pub fn graph_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng(seed);
    g.inputs
        .iter()
        .map(|&v| {
            let t = g.ty(v);
            let shape: Vec<usize> = t.shape.fixed().expect("static shape");
            let name = g.values[v.index()].name.clone().unwrap_or_default();
            random_tensor(
                t.dtype,
                &shape,
                if name.is_empty() { "small" } else { &name },
                &mut rng,
            )
        })
        .collect()
}

fn close(what: &str, want: &Tensor, got: &Tensor) {
    assert_eq!(want.shape(), got.shape(), "{what}");
    assert_eq!(want.dtype(), got.dtype(), "{what}");
    for (i, (p, q)) in want.to_f64_vec().iter().zip(got.to_f64_vec()).enumerate() {
        let ok = (p.is_nan() && q.is_nan())
            || *p == q
            || (p - q).abs() <= GRAPH_ABS_TOL + GRAPH_REL_TOL * p.abs();
        assert!(
            ok,
            "{what}: element {i}: graph interpreter {p}, cranelift {q}"
        );
    }
}

/// Lowers and plans `src`, then compares Cranelift with both interpreters.
pub fn e2e(src: &str) {
    let g = parse(src);
    let mut p =
        schedule::lower(&g, &schedule::Options::default()).unwrap_or_else(|e| panic!("{e}"));
    kiln_passes::memplan::plan(&mut p);
    let exe = compile(&p, &Options::default())
        .unwrap_or_else(|e| panic!("{e}\n{}", kiln_ir::kernel::text::print(&p)));
    for seed in 0..3 {
        let ins = graph_inputs(&g, seed);
        check_program_with(&p, &ins, &Options::default(), 0)
            .unwrap_or_else(|e| panic!("{e}\n{}", kiln_ir::kernel::text::print(&p)));
        let want = kiln_ir::interp::run(&g, &ins).unwrap_or_else(|e| panic!("{e}"));
        let got = exe.run(&ins).unwrap_or_else(|e| panic!("{e}"));
        for (k, (w, c)) in want.iter().zip(&got).enumerate() {
            close(&format!("{} output {k} seed {seed}", g.name), w, c);
        }
    }
}

#[test]
fn elementwise_chains() {
    e2e("graph @ew {\n in %0 \"small\": f32[3,37]\n in %1 \"small2\": f32[37]\n %2: f32[3,37] = Add(%0, %1) @add\n %3: f32[3,37] = Relu(%2) @relu\n %4: f32[3,37] = Mul(%3, %0) @mul\n %5: f32[3,37] = Tanh(%4) @tanh\n out %5\n}");
    e2e("graph @ew {\n in %0 \"small\": f32[2,5,8]\n %1: f32[2,5,8] = Sigmoid(%0) @s\n %2: f32[2,5,8] = Erf(%1) @e\n %3: f32[2,5,8] = Exp(%2) @x\n out %3\n}");
    e2e("graph @ew {\n in %0 \"x\": i32[4,9]\n in %1 \"nz\": i32[9]\n %2: i32[4,9] = Div(%0, %1) @d\n %3: i32[4,9] = Mod(%0, %1) @m\n out %2, %3\n}");
    e2e("graph @ew {\n in %0 \"x\": f32[6,10]\n in %1 \"z\": f32[6,10]\n %2: bool[6,10] = Less(%0, %1) @l\n %3: f32[6,10] = Where(%2, %0, %1) @w\n %4: f16[6,10] = Cast[to=10](%3) @c\n out %3, %4\n}");
}

#[test]
fn matmuls() {
    e2e("graph @mm {\n in %0 \"small\": f32[17,23]\n in %1 \"small2\": f32[23,29]\n %2: f32[17,29] = MatMul(%0, %1) @mm\n out %2\n}");
    e2e("graph @mm {\n in %0 \"small\": f32[2,3,9,16]\n in %1 \"small2\": f32[3,16,12]\n %2: f32[2,3,9,12] = MatMul(%0, %1) @mm\n out %2\n}");
    e2e("graph @g {\n in %0 \"small\": f32[20,12]\n in %1 \"small2\": f32[33,20]\n in %2 \"small3\": f32[33]\n %3: f32[12,33] = Gemm[transA=1, transB=1, alpha=0.5, beta=2.0](%0, %1, %2) @g\n out %3\n}");
}

#[test]
fn rows_and_reductions() {
    e2e("graph @sm {\n in %0 \"small\": f32[4,33]\n %1: f32[4,33] = Softmax[axis=-1](%0) @sm\n out %1\n}");
    e2e("graph @ln {\n in %0 \"small\": f32[3,5,24]\n in %1 \"small2\": f32[24]\n in %2 \"small3\": f32[24]\n %3: f32[3,5,24] = LayerNormalization[axis=-1, epsilon=0.00001](%0, %1, %2) @ln\n out %3\n}");
    e2e("graph @r {\n in %0 \"small\": f32[3,5,7]\n const %1: i64[1] = [1]\n %2: f32[3,7] = ReduceSum[keepdims=0](%0, %1) @r\n %3: f32[3,1,7] = ReduceMax[keepdims=1](%0, %1) @m\n out %2, %3\n}");
}

#[test]
fn movement() {
    e2e("graph @t {\n in %0 \"small\": f32[3,4,5]\n %1: f32[5,3,4] = Transpose[perm=[2, 0, 1]](%0) @t\n out %1\n}");
    e2e("graph @g {\n in %0 \"small\": f32[7,6]\n in %1 \"idx7\": i64[2,3]\n %2: f32[2,3,6] = Gather[axis=0](%0, %1) @g\n out %2\n}");
    e2e("graph @c {\n in %0 \"small\": f32[2,3]\n in %1 \"small2\": f32[2,5]\n %2: f32[2,8] = Concat[axis=1](%0, %1) @c\n out %2\n}");
}
