//! Tests of every schedule: lower a graph, check the program (verifier, text
//! round trip), run it on the kernel-IR interpreter (grid in order, grid
//! reversed, and after memory planning) and compare with the reference
//! interpreter on random inputs.

use super::*;
use crate::testutil::{parse, random_inputs};
use kiln_ir::kernel::{interp, text};

fn close(a: &Tensor, b: &Tensor, rtol: f64) -> Result<(), String> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Err(format!("{} vs {}", a.ty(), b.ty()));
    }
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        let ok = (p.is_nan() && q.is_nan())
            || p == q
            || (p - q).abs() <= rtol * (1.0 + p.abs().max(q.abs()));
        if !ok {
            return Err(format!("element {i}: kernel {p} vs reference {q}"));
        }
    }
    Ok(())
}

/// Lowers `src`, checks it, and compares with the reference on `seeds`.
pub(super) fn check_with(src: &str, opts: &Options, rtol: f64) -> Program {
    let g = parse(src);
    let mut p = lower(&g, opts).unwrap_or_else(|e| panic!("{e}"));
    text::check_round_trip(&p).unwrap_or_else(|e| panic!("{e}\n{}", text::print(&p)));
    for seed in 0..3u64 {
        let ins = random_inputs(&g, seed);
        let want = kiln_ir::interp::run(&g, &ins).unwrap_or_else(|e| panic!("{e}"));
        for rev in [false, true] {
            let got = interp::run_with(&p, &ins, interp::Options { reverse_grid: rev })
                .unwrap_or_else(|e| panic!("{e}\n{}", text::print(&p)));
            for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                close(a, b, rtol).unwrap_or_else(|e| {
                    panic!("output {k} (seed {seed}): {e}\n{}", text::print(&p))
                });
            }
        }
    }
    let before = p.clone();
    let r = crate::memplan::plan(&mut p);
    assert!(r.peak_bytes <= r.unplanned_bytes);
    kiln_ir::kernel::verify::verify(&p).unwrap_or_else(|e| panic!("{e}"));
    text::check_round_trip(&p).unwrap_or_else(|e| panic!("{e}"));
    let ins = random_inputs(&g, 7);
    let a = interp::run(&before, &ins).unwrap_or_else(|e| panic!("{e}"));
    let b = interp::run(&p, &ins).unwrap_or_else(|e| panic!("{e}"));
    for (x, y) in a.iter().zip(&b) {
        assert!(x.bit_eq(y), "memory planning changed a result");
    }
    p
}

pub(super) fn check(src: &str) -> Program {
    check_with(src, &Options::default(), 1e-5)
}

fn unary_graph(op: &str, dt: &str, shape: &str) -> String {
    format!(
        "graph @t {{\n in %0 \"x\": {dt}[{shape}]\n %1: {dt}[{shape}] = {op}(%0) @n\n out %1\n}}"
    )
}

#[test]
fn elementwise_unary_ops_f32_odd_sizes() {
    for op in [
        "Abs",
        "Neg",
        "Sqrt",
        "Exp",
        "Log",
        "Tanh",
        "Erf",
        "Relu",
        "Sigmoid",
        "Softplus",
        "Softsign",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Sin",
        "Cos",
        "Atan",
        "HardSigmoid",
        "HardSwish",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Celu",
        "Gelu",
        "Mish",
        "Reciprocal",
        "Identity",
    ] {
        for shape in ["7", "3,5", "2,3,9", "1"] {
            check(&unary_graph(op, "f32", shape));
        }
    }
}

#[test]
fn elementwise_other_dtypes() {
    for dt in ["f16", "bf16", "f64"] {
        for op in ["Exp", "Tanh", "Gelu", "Sigmoid", "Neg"] {
            check_with(&unary_graph(op, dt, "3,5"), &Options::default(), 1e-2);
        }
    }
    for dt in ["i32", "i64", "i8"] {
        check(&unary_graph("Neg", dt, "2,5"));
        check(&unary_graph("Abs", dt, "2,5"));
    }
    check(&unary_graph("Abs", "u8", "2,5"));
    check(&unary_graph("Not", "bool", "6"));
}

