//! The FlashAttention schedule compiled by the Cranelift backend: every
//! program is lowered by `kiln_passes::schedule`, compiled with
//! `kiln_cranelift::compile` and run natively; the results must equal the
//! kernel-IR interpreter's bit for bit (the backend's contract) and the
//! reference interpreter's within 1e-5.

use kiln_ir::kernel::{interp, Program};
use kiln_ir::{DType, Graph, Tensor};
use kiln_passes::schedule::{lower, Options};
use std::time::Instant;

/// splitmix64 inputs: floats uniform in [-2, 2), bools fair, ints in [0, 3).
fn inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut s = seed;
    let mut unit = move || {
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
            let vals: Vec<f64> = (0..n)
                .map(|_| match ty.dtype {
                    d if d.is_float() => unit() * 4.0 - 2.0,
                    DType::Bool => (unit() < 0.5) as u8 as f64,
                    _ => (unit() * 3.0).floor(),
                })
                .collect();
            Tensor::from_f64s(ty.dtype, dims, &vals).unwrap()
        })
        .collect()
}

fn close(a: &Tensor, b: &Tensor, rtol: f64) {
    assert_eq!(a.shape(), b.shape());
    for (i, (p, q)) in a.to_f64_vec().iter().zip(b.to_f64_vec()).enumerate() {
        assert!(
            *p == q || (p - q).abs() <= rtol * (1.0 + p.abs().max(q.abs())),
            "element {i}: native {p} vs reference {q}"
        );
    }
}

fn compile(src: &str, block: usize) -> (Graph, Program, kiln_cranelift::Executable) {
    let g = kiln_ir::text::parse(src, "<test>").unwrap_or_else(|e| panic!("{e}"));
    let opts = Options {
        attn_block: block,
        ..Options::default()
    };
    let p = lower(&g, &opts).unwrap_or_else(|e| panic!("{e}"));
    let exe = kiln_cranelift::compile(&p, &kiln_cranelift::Options::default())
        .unwrap_or_else(|e| panic!("{e}"));
    (g, p, exe)
}

/// Native vs kernel interpreter (bit-exact) vs reference (1e-5).
fn check(src: &str, block: usize) {
    let (g, p, exe) = compile(src, block);
    for seed in 0..2 {
        let ins = inputs(&g, seed);
        let native = exe.run(&ins).unwrap_or_else(|e| panic!("{e}"));
        let kir = interp::run(&p, &ins).unwrap_or_else(|e| panic!("{e}"));
        let want = kiln_ir::interp::run(&g, &ins).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(native.len(), want.len());
        for ((n, k), w) in native.iter().zip(&kir).zip(&want) {
            assert!(n.bit_eq(k), "native and kernel interpreter differ\n{src}");
            close(n, w, 1e-5);
        }
    }
}

fn attn(ins: &[&str], attrs: &str, operands: &str, out: &str) -> String {
    let mut s = String::from("graph @t {\n");
    for (k, t) in ins.iter().enumerate() {
        s += &format!(" in %{k}: {t}\n");
    }
    let a = if attrs.is_empty() {
        String::new()
    } else {
        format!("[{attrs}]")
    };
    s + &format!(
        " %{n}: {out} = Attention{a}({operands}) @attn\n out %{n}\n}}",
        n = ins.len()
    )
}

#[test]
fn native_attention_matches_the_interpreters() {
    let qkv = "%0, %1, %2";
    // 4-D, odd lengths, S_q != S_kv
    check(
        &attn(
            &["f32[2,3,5,8]", "f32[2,3,7,8]", "f32[2,3,7,8]"],
            "",
            qkv,
            "f32[2,3,5,8]",
        ),
        3,
    );
    // head dims not a multiple of 4, GQA, causal
    check(
        &attn(
            &["f32[1,4,9,6]", "f32[1,2,11,6]", "f32[1,2,11,5]"],
            "is_causal=1",
            qkv,
            "f32[1,4,9,5]",
        ),
        4,
    );
    // 3-D with heads attributes, softcap, scale
    check(
        &attn(
            &["f32[2,5,12]", "f32[2,7,6]", "f32[2,7,10]"],
            "q_num_heads=4, kv_num_heads=2, scale=0.3, softcap=2.0",
            qkv,
            "f32[2,5,20]",
        ),
        64,
    );
    // additive and bool masks (fully masked rows included)
    check(
        &attn(
            &[
                "f32[2,3,5,6]",
                "f32[2,3,7,6]",
                "f32[2,3,7,6]",
                "f32[2,1,5,7]",
            ],
            "",
            "%0, %1, %2, %3",
            "f32[2,3,5,6]",
        ),
        2,
    );
    check(
        &attn(
            &["f32[2,3,5,6]", "f32[2,3,7,6]", "f32[2,3,7,6]", "bool[5,7]"],
            "is_causal=1",
            "%0, %1, %2, %3",
            "f32[2,3,5,6]",
        ),
        2,
    );
    // past key/value read in place
    check(
        &attn(
            &[
                "f32[1,2,5,4]",
                "f32[1,2,4,4]",
                "f32[1,2,4,3]",
                "f32[1,2,3,4]",
                "f32[1,2,3,3]",
            ],
            "is_causal=1",
            "%0, %1, %2, _, %3, %4",
            "f32[1,2,5,3]",
        ),
        2,
    );
}

/// The optional outputs (present key/value, the score matrix in every
/// mode) natively: bit-exact against the kernel interpreter, within 1e-5 of
/// the reference.
#[test]
fn native_extra_outputs() {
    for mode in 0..4 {
        let src = format!(
            "graph @t {{\n in %0: f32[1,2,5,4]\n in %1: f32[1,2,4,4]\n in %2: f32[1,2,4,3]\n \
             in %3: f32[5,7]\n in %4: f32[1,2,3,4]\n in %5: f32[1,2,3,3]\n \
             %6: f32[1,2,5,3], %7: f32[1,2,7,4], %8: f32[1,2,7,3], %9: f32[1,2,5,7] = \
             Attention[is_causal=1, softcap=2.0, qk_matmul_output_mode={mode}](%0, %1, %2, %3, %4, %5) @attn\n \
             out %6, %7, %8, %9\n}}"
        );
        check(&src, 2);
    }
}

/// A BERT-base-sized layer (12 heads of 64, 384 tokens): checked against
/// the reference, and timed (printed with `--nocapture`).
#[test]
fn native_attention_at_model_size() {
    let src = attn(
        &["f32[1,12,384,64]", "f32[1,12,384,64]", "f32[1,12,384,64]"],
        "",
        "%0, %1, %2",
        "f32[1,12,384,64]",
    );
    let (g, _p, exe) = compile(&src, Options::default().attn_block);
    let ins = inputs(&g, 3);
    let t0 = Instant::now();
    let native = exe.run(&ins).unwrap_or_else(|e| panic!("{e}"));
    let first = t0.elapsed();
    let reps = 5;
    let t1 = Instant::now();
    for _ in 0..reps {
        exe.run(&ins).unwrap();
    }
    let per = t1.elapsed() / reps;
    let flops = 4.0 * 12.0 * 384.0 * 384.0 * 64.0;
    eprintln!(
        "attention 1x12x384x64: first run {first:?}, then {per:?} per run ({:.2} GFLOP/s, {} threads)",
        flops / per.as_secs_f64() / 1e9,
        exe.threads()
    );
    let want = kiln_ir::interp::run(&g, &ins).unwrap_or_else(|e| panic!("{e}"));
    close(&native[0], &want[0], 1e-5);
}
