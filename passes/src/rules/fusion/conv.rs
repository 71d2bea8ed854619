//! Conv epilogues: the bias as an epilogue Add, BatchNormalization
//! (inference) folded into Conv's weights and bias, BatchNormalization as a
//! per-channel affine map, and elementwise consumers (ReLU, the residual
//! Add) absorbed into `FusedConv`.
//!
//! Requires: the class helpers of [`super`], the absorber of
//! [`super::epilogue`], and `kiln_ir::fused`'s FusedConv
//! (`FusedConv[<Conv attrs>, epilogue](X, W, e…) = epilogue(Conv(X, W), e…)`).
//! Establishes the rules `conv-bias`, `bn-fold-conv`, `bn-to-affine` and
//! `conv-epilogue`. The folded constants are computed at rewrite time in
//! f64 and rounded once to the weights' dtype.

use super::epilogue::absorb;
use super::{class_of_absent, ops_in, type_of, value_of};
use crate::egraph::analysis::{KEGraph, Rhs};
use crate::rules::{class, Rule};
use egg::{Id, Subst};
use kiln_ir::fused::EPILOGUE;
use kiln_ir::{Attr, Attrs, Op, Tensor};

/// `[C, 1, …, 1]` with `spatial` ones: a per-channel operand of an
/// `[N, C, spatial…]` result.
fn channel_shape(c: usize, spatial: usize) -> Vec<usize> {
    let mut s = vec![c];
    s.resize(1 + spatial, 1);
    s
}

fn fused_conv_attrs(conv: &Attrs, epilogue: &str) -> Attrs {
    let mut a = conv.clone();
    a.set(EPILOGUE, Attr::Str(epilogue.into()));
    a
}

/// `Conv(X, W, B) = FusedConv[epilogue=Add(%0, %1)](X, W, B')`, B' = B as `[C, 1, …]`.
fn conv_bias(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let (x, w, b) = (
        eg.find(class(s, "?x")?),
        eg.find(class(s, "?w")?),
        eg.find(class(s, "?b")?),
    );
    if class_of_absent(eg, b) {
        return None;
    }
    let node = ops_in(eg, matched, Op::Conv).into_iter().find(|o| {
        o.args.len() == 3
            && eg.find(o.args[0]) == x
            && eg.find(o.args[1]) == w
            && eg.find(o.args[2]) == b
    })?;
    let spatial = type_of(eg, x)?.shape.rank().checked_sub(2)?;
    let bt = type_of(eg, b)?.clone();
    let c = bt.shape.0.first()?.fixed()?;
    if bt.shape.rank() != 1 {
        return None;
    }
    let shape = channel_shape(c, spatial);
    let mut r = Rhs::new();
    let (hx, hw) = (r.class(x), r.class(w));
    let hb = match value_of(eg, b) {
        Some(t) => {
            let t = t.clone().reshaped(shape).ok()?;
            r.konst(eg, t)
        }
        None => {
            let dims =
                Tensor::from_vec(vec![shape.len()], shape.iter().map(|&d| d as i64).collect())
                    .ok()?;
            let hb0 = r.class(b);
            let hs = r.konst(eg, dims);
            r.op(Op::Reshape, Attrs::new(), &[hb0, hs])
        }
    };
    let f = r.op(
        Op::FusedConv,
        fused_conv_attrs(node.attrs.attrs(), "Add(%0, %1)"),
        &[hx, hw, hb],
    );
    r.union_with(matched, f);
    Some(r)
}

/// The BatchNormalization node of the match: its epsilon, and whether it is
/// in inference mode.
fn bn_epsilon(eg: &KEGraph, matched: Id, s: &Subst) -> Option<f64> {
    let ids: Vec<Id> = ["?y", "?s", "?bb", "?m", "?v"]
        .iter()
        .map(|v| class(s, v).map(|c| eg.find(c)))
        .collect::<Option<_>>()?;
    let o = ops_in(eg, matched, Op::BatchNormalization)
        .into_iter()
        .find(|o| o.args.len() == 5 && o.args.iter().zip(&ids).all(|(&a, &b)| eg.find(a) == b))?;
    let a = o.attrs.attrs();
    if a.int_or("training_mode", 0).ok()? != 0 {
        return None;
    }
    Some(a.float_or("epsilon", 1e-5).ok()? as f64)
}

/// Per-channel `(a, c)` with `BN(y) = y·a + c`: `a = scale/√(var + ε)`,
/// `c = bias − mean·a`, from constant parameters of `C` elements each.
fn bn_coefficients(eg: &KEGraph, s: &Subst, eps: f64) -> Option<(Vec<f64>, Vec<f64>)> {
    let vals: Vec<Vec<f64>> = ["?s", "?bb", "?m", "?v"]
        .iter()
        .map(|v| {
            class(s, v)
                .and_then(|c| value_of(eg, c))
                .filter(|t| t.rank() == 1)
                .map(|t| t.to_f64_vec())
        })
        .collect::<Option<_>>()?;
    let n = vals[0].len();
    if n == 0 || vals.iter().any(|v| v.len() != n) {
        return None;
    }
    let a: Vec<f64> = (0..n)
        .map(|i| vals[0][i] / (vals[3][i] + eps).sqrt())
        .collect();
    let c: Vec<f64> = (0..n).map(|i| vals[1][i] - vals[2][i] * a[i]).collect();
    Some((a, c))
}

