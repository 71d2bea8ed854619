//! The indexing, layout and misc schedules (GatherElements, GatherND,
//! ScatterElements, ScatterND, Trilu, Pad, SpaceToDepth, DepthToSpace,
//! ReverseSequence, EyeLike, CumSum, Tile, OneHot, Range, Einsum, Resize,
//! TopK) through the whole native path: schedule → Cranelift JIT, on four
//! threads, against the reference interpreter on random inputs.
//!
//! The graphs are lowered as written (no constant folding), so every node
//! reaches its schedule; the ONNX node tests mostly fold these ops away,
//! since their inputs are small. Run with
//! `cargo test --test index_ops_native`.

use kiln_ir::{DType, Dim, Graph, Tensor};
use kiln_passes::schedule::{self, Options};

/// Random inputs: floats in [-2, 2), integers in [-3, 3) (indices count
/// from the end), bools half true.
fn inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut unit = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    g.inputs
        .iter()
        .map(|&v| {
            let ty = g.ty(v);
            let dims: Vec<usize> = ty
                .shape
                .0
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Sym(_) => 3,
                })
                .collect();
            let n: usize = dims.iter().product();
            let vals: Vec<f64> = (0..n)
                .map(|_| match ty.dtype {
                    d if d.is_float() => unit() * 4.0 - 2.0,
                    DType::Bool => (unit() < 0.5) as u8 as f64,
                    d if d.is_signed_int() => (unit() * 6.0).floor() - 3.0,
                    _ => (unit() * 3.0).floor(),
                })
                .collect();
            Tensor::from_f64s(ty.dtype, dims, &vals).unwrap()
        })
        .collect()
}

fn close(a: &Tensor, b: &Tensor, rtol: f64) -> Result<(), String> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Err(format!("{} vs {}", a.ty(), b.ty()));
    }
    for (i, (p, q)) in a.to_f64_vec().iter().zip(&b.to_f64_vec()).enumerate() {
        let ok = (p.is_nan() && q.is_nan())
            || p == q
            || (p - q).abs() <= rtol * (1.0 + p.abs().max(q.abs()));
        if !ok {
            return Err(format!("element {i}: native {p} vs reference {q}"));
        }
    }
    Ok(())
}

/// Compiles `src` natively and compares with the interpreter on a few seeds
/// (seeds whose inputs the interpreter rejects, e.g. an index out of range,
/// are skipped; at least one must run).
fn check(src: &str, rtol: f64) {
    let g = kiln_ir::text::parse(src, "test").unwrap_or_else(|e| panic!("{e}\n{src}"));
    let p = schedule::lower(&g, &Options::default()).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let opts = kiln_cranelift::Options {
        threads: 4,
        ..Default::default()
    };
    let exe = kiln_cranelift::compile(&p, &opts).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let mut ran = 0;
    for seed in 0..4 {
        let ins = inputs(&g, seed);
        let Ok(want) = kiln_ir::interp::run(&g, &ins) else {
            continue;
        };
        let got = exe.run(&ins).unwrap_or_else(|e| panic!("{e}\n{src}"));
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            close(a, b, rtol).unwrap_or_else(|e| panic!("output {k} (seed {seed}): {e}\n{src}"));
        }
        ran += 1;
    }
    assert!(
        ran > 0,
        "the interpreter rejected every input set of\n{src}"
    );
}

fn graph(inputs: &[&str], consts: &[&str], node: &str, outs: &str) -> String {
    let mut s = String::from("graph @t {\n");
    for (i, t) in inputs.iter().enumerate() {
        s += &format!(" in %{i}: {t}\n");
    }
    for c in consts {
        s += &format!(" const {c}\n");
    }
    s += &format!(" {node} @n\n out {outs}\n}}");
    s
}

