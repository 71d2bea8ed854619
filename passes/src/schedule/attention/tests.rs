//! Tests of the Attention schedule: every lowered program is verified,
//! round-tripped through the text form, run on the kernel-IR interpreter
//! (grid in order and reversed, and after memory planning) and compared with
//! the reference interpreter on random inputs; and no buffer or `Alloc` of
//! the program (inputs and the output aside) has `S_q × S_total` elements.

use super::*;
use crate::schedule::lower as lower_graph;
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

/// Every `Alloc` length in `ss`, recursively.
fn alloc_lens(ss: &[Stmt], out: &mut Vec<usize>) {
    for s in ss {
        match s {
            Stmt::Alloc { len, .. } => out.push(*len),
            Stmt::For { body, .. } => alloc_lens(body, out),
            Stmt::If { then, els, .. } => {
                alloc_lens(then, out);
                alloc_lens(els, out);
            }
            _ => {}
        }
    }
}

/// The largest scratch of `p`: every Alloc and every buffer that is neither
/// a program input nor an output.
fn largest_scratch(p: &Program) -> usize {
    let mut lens = Vec::new();
    for k in &p.kernels {
        alloc_lens(&k.body, &mut lens);
    }
    lens.extend(
        p.buffers
            .iter()
            .filter(|b| !matches!(b.kind, BufKind::Input(_) | BufKind::Output(_)))
            .map(|b| b.len()),
    );
    lens.into_iter().max().unwrap_or(0)
}

/// `S_q`, `S_q × S_total` and the largest per-row scratch the schedule may
/// use with key block `block`: one key block of logits (rounded up to the
/// vector width), the row's Q (`D`) and its accumulator (`Dv`).
fn score_elems(g: &Graph, block: usize) -> (usize, usize, usize) {
    let n = g
        .nodes
        .iter()
        .find(|n| n.op == Op::Attention)
        .expect("an Attention node");
    let ins: Vec<Option<&TensorType>> = n.inputs.iter().map(|o| o.map(|v| g.ty(v))).collect();
    let p = plan(&n.attrs, &ins, n.outputs.len()).unwrap_or_else(|e| panic!("{e}"));
    let lanes = Options::default().lanes as usize;
    let logits = block.max(1).min(p.g.total().max(1)).div_ceil(lanes) * lanes;
    (
        p.g.q_seq,
        p.g.q_seq * p.g.total(),
        logits.max(p.g.head).max(p.g.v_head),
    )
}

/// Lowers `src` with key block `block`, checks it against the reference.
fn check_with(src: &str, block: usize, rtol: f64) -> Program {
    let g = parse(src);
    let opts = Options {
        attn_block: block,
        ..Options::default()
    };
    let mut p = lower_graph(&g, &opts).unwrap_or_else(|e| panic!("{e}"));
    text::check_round_trip(&p).unwrap_or_else(|e| panic!("{e}\n{}", text::print(&p)));
    // one kernel per output: Y, then present_key/present_value/qk_matmul_output
    let n_out = g.nodes.iter().map(|n| n.outputs.len()).sum::<usize>();
    assert_eq!(p.kernels.len(), n_out, "{}", text::print(&p));
    // the only scratch is one key block of logits: below S_q·S_total
    // whenever there is more than one query row
    let (sq, big, row) = score_elems(&g, block);
    // qk_matmul_output is S_q·S_total by definition: it is an output, never
    // a scratch
    let most = largest_scratch(&p);
    assert!(
        most <= row && (sq < 2 || big == 0 || most < big),
        "a scratch of {most} elements (S_q·S_total = {big})\n{}",
        text::print(&p)
    );
    for seed in 0..3u64 {
        let ins = random_inputs(&g, seed);
        let want = kiln_ir::interp::run(&g, &ins).unwrap_or_else(|e| panic!("{e}"));
        for rev in [false, true] {
            let got = interp::run_with(&p, &ins, interp::Options { reverse_grid: rev })
                .unwrap_or_else(|e| panic!("{e}\n{}", text::print(&p)));
            assert_eq!(got.len(), want.len());
            for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                // the extra outputs repeat the reference's operations: exact
                let tol = if k == 0 { rtol } else { 0.0 };
                close(a, b, tol).unwrap_or_else(|e| {
                    panic!("output {k} (seed {seed}, block {block}): {e}\n{src}")
                });
            }
        }
    }
    let before = p.clone();
    crate::memplan::plan(&mut p);
    kiln_ir::kernel::verify::verify(&p).unwrap_or_else(|e| panic!("{e}"));
    let ins = random_inputs(&g, 7);
    let a = interp::run(&before, &ins).unwrap_or_else(|e| panic!("{e}"));
    let b = interp::run(&p, &ins).unwrap_or_else(|e| panic!("{e}"));
    for (x, y) in a.iter().zip(&b) {
        assert!(x.bit_eq(y), "memory planning changed a result");
    }
    p
}