/// `BN(Conv(X, W[, B])) = FusedConv[epilogue=Add(%0, %1)](X, W·a, (B·a + c) as [C,1,…])`.
fn bn_fold_conv(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let eps = bn_epsilon(eg, matched, s)?;
    let (a, c) = bn_coefficients(eg, s, eps)?;
    let y = eg.find(class(s, "?y")?);
    for o in ops_in(eg, y, Op::Conv) {
        let (x, w) = (eg.find(o.args[0]), eg.find(o.args[1]));
        let Some(wt) = value_of(eg, w).cloned() else {
            continue;
        };
        let bias = match o.args.get(2).map(|&b| eg.find(b)) {
            Some(b) if !class_of_absent(eg, b) => match value_of(eg, b) {
                Some(t) => Some(t.to_f64_vec()),
                None => continue,
            },
            _ => None,
        };
        let cout = *wt.shape().first()?;
        if cout != a.len()
            || !wt.dtype().is_float()
            || bias.as_ref().is_some_and(|b| b.len() != cout)
        {
            continue;
        }
        // applied once per BatchNormalization: a class that already holds the
        // folded conv is not folded again (the weights are the large part)
        if ops_in(eg, matched, Op::FusedConv)
            .iter()
            .any(|f| eg.find(f.args[0]) == x)
        {
            return None;
        }
        let per = (wt.numel() / cout.max(1)).max(1);
        let spatial = wt.rank().checked_sub(2)?;
        let w2 = match wt.as_slice::<f32>() {
            // f32 weights (the common case): no f64 copy of the whole tensor
            Some(w) => {
                let v: Vec<f32> = w
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| (x as f64 * a[i / per]) as f32)
                    .collect();
                Tensor::from_vec(wt.shape().to_vec(), v).ok()?
            }
            None => {
                let wv: Vec<f64> = wt
                    .to_f64_vec()
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v * a[i / per])
                    .collect();
                Tensor::from_f64s(wt.dtype(), wt.shape().to_vec(), &wv).ok()?
            }
        };
        let bv: Vec<f64> = (0..cout)
            .map(|i| bias.as_ref().map_or(0.0, |b| b[i]) * a[i] + c[i])
            .collect();
        let b2 = Tensor::from_f64s(wt.dtype(), channel_shape(cout, spatial), &bv).ok()?;
        let mut r = Rhs::new();
        let hx = r.class(x);
        let hw = r.konst(eg, w2);
        let hb = r.konst(eg, b2);
        let f = r.op(
            Op::FusedConv,
            fused_conv_attrs(o.attrs.attrs(), "Add(%0, %1)"),
            &[hx, hw, hb],
        );
        r.union_with(matched, f);
        return Some(r);
    }
    None
}

/// `BN(y) = y·a + c` with `a`, `c` constants of shape `[C, 1, …]`.
fn bn_to_affine(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let eps = bn_epsilon(eg, matched, s)?;
    let (a, c) = bn_coefficients(eg, s, eps)?;
    let y = eg.find(class(s, "?y")?);
    let yt = type_of(eg, y)?.clone();
    if !yt.dtype.is_float() || yt.shape.rank() < 2 || yt.shape.0[1].fixed()? != a.len() {
        return None;
    }
    let shape = channel_shape(a.len(), yt.shape.rank() - 2);
    let at = Tensor::from_f64s(yt.dtype, shape.clone(), &a).ok()?;
    let ct = Tensor::from_f64s(yt.dtype, shape, &c).ok()?;
    let mut r = Rhs::new();
    let hy = r.class(y);
    let ha = r.konst(eg, at);
    let hc = r.konst(eg, ct);
    let m = r.op(Op::Mul, Attrs::new(), &[hy, ha]);
    let add = r.op(Op::Add, Attrs::new(), &[m, hc]);
    r.union_with(matched, add);
    Some(r)
}