#[test]
fn gathers_and_scatters() {
    check(
        &graph(
            &["f32[4,5]", "i64[4,3]"],
            &[],
            "%2: f32[4,3] = GatherElements[axis=1](%0, %1)",
            "%2",
        ),
        0.0,
    );
    check(
        &graph(
            &["u8[4,5]", "i32[3,5]"],
            &[],
            "%2: u8[3,5] = GatherElements[axis=0](%0, %1)",
            "%2",
        ),
        0.0,
    );
    check(
        &graph(
            &["f32[4,4,5]", "i64[3,2]"],
            &[],
            "%2: f32[3,5] = GatherND(%0, %1)",
            "%2",
        ),
        0.0,
    );
    check(
        &graph(
            &["i64[2,4,5]", "i64[2,3,1]"],
            &[],
            "%2: i64[2,3,5] = GatherND[batch_dims=1](%0, %1)",
            "%2",
        ),
        0.0,
    );
    for red in ["none", "add", "mul", "max", "min"] {
        check(
            &graph(
                &["f32[4,5]", "i64[4,3]", "f32[4,3]"],
                &[],
                &format!("%3: f32[4,5] = ScatterElements[axis=1, reduction=\"{red}\"](%0, %1, %2)"),
                "%3",
            ),
            0.0,
        );
        check(
            &graph(
                &["f16[5,4]", "i64[3,4]", "f16[3,4]"],
                &[],
                &format!("%3: f16[5,4] = ScatterElements[axis=0, reduction=\"{red}\"](%0, %1, %2)"),
                "%3",
            ),
            0.0,
        );
        check(
            &graph(
                &["i32[4,3,2]", "i64[5,1]", "i32[5,3,2]"],
                &[],
                &format!("%3: i32[4,3,2] = ScatterND[reduction=\"{red}\"](%0, %1, %2)"),
                "%3",
            ),
            0.0,
        );
        check(
            &graph(
                &["bool[4,3]", "i64[2,2]", "bool[2]"],
                &[],
                &format!("%3: bool[4,3] = ScatterND[reduction=\"{red}\"](%0, %1, %2)"),
                "%3",
            ),
            0.0,
        );
    }
}

#[test]
fn layouts() {
    for mode in ["constant", "reflect", "edge", "wrap"] {
        for (pads, out) in [("[1, 2, 2, 1]", "6,7"), ("[-1, 3, 5, -2]", "7,5")] {
            check(
                &graph(
                    &["f32[3,4]", "f32[]"],
                    &[&format!("%2: i64[4] = {pads}")],
                    &format!("%3: f32[{out}] = Pad[mode=\"{mode}\"](%0, %2, %1)"),
                    "%3",
                ),
                0.0,
            );
            check(
                &graph(
                    &["i8[3,4]"],
                    &[&format!("%1: i64[4] = {pads}")],
                    &format!("%2: i8[{out}] = Pad[mode=\"{mode}\"](%0, %1)"),
                    "%2",
                ),
                0.0,
            );
        }
    }
    check(
        &graph(
            &["f32[2,3]"],
            &["%1: i64[2] = [3, 2]"],
            "%2: f32[6,6] = Tile(%0, %1)",
            "%2",
        ),
        0.0,
    );
    for mode in ["DCR", "CRD"] {
        check(
            &graph(
                &["f32[2,8,3,2]"],
                &[],
                &format!("%1: f32[2,2,6,4] = DepthToSpace[blocksize=2, mode=\"{mode}\"](%0)"),
                "%1",
            ),
            0.0,
        );
        check(
            &graph(
                &["f16[1,2,6,9]"],
                &[],
                &format!("%1: f16[1,18,2,3] = SpaceToDepth[blocksize=3, mode=\"{mode}\"](%0)"),
                "%1",
            ),
            0.0,
        );
    }
}