#[test]
fn elementwise_binary_with_broadcasting() {
    check("graph @t {\n in %0: f32[2,3,7]\n in %1: f32[7]\n %2: f32[2,3,7] = PRelu(%0, %1) @n\n out %2\n}");
    for op in ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"] {
        for (a, b, o) in [
            ("3,5", "5", "3,5"),
            ("2,1,7", "3,1", "2,3,7"),
            ("4,6", "4,6", "4,6"),
            ("1", "3,2", "3,2"),
        ] {
            let src = format!(
                "graph @t {{\n in %0 \"a\": f32[{a}]\n in %1 \"b\": f32[{b}]\n %2: f32[{o}] = {op}(%0, %1) @n\n out %2\n}}"
            );
            check(&src);
        }
    }
    for op in ["Greater", "Less", "Equal", "LessOrEqual"] {
        let src = format!("graph @t {{\n in %0: f32[3,5]\n in %1: f32[5]\n %2: bool[3,5] = {op}(%0, %1) @n\n out %2\n}}");
        check(&src);
    }
    let src = "graph @t {\n in %0: i32[3,5]\n in %1: i32[5]\n %2: i32[3,5] = Add(%0, %1) @n\n %3: i32[3,5] = Mul(%2, %0) @m\n out %3\n}";
    check(src);
    let w = "graph @t {\n in %0: bool[3,5]\n in %1: f32[5]\n in %2: f32[3,1]\n %3: f32[3,5] = Where(%0, %1, %2) @n\n out %3\n}";
    check(w);
    let c = "graph @t {\n in %0: f32[9]\n const %1: f32[] = -0.5\n const %2: f32[] = 0.5\n %3: f32[9] = Clip(%0, %1, %2) @n\n out %3\n}";
    check(c);
    let cast = "graph @t {\n in %0: f32[2,3]\n %1: f16[2,3] = Cast[to=10](%0) @n\n %2: i32[2,3] = Cast[to=6](%1) @m\n out %1, %2\n}";
    check(cast);
}

#[test]
fn long_flat_elementwise_is_chunked() {
    let opts = Options {
        chunk: 16,
        ..Options::default()
    };
    let src = "graph @t {\n in %0: f32[101]\n in %1: f32[101]\n %2: f32[101] = Add(%0, %1) @n\n out %2\n}";
    let p = check_with(src, &opts, 1e-6);
    assert!(p.kernels[0].grid[0].extent > 1);
}

#[test]
fn fused_elementwise_body() {
    let src = "graph @t {\n in %0: f32[3,10]\n in %1: f32[10]\n %2: f32[3,10] = FusedElementwise[expr=\"Gelu(Add(%0, Mul(%1, tensor<f32[]> 0.5)))\"](%0, %1) @f\n out %2\n}";
    check(src);
}

#[test]
fn reductions() {
    for op in [
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceSumSquare",
        "ReduceLogSumExp",
    ] {
        for (axes, keep, out) in [("[1]", 1, "3,1,5"), ("[0, 2]", 0, "4"), ("[-1]", 0, "3,4")] {
            let src = format!(
                "graph @t {{\n in %0: f32[3,4,5]\n const %1: i64[{}] = {axes}\n %2: f32[{out}] = {op}[keepdims={keep}](%0, %1) @r\n out %2\n}}",
                axes.matches(',').count() + 1
            );
            check(&src);
        }
    }
    for op in ["ArgMax", "ArgMin"] {
        let src = format!(
            "graph @t {{\n in %0: f32[3,7]\n %1: i64[3,1] = {op}[axis=1](%0) @r\n out %1\n}}"
        );
        check(&src);
    }
    let i = "graph @t {\n in %0: i32[3,5]\n const %1: i64[1] = [1]\n %2: i32[3] = ReduceSum[keepdims=0](%0, %1) @r\n out %2\n}";
    check(i);
}

#[test]
fn row_ops() {
    for op in ["Softmax", "LogSoftmax"] {
        for axis in [-1, 0, 1] {
            let src = format!("graph @t {{\n in %0: f32[3,7,5]\n %1: f32[3,7,5] = {op}[axis={axis}](%0) @s\n out %1\n}}");
            check(&src);
        }
    }
    let ln = "graph @t {\n in %0: f32[2,3,10]\n in %1: f32[10]\n in %2: f32[10]\n %3: f32[2,3,10] = LayerNormalization[axis=-1](%0, %1, %2) @ln\n out %3\n}";
    check(ln);
    let rms = "graph @t {\n in %0: f32[4,9]\n in %1: f32[9]\n %2: f32[4,9] = RMSNormalization[axis=-1](%0, %1) @rms\n out %2\n}";
    check(rms);
}

#[test]
fn matmul_shapes_and_packing() {
    for (m, k, n) in [(1, 1, 1), (5, 7, 9), (4, 8, 8), (13, 17, 23), (3, 2, 16)] {
        let src = format!(
            "graph @t {{\n in %0: f32[{m},{k}]\n in %1: f32[{k},{n}]\n %2: f32[{m},{n}] = MatMul(%0, %1) @mm\n out %2\n}}"
        );
        check(&src);
    }
    // batched, broadcast batch, rank-1 operands
    check("graph @t {\n in %0: f32[2,3,5,4]\n in %1: f32[3,4,9]\n %2: f32[2,3,5,9] = MatMul(%0, %1) @mm\n out %2\n}");
    check("graph @t {\n in %0: f32[4]\n in %1: f32[4,9]\n %2: f32[9] = MatMul(%0, %1) @mm\n out %2\n}");
    check("graph @t {\n in %0: f32[3,4]\n in %1: f32[4]\n %2: f32[3] = MatMul(%0, %1) @mm\n out %2\n}");
    // f64 and f16 on the scalar path
    check("graph @t {\n in %0: f64[3,4]\n in %1: f64[4,5]\n %2: f64[3,5] = MatMul(%0, %1) @mm\n out %2\n}");
    check_with(
        "graph @t {\n in %0: f16[3,4]\n in %1: f16[4,5]\n %2: f16[3,5] = MatMul(%0, %1) @mm\n out %2\n}",
        &Options::default(),
        1e-2,
    );
}

