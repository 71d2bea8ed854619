//! Normalisations and activations recognised from their decompositions:
//! LayerNormalization and RMSNormalization (core, then scale, then bias),
//! Softmax from Exp/ReduceSum/Div, and GELU in its erf and tanh forms.
//!
//! Requires: the class helpers of [`super`]. Establishes: rules whose
//! right-hand sides are the ONNX ops (`LayerNormalization`,
//! `RMSNormalization`, `Softmax`, `Gelu`), each equal to the decomposition
//! it replaces up to the rounding of its intermediate steps (the
//! interpreter's fused op computes in f32 and rounds once).
//!
//! LayerNorm is recognised in three steps so that every form with or
//! without the affine parts is covered: `(x − mean x) / √(var + ε)` →
//! `LayerNormalization(x, 1)`; `LN(x, 1) · γ` → `LN(x, γ)`; `LN(x, γ) + β`
//! → `LN(x, γ, β)`. RMSNorm likewise (core, then scale).

use super::{
    binary, is_about, is_exactly, is_suffix, ops_in, reductions_of, type_of, unary, with_scalar,
};
use crate::egraph::analysis::{KEGraph, Rhs};
use crate::rules::{class, Rule};
use egg::{Id, Subst};
use kiln_ir::{Attr, Attrs, Op, Tensor};

/// Classes `p` with `c = p²` (`Pow(p, 2)` or `Mul(p, p)`).
fn squares_of(eg: &KEGraph, c: Id) -> Vec<Id> {
    let mut v: Vec<Id> = with_scalar(eg, c, Op::Pow)
        .into_iter()
        .filter(|&(_, k)| k == 2.0)
        .map(|(p, _)| p)
        .collect();
    v.extend(
        binary(eg, c, Op::Mul)
            .into_iter()
            .filter(|(a, b)| a == b)
            .map(|(a, _)| a),
    );
    v
}

/// `(v, ε)` for `c = √(v + ε)` with a scalar constant `ε`.
fn sqrt_plus_eps(eg: &KEGraph, c: Id) -> Vec<(Id, f64)> {
    unary(eg, c, Op::Sqrt)
        .into_iter()
        .flat_map(|u| with_scalar(eg, u, Op::Add))
        .collect()
}

/// The denominators `s` of `c`: `c = n / s` or `c = n · (1/s)` (either order).
fn quotients(eg: &KEGraph, c: Id) -> Vec<(Id, Id)> {
    let mut v = binary(eg, c, Op::Div);
    for (a, b) in binary(eg, c, Op::Mul) {
        for r in unary(eg, b, Op::Reciprocal) {
            v.push((a, r));
        }
        for r in unary(eg, a, Op::Reciprocal) {
            v.push((b, r));
        }
    }
    v
}

/// `(axes, ε)` when `s = √(mean(p², axes) + ε)` with keepdims.
fn rms_denominator(eg: &KEGraph, s: Id, p: Id) -> Option<(Vec<usize>, f64)> {
    for (v, eps) in sqrt_plus_eps(eg, s) {
        for o in ops_in(eg, v, Op::ReduceMean) {
            let sq = eg.find(o.args[0]);
            if !squares_of(eg, sq).contains(&eg.find(p)) {
                continue;
            }
            if let Some(axes) = reductions_of(eg, v, Op::ReduceMean, sq).into_iter().next() {
                return Some((axes, eps));
            }
        }
    }
    None
}

/// `(x, axes)` for `d = x − mean(x, axes)` with keepdims.
fn centered(eg: &KEGraph, d: Id) -> Vec<(Id, Vec<usize>)> {
    let mut out = Vec::new();
    for (x, m) in binary(eg, d, Op::Sub) {
        for axes in reductions_of(eg, m, Op::ReduceMean, x) {
            out.push((x, axes));
        }
    }
    out
}

/// The normalisation attributes and the all-ones scale for `x` normalised
/// over `axes` (a suffix of its axes).
fn norm_parts(eg: &KEGraph, x: Id, axes: &[usize], eps: f64) -> Option<(Attrs, Tensor)> {
    let t = type_of(eg, x)?;
    let rank = t.shape.rank();
    if !t.dtype.is_float() || !is_suffix(axes, rank) {
        return None;
    }
    let dims: Vec<usize> = t.shape.0[axes[0]..]
        .iter()
        .map(|d| d.fixed())
        .collect::<Option<_>>()?;
    let n: usize = dims.iter().product();
    let ones = Tensor::from_f64s(t.dtype, dims, &vec![1.0; n]).ok()?;
    let attrs = Attrs::new()
        .with("axis", Attr::Int(axes[0] as i64 - rank as i64))
        .with("epsilon", Attr::Float(eps as f32));
    Some((attrs, ones))
}