/// Checks with key blocks of 1, 3 (partial blocks on odd lengths) and the default.
fn check(src: &str) {
    for block in [1, 3, Options::default().attn_block] {
        check_with(src, block, 1e-5);
    }
}

fn graph(ins: &[&str], attrs: &str, operands: &str, out: &str) -> String {
    let mut s = String::from("graph @t {\n");
    for (k, t) in ins.iter().enumerate() {
        s += &format!(" in %{k}: {t}\n");
    }
    let a = if attrs.is_empty() {
        String::new()
    } else {
        format!("[{attrs}]")
    };
    s += &format!(
        " %{n}: {out} = Attention{a}({operands}) @attn\n out %{n}\n}}",
        n = ins.len()
    );
    s
}

fn qkv(q: &str, k: &str, v: &str, attrs: &str, out: &str) -> String {
    graph(&[q, k, v], attrs, "%0, %1, %2", out)
}

#[test]
fn four_d_shapes() {
    check(&qkv(
        "f32[2,3,5,8]",
        "f32[2,3,7,8]",
        "f32[2,3,7,8]",
        "",
        "f32[2,3,5,8]",
    ));
    // S_q > S_kv, one head, head_dim 1
    check(&qkv(
        "f32[1,1,7,1]",
        "f32[1,1,2,1]",
        "f32[1,1,2,1]",
        "",
        "f32[1,1,7,1]",
    ));
    // more query rows than one query block
    check(&qkv(
        "f32[1,2,37,4]",
        "f32[1,2,19,4]",
        "f32[1,2,19,4]",
        "",
        "f32[1,2,37,4]",
    ));
}

#[test]
fn head_dims_not_a_multiple_of_the_vector_width() {
    check(&qkv(
        "f32[1,2,9,6]",
        "f32[1,2,11,6]",
        "f32[1,2,11,5]",
        "",
        "f32[1,2,9,5]",
    ));
    check(&qkv(
        "f32[2,1,3,3]",
        "f32[2,1,5,3]",
        "f32[2,1,5,7]",
        "",
        "f32[2,1,3,7]",
    ));
    check(&qkv(
        "f32[1,1,4,13]",
        "f32[1,1,6,13]",
        "f32[1,1,6,2]",
        "",
        "f32[1,1,4,2]",
    ));
}

#[test]
fn grouped_and_multi_query_heads() {
    check(&qkv(
        "f32[2,4,5,8]",
        "f32[2,2,6,8]",
        "f32[2,2,6,8]",
        "",
        "f32[2,4,5,8]",
    ));
    check(&qkv(
        "f32[1,6,3,4]",
        "f32[1,1,9,4]",
        "f32[1,1,9,4]",
        "",
        "f32[1,6,3,4]",
    ));
}

#[test]
fn three_d_inputs() {
    // Hq = 4, Hkv = 2, D = 3, Dv = 5
    check(&qkv(
        "f32[2,5,12]",
        "f32[2,7,6]",
        "f32[2,7,10]",
        "q_num_heads=4, kv_num_heads=2",
        "f32[2,5,20]",
    ));
    check(&qkv(
        "f32[1,6,16]",
        "f32[1,6,16]",
        "f32[1,6,16]",
        "q_num_heads=2, kv_num_heads=2, is_causal=1",
        "f32[1,6,16]",
    ));
}

#[test]
fn causal_with_unequal_lengths() {
    for (sq, skv) in [(5, 9), (9, 5), (6, 6), (1, 4)] {
        check(&qkv(
            &format!("f32[1,2,{sq},4]"),
            &format!("f32[1,2,{skv},4]"),
            &format!("f32[1,2,{skv},4]"),
            "is_causal=1",
            &format!("f32[1,2,{sq},4]"),
        ));
    }
}

