//! `exp` written as kernel-IR arithmetic, so that a backend vectorises it
//! like any other arithmetic (no call per lane) and the kernel-IR
//! interpreter computes the same bits as native code.
//!
//! Requires: an f32 value (any lane count) that is `<= 0`, `-inf` or NaN —
//! the softmax's `s - max`. Establishes: `exp(x)` within 2 ulp of libm's
//! `expf` for `x >= -87.33` (checked on every 3989th f32 of `[-87.33, 0]`
//! and around every switch of `n`, see the tests), exactly 0 below that
//! (where `expf` is below 2^-126, i.e. at most 1.2e-38 in a softmax whose
//! largest term is 1), 1 at 0, NaN for NaN.
//!
//! Method (Cephes `expf`): `n = round(x·log2 e)`, `r = x - n·ln 2` with
//! `ln 2` split in two parts (the first exact in few bits, so `n·c1` is
//! exact), a degree-5 polynomial for `exp(r) - 1 - r` on `|r| <= ln2/2`, and
//! the scale `2^n` for `n` in `[-126, 0]` built from the seven bits of `-n`
//! as a product of selected powers of two (the kernel IR has no bitcast);
//! every partial product is a normal power of two, so the scale is exact
//! and the result is rounded once more, by the final multiply.

use kiln_ir::kernel::{BinOp, CmpOp, Expr, Stmt, Var};
use kiln_ir::DType;

/// Below this `exp` is flushed to 0 (`expf(LO) ≈ 2^-126`).
const LO: f32 = -87.336_55;

/// Cephes `expf` polynomial, highest degree first.
#[allow(clippy::excessive_precision)] // Cephes constants, as published
const POLY: [f32; 6] = [
    1.987_569_150_0e-4,
    1.398_199_950_7e-3,
    8.333_451_907_3e-3,
    4.166_579_589_4e-2,
    1.666_666_545_9e-1,
    5.000_000_120_1e-1,
];