/// `(num, den)` pairs of the matched `Div`/`Mul` (see [`quotients`]).
fn matched_quotients(eg: &KEGraph, matched: Id, _s: &Subst) -> Vec<(Id, Id)> {
    quotients(eg, matched)
}

fn ln_core(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    for (d, den) in matched_quotients(eg, matched, s) {
        for (x, axes) in centered(eg, d) {
            let Some((axes2, eps)) = rms_denominator(eg, den, d) else {
                continue;
            };
            if axes2 != axes {
                continue;
            }
            let Some((attrs, ones)) = norm_parts(eg, x, &axes, eps) else {
                continue;
            };
            let mut r = Rhs::new();
            let hx = r.class(x);
            let h1 = r.konst(eg, ones);
            let ln = r.op(Op::LayerNormalization, attrs, &[hx, h1]);
            r.union_with(matched, ln);
            return Some(r);
        }
    }
    None
}

fn rms_core(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    for (x, den) in matched_quotients(eg, matched, s) {
        let Some((axes, eps)) = rms_denominator(eg, den, x) else {
            continue;
        };
        let Some((attrs, ones)) = norm_parts(eg, x, &axes, eps) else {
            continue;
        };
        let mut r = Rhs::new();
        let hx = r.class(x);
        let h1 = r.konst(eg, ones);
        let n = r.op(Op::RMSNormalization, attrs, &[hx, h1]);
        r.union_with(matched, n);
        return Some(r);
    }
    None
}

/// Whether `p` may be a LayerNorm/RMSNorm scale or bias for `x` normalised
/// from `axis` on: same dtype, and, leading 1s aside, no more axes than the
/// normalised ones, each equal to x's or 1 (ONNX: broadcastable to the
/// normalised shape).
fn fits_normalized(eg: &KEGraph, p: Id, x: Id, axis: i64) -> bool {
    let (Some(pt), Some(xt)) = (type_of(eg, p), type_of(eg, x)) else {
        return false;
    };
    let rank = xt.shape.rank();
    let Some(axis) = kiln_ir::shape::normalize_axis(axis, rank) else {
        return false;
    };
    let pd = &pt.shape.0;
    if pt.dtype != xt.dtype || pd.len() > rank {
        return false;
    }
    // axes of p before the normalised ones must be 1
    let extra = pd.len().saturating_sub(rank - axis);
    let rest = &pd[extra..];
    pd[..extra].iter().all(|d| d.fixed() == Some(1))
        && rest
            .iter()
            .zip(&xt.shape.0[rank - rest.len()..])
            .all(|(a, b)| a.fixed() == Some(1) || a == b)
}

/// `(x, scale, attrs)` of the LayerNorm/RMSNorm nodes of `c` of op `op`
/// without a bias and with an all-ones constant scale.
fn unit_norms(eg: &KEGraph, c: Id, op: Op) -> Vec<(Id, Attrs)> {
    ops_in(eg, c, op)
        .into_iter()
        .filter(|o| {
            o.args.len() == 2 || (o.args.len() == 3 && eg[eg.find(o.args[2])].data.types.is_empty())
        })
        .filter(|o| is_exactly(eg, o.args[1], 1.0))
        .map(|o| (eg.find(o.args[0]), o.attrs.attrs().clone()))
        .collect()
}

/// `N(x, 1) · γ = N(x, γ)` for N = `op`.
fn norm_scale(op: Op) -> impl Fn(&mut KEGraph, Id, &Subst) -> Option<Rhs> {
    move |eg, matched, s| {
        let (a, b) = (class(s, "?a")?, class(s, "?b")?);
        for (n, g) in [(a, b), (b, a)] {
            for (x, attrs) in unit_norms(eg, n, op) {
                if !fits_normalized(eg, g, x, attrs.int_or("axis", -1).ok()?) {
                    continue;
                }
                let mut r = Rhs::new();
                let (hx, hg) = (r.class(x), r.class(g));
                let y = r.op(op, attrs, &[hx, hg]);
                r.union_with(matched, y);
                return Some(r);
            }
        }
        None
    }
}