#[test]
fn selections_and_scans() {
    for upper in [0, 1] {
        check(
            &graph(
                &["f32[2,4,5]", "i64[]"],
                &[],
                &format!("%2: f32[2,4,5] = Trilu[upper={upper}](%0, %1)"),
                "%2",
            ),
            0.0,
        );
    }
    check(
        &graph(
            &["f32[4,3,2]"],
            &["%1: i64[3] = [4, 0, 2]"],
            "%2: f32[4,3,2] = ReverseSequence[batch_axis=1, time_axis=0](%0, %1)",
            "%2",
        ),
        0.0,
    );
    check(
        &graph(
            &["i64[2,3]", "f32[2]"],
            &["%2: i64[] = 5"],
            "%3: f32[2,5,3] = OneHot[axis=1](%0, %2, %1)",
            "%3",
        ),
        0.0,
    );
    check(
        &graph(
            &["f32[3,5]"],
            &[],
            "%1: f64[3,5] = EyeLike[k=1, dtype=11](%0)",
            "%1",
        ),
        0.0,
    );
    for (ex, rev) in [(0, 0), (1, 1)] {
        check(
            &graph(
                &["f32[3,4,5]"],
                &["%1: i64[] = -2"],
                &format!("%2: f32[3,4,5] = CumSum[exclusive={ex}, reverse={rev}](%0, %1)"),
                "%2",
            ),
            0.0,
        );
        check(
            &graph(
                &["i32[3,4,5]", "i32[]"],
                &[],
                &format!("%2: i32[3,4,5] = CumSum[exclusive={ex}, reverse={rev}](%0, %1)"),
                "%2",
            ),
            0.0,
        );
    }
}

#[test]
fn range_topk_einsum_resize() {
    // (Range's length depends on its operands' values, so they are constants here)
    check(
        &graph(
            &["f32[2]"],
            &["%1: f32[] = -1.5", "%2: f32[] = 2.0", "%3: f32[] = 0.3"],
            "%4: f32[12] = Range(%1, %2, %3)",
            "%4",
        ),
        0.0,
    );
    check(
        &graph(
            &["f32[2]"],
            &["%1: i64[] = 7", "%2: i64[] = -6", "%3: i64[] = -3"],
            "%4: i64[5] = Range(%1, %2, %3)",
            "%4",
        ),
        0.0,
    );
    for largest in [0, 1] {
        check(
            &graph(
                &["f32[3,7,4]"],
                &["%1: i64[1] = [3]"],
                &format!(
                    "%2: f32[3,3,4], %3: i64[3,3,4] = TopK[axis=1, largest={largest}](%0, %1)"
                ),
                "%2, %3",
            ),
            0.0,
        );
        check(
            &graph(
                &["i64[5,6]"],
                &["%1: i64[1] = [6]"],
                &format!("%2: i64[5,6], %3: i64[5,6] = TopK[largest={largest}](%0, %1)"),
                "%2, %3",
            ),
            0.0,
        );
    }
    check(
        &graph(
            &["f32[2,3,4]", "f32[2,4,5]"],
            &[],
            "%2: f32[2,3,5] = Einsum[equation=\"bij,bjk->bik\"](%0, %1)",
            "%2",
        ),
        1e-6,
    );
    check(
        &graph(
            &["f32[4,4]"],
            &[],
            "%1: f32[] = Einsum[equation=\"ii\"](%0)",
            "%1",
        ),
        1e-6,
    );
    check(
        &graph(
            &["i64[2,3,3]"],
            &[],
            "%1: i64[2,3] = Einsum[equation=\"...ii->...i\"](%0)",
            "%1",
        ),
        0.0,
    );
    for mode in ["nearest", "linear", "cubic"] {
        check(
            &graph(
                &["f32[1,2,5,6]"],
                &["%1: f32[4] = [1.0, 1.0, 1.6, 0.5]"],
                &format!("%2: f32[1,2,8,3] = Resize[mode=\"{mode}\"](%0, _, %1)"),
                "%2",
            ),
            1e-6,
        );
        check(
            &graph(
                &["u8[1,1,4,4]"],
                &["%1: i64[2] = [7, 3]"],
                &format!("%2: u8[1,1,7,3] = Resize[mode=\"{mode}\", axes=[2, 3]](%0, _, _, %1)"),
                "%2",
            ),
            0.0,
        );
    }
    check(&graph(&["f32[1,1,4,4]"], &["%1: f32[4] = [-0.2, 0.6, 0.6, 1.3]", "%2: i64[2] = [3, 5]"], "%3: f32[1,1,3,5] = Resize[mode=\"linear\", axes=[2, 3], coordinate_transformation_mode=\"tf_crop_and_resize\", extrapolation_value=10.0](%0, %1, _, %2)", "%3"), 1e-6);
}