/// Emits statements into `out` computing `exp(x)` for `x` of `lanes` f32
/// lanes (see the module doc for the domain); `var` yields fresh variables.
/// Returns the expression of the result (a variable).
#[allow(clippy::excessive_precision)] // Cephes' ln 2 split, as published
pub(crate) fn exp_f32(
    out: &mut Vec<Stmt>,
    var: &mut dyn FnMut() -> Var,
    x: Expr,
    lanes: u32,
) -> Expr {
    let f = |v: f32| Expr::splat(lanes, Expr::f32(v));
    let mut bind = |out: &mut Vec<Stmt>, value: Expr| {
        let v = var();
        out.push(Stmt::Let { var: v, value });
        Expr::var(v)
    };
    let bin = Expr::binary;
    let x = bind(out, x);
    let xc = bind(out, bin(BinOp::Max, x.clone(), f(LO)));
    let fx = bind(
        out,
        Expr::unary(
            kiln_ir::kernel::UnOp::Round,
            bin(BinOp::Mul, xc.clone(), f(std::f32::consts::LOG2_E)),
        ),
    );
    let r = bin(
        BinOp::Sub,
        xc,
        bin(BinOp::Mul, fx.clone(), f(0.693_359_375)),
    );
    let r = bind(
        out,
        bin(
            BinOp::Sub,
            r,
            bin(BinOp::Mul, fx.clone(), f(-2.121_944_4e-4)),
        ),
    );
    let mut y = f(POLY[0]);
    for &c in &POLY[1..] {
        y = Expr::fma(y, r.clone(), f(c));
    }
    let r2 = bin(BinOp::Mul, r.clone(), r.clone());
    let y = bind(out, Expr::fma(y, r2, bin(BinOp::Add, r, f(1.0))));
    // 2^n, n = -k, k in 0..=126: the product of 2^-(2^b) over the set bits
    let k = bind(
        out,
        Expr::cast(DType::I32, Expr::unary(kiln_ir::kernel::UnOp::Neg, fx)),
    );
    let factors: Vec<Expr> = (0..7)
        .map(|b| {
            let bit = Expr::splat(lanes, Expr::int(DType::I32, 1 << b));
            let set = Expr::cmp(
                CmpOp::Ne,
                bin(BinOp::And, k.clone(), bit),
                Expr::splat(lanes, Expr::int(DType::I32, 0)),
            );
            Expr::select(set, f((-(1i32 << b) as f32).exp2()), f(1.0))
        })
        .collect();
    // a balanced product keeps the dependency chain short
    let mut level = factors;
    while level.len() > 1 {
        let mut next = Vec::new();
        let mut it = level.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => bin(BinOp::Mul, a, b),
                None => a,
            });
        }
        level = next;
    }
    let scale = level.pop().unwrap_or_else(|| f(1.0));
    let res = bin(BinOp::Mul, y, scale);
    bind(
        out,
        Expr::select(Expr::cmp(CmpOp::Lt, x, f(LO)), f(0.0), res),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::kernel::{
        interp, Access, BufId, BufKind, Buffer, IndexExpr, Kernel, Param, Program,
    };
    use kiln_ir::Tensor;

    /// Runs `exp_f32` on the kernel-IR interpreter over `xs` (4 lanes).
    fn run(xs: &[f32]) -> Vec<f32> {
        let n = xs.len().div_ceil(4) * 4;
        let mut vals = xs.to_vec();
        vals.resize(n, 0.0);
        let mut next = 1u32;
        let mut var = || {
            next += 1;
            Var(next)
        };
        let mut body = Vec::new();
        let i = Var(0);
        let e = exp_f32(
            &mut body,
            &mut var,
            Expr::load(BufId(0), IndexExpr::var(i).mul(4), 4),
            4,
        );
        body.push(Stmt::Store {
            buf: BufId(1),
            index: IndexExpr::var(i).mul(4),
            value: e,
        });
        let buf = |id: u32, kind: BufKind| Buffer {
            id: BufId(id),
            name: None,
            dtype: DType::F32,
            shape: vec![n],
            kind,
        };
        let p = Program {
            name: "exp".into(),
            buffers: vec![buf(0, BufKind::Input(0)), buf(1, BufKind::Output(0))],
            kernels: vec![Kernel {
                name: "exp".into(),
                params: vec![
                    Param {
                        buf: BufId(0),
                        access: Access::Read,
                    },
                    Param {
                        buf: BufId(1),
                        access: Access::Write,
                    },
                ],
                grid: vec![],
                body: vec![crate::schedule::for_n(i, n / 4, body)],
            }],
            arena_bytes: 0,
        };
        kiln_ir::kernel::verify::verify(&p).unwrap_or_else(|e| panic!("{e}"));
        let t = Tensor::from_f64s(
            DType::F32,
            vec![n],
            &vals.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        )
        .unwrap();
        let out = interp::run(&p, &[t]).unwrap_or_else(|e| panic!("{e}"));
        out[0].to_f64_vec()[..xs.len()]
            .iter()
            .map(|&v| v as f32)
            .collect()
    }

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn within_two_ulp_of_expf_on_the_softmax_domain() {
        // every 3989th f32 in [-87.33, 0] (about 280,000 values), plus
        // the ends and the points where the range reduction switches n
        let mut xs: Vec<f32> = Vec::new();
        let (lo, hi) = (LO.to_bits(), 0.0f32.to_bits() | 0x8000_0000);
        let mut b = hi;
        while b <= lo {
            xs.push(f32::from_bits(b));
            b += 3989;
        }
        for n in 0..=126 {
            let c = -(n as f32 + 0.5) * std::f32::consts::LN_2;
            xs.extend([
                c,
                f32::from_bits(c.to_bits() + 1),
                f32::from_bits(c.to_bits() - 1),
            ]);
        }
        xs.extend([0.0, -0.0, LO, -1e-30, -0.5, -1.0]);
        xs.retain(|&x| x >= LO);
        let got = run(&xs);
        let mut worst = (0, 0.0f32);
        for (&x, &g) in xs.iter().zip(&got) {
            let u = ulps(g, x.exp());
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(worst.0 <= 2, "{} ulp at x = {}", worst.0, worst.1);
        assert_eq!(run(&[0.0])[0], 1.0);
    }

    #[test]
    fn underflow_infinity_and_nan() {
        let got = run(&[f32::NEG_INFINITY, -88.0, -100.0, -1e30, f32::NAN]);
        assert_eq!(&got[..4], &[0.0; 4]);
        assert!(got[4].is_nan());
    }
}