/// `LN(x, γ) + β = LN(x, γ, β)`.
fn ln_bias(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let (a, b) = (class(s, "?a")?, class(s, "?b")?);
    for (n, beta) in [(a, b), (b, a)] {
        for o in ops_in(eg, n, Op::LayerNormalization) {
            let no_bias = o.args.len() == 2
                || (o.args.len() == 3 && eg[eg.find(o.args[2])].data.types.is_empty());
            let (x, g) = (eg.find(o.args[0]), eg.find(o.args[1]));
            if !no_bias || !fits_normalized(eg, beta, x, o.attrs.attrs().int_or("axis", -1).ok()?) {
                continue;
            }
            let mut r = Rhs::new();
            let (hx, hg, hb) = (r.class(x), r.class(g), r.class(beta));
            let y = r.op(
                Op::LayerNormalization,
                o.attrs.attrs().clone(),
                &[hx, hg, hb],
            );
            r.union_with(matched, y);
            return Some(r);
        }
    }
    None
}

fn softmax(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let (e, den) = (eg.find(class(s, "?e")?), eg.find(class(s, "?s")?));
    let rank = type_of(eg, e)?.shape.rank();
    for y in unary(eg, e, Op::Exp) {
        for axes in reductions_of(eg, den, Op::ReduceSum, e) {
            let [axis] = axes[..] else { continue };
            // with the max subtraction: y = x − max(x, axis)
            let mut src = y;
            for (x, m) in binary(eg, y, Op::Sub) {
                if reductions_of(eg, m, Op::ReduceMax, x).contains(&vec![axis]) {
                    src = x;
                    break;
                }
            }
            let mut r = Rhs::new();
            let hx = r.class(src);
            let attrs = Attrs::new().with("axis", Attr::Int(axis as i64 - rank as i64));
            let sm = r.op(Op::Softmax, attrs, &[hx]);
            r.union_with(matched, sm);
            return Some(r);
        }
    }
    None
}

/// The three factors of `a · b` when one of them is itself a product.
fn factor_triples(eg: &KEGraph, a: Id, b: Id) -> Vec<[Id; 3]> {
    let mut v = Vec::new();
    for (p, q) in [(a, b), (b, a)] {
        for (p1, p2) in binary(eg, p, Op::Mul) {
            v.push([p1, p2, q]);
        }
    }
    v
}

const PERMS3: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

/// The `x` of `c = 1 + f(x)` where `f(x)` is one of `inner(c')` (`1` on either side).
fn one_plus(eg: &KEGraph, c: Id, inner: impl Fn(&KEGraph, Id) -> Vec<Id>) -> Vec<Id> {
    with_scalar(eg, c, Op::Add)
        .into_iter()
        .filter(|&(_, k)| k == 1.0)
        .flat_map(|(u, _)| inner(eg, u))
        .collect()
}

/// The `x` of `c = erf(x / √2)` (`Div(x, √2)` or `Mul(x, 1/√2)`).
fn erf_arg(eg: &KEGraph, c: Id) -> Vec<Id> {
    let mut out = Vec::new();
    for d in unary(eg, c, Op::Erf) {
        for (x, div) in binary(eg, d, Op::Div) {
            if is_about(eg, div, std::f64::consts::SQRT_2) {
                out.push(x);
            }
        }
        for (a, b) in binary(eg, d, Op::Mul) {
            for (x, k) in [(a, b), (b, a)] {
                if is_about(eg, k, std::f64::consts::FRAC_1_SQRT_2) {
                    out.push(x);
                }
            }
        }
    }
    out
}

/// Whether `c = x³` (`Pow(x, 3)`, `x · x²`, `x² · x`, with `x² = x·x` or `Pow(x, 2)`).
fn is_cube(eg: &KEGraph, c: Id, x: Id) -> bool {
    if with_scalar(eg, c, Op::Pow)
        .iter()
        .any(|&(b, k)| b == x && k == 3.0)
    {
        return true;
    }
    binary(eg, c, Op::Mul).into_iter().any(|(p, q)| {
        (p == x && squares_of(eg, q).contains(&x)) || (q == x && squares_of(eg, p).contains(&x))
    })
}