#[test]
fn scale_and_softcap() {
    check(&qkv(
        "f32[1,2,5,8]",
        "f32[1,2,7,8]",
        "f32[1,2,7,8]",
        "scale=0.7",
        "f32[1,2,5,8]",
    ));
    check(&qkv(
        "f32[1,2,5,8]",
        "f32[1,2,7,8]",
        "f32[1,2,7,8]",
        "scale=2.5, softcap=1.5",
        "f32[1,2,5,8]",
    ));
}

#[test]
fn additive_masks_broadcast() {
    let (q, k, v, y) = (
        "f32[2,3,5,6]",
        "f32[2,3,7,6]",
        "f32[2,3,7,6]",
        "f32[2,3,5,6]",
    );
    for m in [
        "f32[7]",
        "f32[5,7]",
        "f32[2,1,5,7]",
        "f32[1,3,1,7]",
        "f32[2,3,5,7]",
        // last axis shorter than S_kv: padded with -inf
        "f32[5,4]",
        "f32[1]",
    ] {
        check(&graph(&[q, k, v, m], "", "%0, %1, %2, %3", y));
    }
    check(&graph(
        &[q, k, v, "f32[5,7]"],
        "is_causal=1",
        "%0, %1, %2, %3",
        y,
    ));
}

#[test]
fn bool_masks() {
    // random masks include fully masked rows (zeros, as in the reference)
    let (q, k, v, y) = (
        "f32[2,3,5,6]",
        "f32[2,3,7,6]",
        "f32[2,3,7,6]",
        "f32[2,3,5,6]",
    );
    for m in ["bool[2,3,5,7]", "bool[5,7]", "bool[2,1,1,7]", "bool[3,1,6]"] {
        check(&graph(&[q, k, v, m], "", "%0, %1, %2, %3", y));
    }
    check(&graph(
        &[q, k, v, "bool[5,7]"],
        "is_causal=1",
        "%0, %1, %2, %3",
        y,
    ));
}

#[test]
fn windows() {
    for w in [
        "left_window_size=2",
        "right_window_size=1",
        "left_window_size=1, right_window_size=0",
        "is_causal=1, left_window_size=3",
    ] {
        check(&qkv(
            "f32[1,2,6,4]",
            "f32[1,2,8,4]",
            "f32[1,2,8,4]",
            w,
            "f32[1,2,6,4]",
        ));
    }
}

#[test]
fn past_key_value_read_in_place() {
    let ins = [
        "f32[1,2,5,4]",
        "f32[1,2,4,4]",
        "f32[1,2,4,3]",
        "f32[1,2,3,4]",
        "f32[1,2,3,3]",
    ];
    check(&graph(&ins, "", "%0, %1, %2, _, %3, %4", "f32[1,2,5,3]"));
    check(&graph(
        &ins,
        "is_causal=1",
        "%0, %1, %2, _, %3, %4",
        "f32[1,2,5,3]",
    ));
    let with_mask = [
        "f32[1,2,5,4]",
        "f32[1,2,4,4]",
        "f32[1,2,4,3]",
        "f32[5,7]",
        "f32[1,2,3,4]",
        "f32[1,2,3,3]",
    ];
    check(&graph(
        &with_mask,
        "is_causal=1",
        "%0, %1, %2, %3, %4, %5",
        "f32[1,2,5,3]",
    ));
}

#[test]
fn nonpad_kv_seqlen() {
    // random lengths are 0, 1 or 2 (0: every row is zeros)
    let ins = ["f32[3,2,4,4]", "f32[3,2,5,4]", "f32[3,2,5,4]", "i64[3]"];
    check(&graph(&ins, "", "%0, %1, %2, _, _, _, %3", "f32[3,2,4,4]"));
    check(&graph(
        &ins,
        "is_causal=1",
        "%0, %1, %2, _, _, _, %3",
        "f32[3,2,4,4]",
    ));
}

#[test]
fn empty_key_sequence_gives_zeros() {
    check(&qkv(
        "f32[1,1,3,4]",
        "f32[1,1,0,4]",
        "f32[1,1,0,4]",
        "",
        "f32[1,1,3,4]",
    ));
}