/// The rules of this file.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::custom(
            "conv-bias",
            "Conv(X, W, B) = FusedConv[<Conv attrs>, epilogue=Add(%0, %1)](X, W, B') with B' = B reshaped \
             to [C, 1, …, 1] (a new constant when B is constant, else a Reshape); the bias add is the \
             same per-channel add, after the product is rounded (Conv itself may add the bias in its \
             accumulator): equal up to rounding",
            "(Conv[*] ?x ?w ?b)",
            conv_bias,
        )
        .example("graph @g {\n in %0: f32[1,2,4,4]\n in %1: f32[3,2,3,3]\n const %2: f32[3] = [0.5, -1.0, 2.0]\n %3: f32[1,3,4,4] = Conv[kernel_shape=[3,3], pads=[1,1,1,1]](%0, %1, %2)\n out %3\n}"),
        Rule::custom(
            "bn-fold-conv",
            "BatchNormalization[ε](Conv(X, W[, B]), γ, β, μ, σ²) = FusedConv[<Conv attrs>, \
             epilogue=Add(%0, %1)](X, W', B') in inference mode, when W, γ, β, μ, σ² (and B) are \
             constants: a = γ/√(σ² + ε), W'[o, …] = W[o, …]·a[o], B' = (B − μ)·a + β as [C, 1, …, 1], \
             computed in f64 at rewrite time and rounded once. Equal up to rounding (the scale moves \
             from the result into the weights)",
            "(BatchNormalization[*] ?y ?s ?bb ?m ?v)",
            bn_fold_conv,
        )
        .example("graph @g {\n in %0: f32[1,2,4,4]\n const %1: f32[3,2,1,1] = [1.0, -0.5, 0.25, 2.0, -1.5, 0.75]\n const %2: f32[3] = [1.1, 0.9, 1.3]\n const %3: f32[3] = [0.1, -0.2, 0.3]\n const %4: f32[3] = [0.05, -0.1, 0.2]\n const %5: f32[3] = [1.2, 0.8, 1.5]\n %6: f32[1,3,4,4] = Conv[kernel_shape=[1,1]](%0, %1)\n %7: f32[1,3,4,4] = BatchNormalization[epsilon=1e-5](%6, %2, %3, %4, %5)\n out %7\n}")
        .example("graph @g {\n in %0: f32[1,1,5,5]\n const %1: f32[2,1,3,3] = [1.0, 0.0, -1.0, 2.0, 0.5, -2.0, 1.0, 0.0, -1.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]\n const %8: f32[2] = [0.5, -0.5]\n const %2: f32[2] = [1.1, 0.9]\n const %3: f32[2] = [0.1, -0.2]\n const %4: f32[2] = [0.05, -0.1]\n const %5: f32[2] = [1.2, 0.8]\n %6: f32[1,2,3,3] = Conv[kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]](%0, %1, %8)\n %7: f32[1,2,3,3] = BatchNormalization[epsilon=1e-3](%6, %2, %3, %4, %5)\n out %7\n}"),
        Rule::custom(
            "bn-to-affine",
            "BatchNormalization[ε](y, γ, β, μ, σ²) = y·a + c in inference mode for constant parameters: \
             a = γ/√(σ² + ε), c = β − μ·a, both [C, 1, …, 1] constants computed in f64; equal up to \
             rounding. The elementwise form then fuses into a producer's epilogue or a FusedElementwise",
            "(BatchNormalization[*] ?y ?s ?bb ?m ?v)",
            bn_to_affine,
        )
        .example("graph @g {\n in %0: f32[2,3,2,2]\n const %1: f32[3] = [1.1, 0.9, 1.3]\n const %2: f32[3] = [0.1, -0.2, 0.3]\n const %3: f32[3] = [0.05, -0.1, 0.2]\n const %4: f32[3] = [1.2, 0.8, 1.5]\n %5: f32[2,3,2,2] = BatchNormalization(%0, %1, %2, %3, %4)\n out %5\n}"),
        Rule::custom(
            "conv-epilogue",
            "E(…, P, …) = FusedConv[…, epilogue=E(…, ep, …)](X, W, e…, others…) where P = \
             FusedConv[…, epilogue=ep](X, W, e…) or a Conv without bias (ep = %0), for an elementwise E \
             (or FusedElementwise): ReLU, the residual Add, a per-channel affine map. The epilogue is \
             the decomposition by definition (bit-identical); only when it keeps the product's shape \
             and has at most 24 ops",
            "?c",
            absorb(Op::FusedConv),
        )
        .example("graph @g {\n in %0: f32[1,2,4,4]\n in %1: f32[2,2,3,3]\n const %2: f32[2,1,1] = [0.5, -1.0]\n %3: f32[1,2,4,4] = FusedConv[epilogue=\"Add(%0, %1)\", kernel_shape=[3,3], pads=[1,1,1,1]](%0, %1, %2)\n %4: f32[1,2,4,4] = Add(%3, %0)\n %5: f32[1,2,4,4] = Relu(%4)\n out %5\n}")
        .example("graph @g {\n in %0: f32[1,2,3,3]\n in %1: f32[4,2,1,1]\n %2: f32[1,4,3,3] = Conv[kernel_shape=[1,1]](%0, %1)\n %3: f32[1,4,3,3] = Relu(%2)\n out %3\n}"),
    ]
}