/// The `x` of `c = tanh(√(2/π) · (x + 0.044715 · x³))`.
fn tanh_arg(eg: &KEGraph, c: Id) -> Vec<Id> {
    let k1 = (2.0 / std::f64::consts::PI).sqrt();
    let mut out = Vec::new();
    for t in unary(eg, c, Op::Tanh) {
        for (y, k) in with_scalar(eg, t, Op::Mul) {
            if (k - k1).abs() > 1e-6 * k1 {
                continue;
            }
            for (p, q) in binary(eg, y, Op::Add) {
                for (x, cube) in [(p, q), (q, p)] {
                    let ok = with_scalar(eg, cube, Op::Mul).into_iter().any(|(c3, k2)| {
                        (k2 - 0.044715).abs() <= 1e-6 * 0.044715 && is_cube(eg, c3, x)
                    });
                    if ok {
                        out.push(x);
                    }
                }
            }
        }
    }
    out
}

/// `x · 0.5 · (1 + f(x))` in any association and order of the three factors.
fn gelu(tanh: bool) -> impl Fn(&mut KEGraph, Id, &Subst) -> Option<Rhs> {
    move |eg, matched, s| {
        let (a, b) = (eg.find(class(s, "?a")?), eg.find(class(s, "?b")?));
        for t in factor_triples(eg, a, b) {
            for p in PERMS3 {
                let (x, half, poly) = (eg.find(t[p[0]]), t[p[1]], t[p[2]]);
                if !is_exactly(eg, half, 0.5) {
                    continue;
                }
                let xs = if tanh {
                    one_plus(eg, poly, tanh_arg)
                } else {
                    one_plus(eg, poly, erf_arg)
                };
                if !xs.contains(&x) || !type_of(eg, x).is_some_and(|t| t.dtype.is_float()) {
                    continue;
                }
                let attrs = if tanh {
                    Attrs::new().with("approximate", Attr::Str("tanh".into()))
                } else {
                    Attrs::new()
                };
                let mut r = Rhs::new();
                let hx = r.class(x);
                let g = r.op(Op::Gelu, attrs, &[hx]);
                r.union_with(matched, g);
                return Some(r);
            }
        }
        None
    }
}