#[test]
fn other_float_types() {
    check_with(
        &qkv(
            "f64[1,2,5,6]",
            "f64[1,2,7,6]",
            "f64[1,2,7,6]",
            "is_causal=1",
            "f64[1,2,5,6]",
        ),
        3,
        1e-12,
    );
    for dt in ["f16", "bf16"] {
        let tol = if dt == "f16" { 2e-3 } else { 1e-2 };
        let src = graph(
            &[
                &format!("{dt}[1,2,5,6]"),
                &format!("{dt}[1,2,7,6]"),
                &format!("{dt}[1,2,7,6]"),
                "f32[5,7]",
            ],
            "",
            "%0, %1, %2, %3",
            &format!("{dt}[1,2,5,6]"),
        );
        check_with(&src, 3, tol);
    }
}

#[test]
fn no_score_matrix_at_realistic_sizes() {
    // S_q = S_kv = 256: a score matrix would be 65536 elements; the only
    // scratch is one key block of logits.
    let src = qkv(
        "f32[1,1,256,8]",
        "f32[1,1,256,8]",
        "f32[1,1,256,8]",
        "is_causal=1",
        "f32[1,1,256,8]",
    );
    let g = parse(&src);
    let p = lower_graph(&g, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(largest_scratch(&p), Options::default().attn_block);
    assert!(largest_scratch(&p) < 256 * 256);
}

#[test]
fn vectorised_dot_products_and_accumulators() {
    let g = parse(&qkv(
        "f32[1,1,4,8]",
        "f32[1,1,4,8]",
        "f32[1,1,4,8]",
        "",
        "f32[1,1,4,8]",
    ));
    let p = lower_graph(&g, &Options::default()).unwrap();
    let t = text::print(&p);
    assert!(t.contains("reduce_add"), "{t}");
    assert!(t.contains(": f32x4 = splat"), "{t}");
    assert!(t.contains("load(b1, ") && t.contains(", 4)"), "{t}");
}

/// A graph with one Attention node of several outputs.
fn multi(ins: &[&str], attrs: &str, operands: &str, outs: &[&str]) -> String {
    let mut s = String::from("graph @t {\n");
    for (k, t) in ins.iter().enumerate() {
        s += &format!(" in %{k}: {t}\n");
    }
    let a = if attrs.is_empty() {
        String::new()
    } else {
        format!("[{attrs}]")
    };
    let n = ins.len();
    let defs: Vec<String> = outs
        .iter()
        .enumerate()
        .map(|(k, t)| format!("%{}: {t}", n + k))
        .collect();
    let names: Vec<String> = (0..outs.len()).map(|k| format!("%{}", n + k)).collect();
    s + &format!(
        " {} = Attention{a}({operands}) @attn\n out {}\n}}",
        defs.join(", "),
        names.join(", ")
    )
}

#[test]
fn present_key_and_value() {
    // past ++ new, 4-D
    let ins = [
        "f32[1,2,5,4]",
        "f32[1,2,4,4]",
        "f32[1,2,4,3]",
        "f32[1,2,3,4]",
        "f32[1,2,3,3]",
    ];
    let outs = ["f32[1,2,5,3]", "f32[1,2,7,4]", "f32[1,2,7,3]"];
    check(&multi(&ins, "is_causal=1", "%0, %1, %2, _, %3, %4", &outs));
    // no past: present = K, V split into heads (3-D, GQA)
    check(&multi(
        &["f32[2,5,12]", "f32[2,7,6]", "f32[2,7,10]"],
        "q_num_heads=4, kv_num_heads=2",
        "%0, %1, %2",
        &["f32[2,5,20]", "f32[2,2,7,3]", "f32[2,2,7,5]"],
    ));
    // 3-D with a past cache, 16-bit storage
    check_with(
        &multi(
            &[
                "f16[2,3,8]",
                "f16[2,4,4]",
                "f16[2,4,6]",
                "f16[2,2,2,2]",
                "f16[2,2,2,3]",
            ],
            "q_num_heads=4, kv_num_heads=2",
            "%0, %1, %2, _, %3, %4",
            &["f16[2,3,12]", "f16[2,2,6,2]", "f16[2,2,6,3]"],
        ),
        3,
        2e-3,
    );
    // an empty past
    check(&multi(
        &[
            "f32[1,1,2,4]",
            "f32[1,1,3,4]",
            "f32[1,1,3,4]",
            "f32[1,1,0,4]",
            "f32[1,1,0,4]",
        ],
        "",
        "%0, %1, %2, _, %3, %4",
        &["f32[1,1,2,4]", "f32[1,1,3,4]", "f32[1,1,3,4]"],
    ));
}

#[test]
fn qk_matmul_output_every_mode() {
    let ins = [
        "f32[2,2,5,4]",
        "f32[2,2,3,4]",
        "f32[2,2,3,3]",
        "f32[5,6]",
        "f32[2,2,3,4]",
        "f32[2,2,3,3]",
    ];
    let outs = [
        "f32[2,2,5,3]",
        "f32[2,2,6,4]",
        "f32[2,2,6,3]",
        "f32[2,2,5,6]",
    ];
    for mode in 0..4 {
        for extra in ["", ", softcap=1.5", ", is_causal=1, scale=0.7"] {
            check(&multi(
                &ins,
                &format!("qk_matmul_output_mode={mode}{extra}"),
                "%0, %1, %2, %3, %4, %5",
                &outs,
            ));
        }
    }
}

#[test]
fn qk_matmul_output_with_masks_windows_and_padding() {
    let (q, k, v) = ("f32[2,3,5,6]", "f32[2,3,7,6]", "f32[2,3,7,6]");
    let outs = [
        "f32[2,3,5,6]",
        "f32[2,3,7,6]",
        "f32[2,3,7,6]",
        "f32[2,3,5,7]",
    ];
    for mode in [2, 3] {
        // bool masks with fully masked rows, a padded last axis
        for m in ["bool[2,3,5,7]", "bool[5,4]", "f32[2,1,5,7]"] {
            check(&multi(
                &[q, k, v, m],
                &format!("qk_matmul_output_mode={mode}"),
                "%0, %1, %2, %3",
                &outs,
            ));
        }
        check(&multi(
            &[q, k, v],
            &format!("qk_matmul_output_mode={mode}, left_window_size=1, right_window_size=2"),
            "%0, %1, %2",
            &outs,
        ));
        // nonpad_kv_seqlen (random lengths 0..=2: zero rows included)
        check(&multi(
            &[q, k, v, "i64[2]"],
            &format!("qk_matmul_output_mode={mode}, is_causal=1"),
            "%0, %1, %2, _, _, _, %3",
            &outs,
        ));
    }
}

#[test]
fn qk_matmul_output_other_float_types() {
    for (dt, tol) in [("f16", 2e-3), ("bf16", 1e-2)] {
        for attrs in [
            "qk_matmul_output_mode=3",
            "qk_matmul_output_mode=2, softcap=2.0",
            "qk_matmul_output_mode=3, softmax_precision=1",
        ] {
            check_with(
                &multi(
                    &[
                        &format!("{dt}[1,2,5,6]"),
                        &format!("{dt}[1,2,7,6]"),
                        &format!("{dt}[1,2,7,6]"),
                        &format!("{dt}[5,7]"),
                    ],
                    attrs,
                    "%0, %1, %2, %3",
                    &[
                        &format!("{dt}[1,2,5,6]"),
                        &format!("{dt}[1,2,7,6]"),
                        &format!("{dt}[1,2,7,6]"),
                        &format!("{dt}[1,2,5,7]"),
                    ],
                ),
                3,
                tol,
            );
        }
    }
    // softmax in f64 for f32 inputs
    check(&multi(
        &["f32[1,1,3,4]", "f32[1,1,5,4]", "f32[1,1,5,4]"],
        "qk_matmul_output_mode=3, softmax_precision=11",
        "%0, %1, %2",
        &[
            "f32[1,1,3,4]",
            "f32[1,1,5,4]",
            "f32[1,1,5,4]",
            "f32[1,1,3,5]",
        ],
    ));
}

#[test]
fn extra_outputs_get_kernels_of_their_own() {
    let src = multi(
        &["f32[1,1,3,4]", "f32[1,1,5,4]", "f32[1,1,5,4]"],
        "",
        "%0, %1, %2",
        &[
            "f32[1,1,3,4]",
            "f32[1,1,5,4]",
            "f32[1,1,5,4]",
            "f32[1,1,3,5]",
        ],
    );
    let p = lower_graph(&parse(&src), &Options::default()).unwrap();
    let names: Vec<&str> = p.kernels.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "attn",
            "attn present_key",
            "attn present_value",
            "attn qk_matmul_output"
        ]
    );
}