#[test]
fn constant_weights_are_packed() {
    let w: Vec<String> = (0..7 * 19)
        .map(|i| format!("{}.0", (i % 5) as i32 - 2))
        .collect();
    let src = format!(
        "graph @t {{\n in %0: f32[6,7]\n const %1: f32[7,19] = [{}]\n %2: f32[6,19] = MatMul(%0, %1) @mm\n out %2\n}}",
        w.join(", ")
    );
    let p = check(&src);
    assert!(p
        .buffers
        .iter()
        .any(|b| b.name.as_deref().is_some_and(|n| n.ends_with("(packed)"))));
}

#[test]
fn gemm_and_fused_matmul_epilogues() {
    check("graph @t {\n in %0: f32[4,6]\n in %1: f32[9,6]\n in %2: f32[9]\n %3: f32[4,9] = Gemm[transB=1, alpha=0.5, beta=2.0](%0, %1, %2) @g\n out %3\n}");
    check("graph @t {\n in %0: f32[6,5]\n in %1: f32[6,9]\n in %2: f32[5,1]\n %3: f32[5,9] = Gemm[transA=1](%0, %1, %2) @g\n out %3\n}");
    check("graph @t {\n in %0: f32[5,6]\n in %1: f32[6,11]\n in %2: f32[11]\n %3: f32[5,11] = FusedMatMul[epilogue=\"Relu(Add(%0, %1))\"](%0, %1, %2) @f\n out %3\n}");
}

#[test]
fn movement_ops() {
    check("graph @t {\n in %0: f32[2,3,4]\n %1: f32[4,2,3] = Transpose[perm=[2,0,1]](%0) @t\n out %1\n}");
    check("graph @t {\n in %0: f32[2,3]\n const %1: i64[2] = [3, 2]\n %2: f32[3,2] = Reshape(%0, %1) @r\n %3: f32[3,2] = Relu(%2) @relu\n out %3\n}");
    check("graph @t {\n in %0: f32[5,6]\n const %1: i64[2] = [1, -1]\n const %2: i64[2] = [4, 0]\n const %3: i64[2] = [0, 1]\n const %4: i64[2] = [2, -2]\n %5: f32[2,3] = Slice(%0, %1, %2, %3, %4) @s\n out %5\n}");
    check("graph @t {\n in %0: f32[5,4]\n in %1: i64[2,3]\n %2: f32[2,3,4] = Gather[axis=0](%0, %1) @g\n out %2\n}");
    check("graph @t {\n in %0: f32[2,3]\n in %1: f32[2,5]\n %2: f32[2,8] = Concat[axis=1](%0, %1) @c\n out %2\n}");
    check("graph @t {\n in %0: f32[2,8]\n const %1: i64[2] = [3, 5]\n %2: f32[2,3], %3: f32[2,5] = Split[axis=1](%0, %1) @s\n out %2, %3\n}");
    check("graph @t {\n in %0: f32[3,1]\n const %1: i64[3] = [2, 3, 4]\n %2: f32[2,3,4] = Expand(%0, %1) @e\n out %2\n}");
}

#[test]
fn outputs_that_are_inputs_or_repeated_get_copies() {
    let p = check("graph @t {\n in %0: f32[3]\n %1: f32[3] = Exp(%0) @e\n out %0, %1, %1\n}");
    assert_eq!(p.outputs().len(), 3);
}

#[test]
fn unsupported_ops_are_errors_naming_the_node() {
    let g = parse("graph @t {\n in %0: f32[2,3]\n %1: i64[2,n] = NonZero(%0) @my_nonzero\n out %1\n}");
    let e = lower(&g, &Options::default()).unwrap_err().to_string();
    assert!(e.contains("my_nonzero") && e.contains("NonZero"), "{e}");
}

#[test]
fn memory_planning_reuses_a_chain() {
    let src = "graph @t {\n in %0: f32[64]\n %1: f32[64] = Exp(%0) @a\n %2: f32[64] = Neg(%1) @b\n %3: f32[64] = Tanh(%2) @c\n %4: f32[64] = Abs(%3) @d\n out %4\n}";
    let g = parse(src);
    let mut p = lower(&g, &Options::default()).unwrap();
    let r = crate::memplan::plan(&mut p);
    assert_eq!(r.temps, 3);
    assert_eq!(r.unplanned_bytes, 3 * 256);
    assert_eq!(r.peak_bytes, 2 * 256);
}