/// The rules of this file.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::custom(
            "layernorm-core",
            "(x − mean(x, A)) / √(mean((x − mean(x, A))², A) + ε) = LayerNormalization[axis=A₀, epsilon=ε](x, 1) \
             for reductions with keepdims over A, a suffix of x's axes starting at A₀; the square is Pow(d, 2) \
             or d·d, the division Div or Mul by Reciprocal (either order), ε a scalar constant; the ones \
             scale is a new constant of x's normalised shape. Equal up to rounding (one f32 rounding at \
             the end instead of one per step)",
            "(Div ?a ?b)",
            ln_core,
        )
        .example(LN_DECOMPOSED)
        .example("graph @g {\n in %0: f32[2,3,4]\n const %1: i64[2] = [-2, -1]\n const %2: f32[] = 1e-5\n %3: f32[2,1,1] = ReduceMean(%0, %1)\n %4: f32[2,3,4] = Sub(%0, %3)\n %5: f32[2,3,4] = Mul(%4, %4)\n %6: f32[2,1,1] = ReduceMean(%5, %1)\n %7: f32[2,1,1] = Add(%2, %6)\n %8: f32[2,1,1] = Sqrt(%7)\n %9: f32[2,3,4] = Div(%4, %8)\n out %9\n}"),
        Rule::custom(
            "layernorm-core-reciprocal",
            "(x − mean(x, A)) · 1/√(mean((x − mean(x, A))², A) + ε) = LayerNormalization(x, 1), as \
             layernorm-core with the division written as a multiplication by Reciprocal (either order)",
            "(Mul ?a ?b)",
            ln_core,
        )
        .example("graph @g {\n in %0: f32[3,8]\n const %1: i64[1] = [1]\n const %2: f32[] = 2.0\n const %3: f32[] = 1e-6\n %4: f32[3,1] = ReduceMean(%0, %1)\n %5: f32[3,8] = Sub(%0, %4)\n %6: f32[3,8] = Pow(%5, %2)\n %7: f32[3,1] = ReduceMean(%6, %1)\n %8: f32[3,1] = Add(%7, %3)\n %9: f32[3,1] = Sqrt(%8)\n %10: f32[3,1] = Reciprocal(%9)\n %11: f32[3,8] = Mul(%10, %5)\n out %11\n}"),
        Rule::custom(
            "layernorm-scale",
            "LayerNormalization(x, 1) · γ = LayerNormalization(x, γ) (either order) when the scale is an \
             all-ones constant, there is no bias, and γ has x's dtype and (leading 1s aside) broadcasts \
             to the normalised shape; exact up to the rounding of the product",
            "(Mul ?a ?b)",
            norm_scale(Op::LayerNormalization),
        )
        .example("graph @g {\n in %0: f32[2,4]\n in %1: f32[4]\n const %2: f32[4] = [1.0, 1.0, 1.0, 1.0]\n %3: f32[2,4] = LayerNormalization[axis=-1, epsilon=1e-5](%0, %2)\n %4: f32[2,4] = Mul(%1, %3)\n out %4\n}"),
        Rule::custom(
            "layernorm-bias",
            "LayerNormalization(x, γ) + β = LayerNormalization(x, γ, β) (either order) when the node has \
             no bias and β has x's dtype and (leading 1s aside) broadcasts to the normalised shape; \
             equal up to the rounding of the sum",
            "(Add ?a ?b)",
            ln_bias,
        )
        .example("graph @g {\n in %0: f32[2,3,4]\n const %1: f32[4] = [1.5, 0.5, -1.0, 2.0]\n const %2: f32[1,4] = [0.1, 0.2, 0.3, 0.4]\n %3: f32[2,3,4] = LayerNormalization[axis=-1, epsilon=1e-5](%0, %1)\n %4: f32[2,3,4] = Add(%3, %2)\n out %4\n}"),
        Rule::custom(
            "rmsnorm-core",
            "x / √(mean(x², A) + ε) = RMSNormalization[axis=A₀, epsilon=ε](x, 1) for a keepdims \
             ReduceMean over A, a suffix of x's axes; x² is Pow(x, 2) or x·x; the division is Div or Mul by \
             Reciprocal (either order, see rmsnorm-core-reciprocal); equal up to rounding",
            "(Div ?a ?b)",
            rms_core,
        )
        .example("graph @g {\n in %0: f32[2,8]\n const %1: i64[1] = [-1]\n const %2: f32[] = 2.0\n const %3: f32[] = 1e-6\n %4: f32[2,8] = Pow(%0, %2)\n %5: f32[2,1] = ReduceMean(%4, %1)\n %6: f32[2,1] = Add(%5, %3)\n %7: f32[2,1] = Sqrt(%6)\n %8: f32[2,8] = Div(%0, %7)\n out %8\n}"),
        Rule::custom(
            "rmsnorm-core-reciprocal",
            "x · 1/√(mean(x², A) + ε) = RMSNormalization(x, 1) (the rsqrt form PyTorch exports for \
             T5/LLaMA RMSNorm), as rmsnorm-core",
            "(Mul ?a ?b)",
            rms_core,
        )
        .example("graph @g {\n in %0: f32[2,3,8]\n const %1: i64[1] = [2]\n const %2: f32[] = 1e-6\n %3: f32[2,3,8] = Mul(%0, %0)\n %4: f32[2,3,1] = ReduceMean(%3, %1)\n %5: f32[2,3,1] = Add(%4, %2)\n %6: f32[2,3,1] = Sqrt(%5)\n %7: f32[2,3,1] = Reciprocal(%6)\n %8: f32[2,3,8] = Mul(%0, %7)\n out %8\n}"),
        Rule::custom(
            "rmsnorm-scale",
            "RMSNormalization(x, 1) · γ = RMSNormalization(x, γ) (either order) for an all-ones constant \
             scale and γ of x's dtype broadcasting to the normalised shape; equal up to rounding",
            "(Mul ?a ?b)",
            norm_scale(Op::RMSNormalization),
        )
        .example("graph @g {\n in %0: f32[2,4]\n const %1: f32[4] = [0.5, 1.5, 2.0, -1.0]\n const %2: f32[4] = [1.0, 1.0, 1.0, 1.0]\n %3: f32[2,4] = RMSNormalization[axis=-1, epsilon=1e-5](%0, %2)\n %4: f32[2,4] = Mul(%3, %1)\n out %4\n}"),
        Rule::custom(
            "softmax",
            "exp(y) / ReduceSum(exp(y), [a], keepdims) = Softmax[axis=a](y); when y = x − ReduceMax(x, [a]) \
             the result is Softmax[axis=a](x), the same value (softmax is shift-invariant). Equal up to \
             rounding; where exp(y) overflows the decomposition gives NaN and Softmax (which subtracts \
             the maximum) a number, so the rewrite only makes results more defined",
            "(Div ?e ?s)",
            softmax,
        )
        .example("graph @g {\n in %0: f32[2,5]\n const %1: i64[1] = [-1]\n %2: f32[2,1] = ReduceMax(%0, %1)\n %3: f32[2,5] = Sub(%0, %2)\n %4: f32[2,5] = Exp(%3)\n %5: f32[2,1] = ReduceSum(%4, %1)\n %6: f32[2,5] = Div(%4, %5)\n out %6\n}")
        .example("graph @g {\n in %0: f32[3,4,2]\n const %1: i64[1] = [1]\n %2: f32[3,4,2] = Exp(%0)\n %3: f32[3,1,2] = ReduceSum(%2, %1)\n %4: f32[3,4,2] = Div(%2, %3)\n out %4\n}"),
        Rule::custom(
            "gelu-erf",
            "x · 0.5 · (1 + erf(x/√2)) = Gelu(x), for the three factors in any association and order, \
             1 + e in either order, and x/√2 written as Div(x, √2) or Mul(x, 1/√2) (constants within \
             1e-6 relative of the exact ones, as exporters round them to f32). Equal up to rounding",
            "(Mul ?a ?b)",
            gelu(false),
        )
        .example(GELU_ERF)
        .example("graph @g {\n in %0: f32[2,3]\n const %1: f32[] = 0.70710677\n const %2: f32[] = 1.0\n const %3: f32[] = 0.5\n %4: f32[2,3] = Mul(%0, %1)\n %5: f32[2,3] = Erf(%4)\n %6: f32[2,3] = Add(%2, %5)\n %7: f32[2,3] = Mul(%0, %3)\n %8: f32[2,3] = Mul(%7, %6)\n out %8\n}"),
        Rule::custom(
            "gelu-tanh",
            "0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))) = Gelu[approximate=\"tanh\"](x), factors in \
             any association and order, x³ as Pow(x, 3), x·x² or x²·x; constants within 1e-6 relative. \
             Equal up to rounding",
            "(Mul ?a ?b)",
            gelu(true),
        )
        .example(GELU_TANH),
    ]
}

/// LayerNorm as PyTorch's TorchScript exporter writes it (opset < 17).
pub const LN_DECOMPOSED: &str = "graph @g {\n in %0: f32[2,3,8]\n const %1: i64[1] = [-1]\n const %2: f32[] = 2.0\n const %3: f32[] = 1e-12\n %4: f32[2,3,1] = ReduceMean[keepdims=1](%0, %1)\n %5: f32[2,3,8] = Sub(%0, %4)\n %6: f32[2,3,8] = Pow(%5, %2)\n %7: f32[2,3,1] = ReduceMean[keepdims=1](%6, %1)\n %8: f32[2,3,1] = Add(%7, %3)\n %9: f32[2,3,1] = Sqrt(%8)\n %10: f32[2,3,8] = Div(%5, %9)\n out %10\n}";

/// GELU (erf) as BERT exports write it.
pub const GELU_ERF: &str = "graph @g {\n in %0: f32[2,6]\n const %1: f32[] = 1.4142135\n const %2: f32[] = 1.0\n const %3: f32[] = 0.5\n %4: f32[2,6] = Div(%0, %1)\n %5: f32[2,6] = Erf(%4)\n %6: f32[2,6] = Add(%5, %2)\n %7: f32[2,6] = Mul(%0, %6)\n %8: f32[2,6] = Mul(%7, %3)\n out %8\n}";

/// GELU (tanh) as GPT-2's `gelu_new` exports.
pub const GELU_TANH: &str = "graph @g {\n in %0: f32[2,6]\n const %1: f32[] = 3.0\n const %2: f32[] = 0.044715\n const %3: f32[] = 0.7978846\n const %4: f32[] = 1.0\n const %5: f32[] = 0.5\n %6: f32[2,6] = Pow(%0, %1)\n %7: f32[2,6] = Mul(%2, %6)\n %8: f32[2,6] = Add(%0, %7)\n %9: f32[2,6] = Mul(%3, %8)\n %10: f32[2,6] = Tanh(%9)\n %11: f32[2,6] = Add(%4, %10)\n %12: f32[2,6] = Mul(%5, %0)\n %13: f32[2,6] = Mul(%12, %11)\n out %13\n}";
