//! Scaled dot-product attention into ONNX (opset 23) `Attention`.
//!
//! Requires: the class helpers of [`super`], and the Attention semantics of
//! `kiln_ir::interp::attention` (scores `scale·Q·Kᵀ` plus the mask, a
//! numeric mask added, a boolean one turning `false` into −∞, a mask's last
//! axis padded with −∞ rather than broadcast; softmax; times V; 3-D inputs
//! `[B, S, H·D]` split into heads by `q_num_heads`/`kv_num_heads`).
//! Establishes two rules, applied one after the other:
//!
//! - `attention-sdpa`: `MatMul(Softmax(scale(Q·Kᵀ) [+ mask]), V)` over 4-D
//!   heads → `Attention[scale](Q, K, V[, mask])`, where the scale is a Div
//!   or Mul of the scores or pre-applied to Q and/or Kᵀ, the mask is an
//!   additive operand of the scores (the padding mask both PyTorch
//!   exporters build, with Sub/Mul/Cast or Where; any constant causal mask)
//!   or `Where(m, scores, −∞)`; a constant 0/−∞ lower-triangular mask
//!   becomes `is_causal=1`;
//! - `attention-heads-3d`: the multi-head split (`Reshape` to `[B, S, H, D]`
//!   then `Transpose[0,2,1,3]`) of Q, K and V and the merge after it →
//!   the 3-D `Attention[q_num_heads=H, kv_num_heads=H']` on `[B, S, H·D]`,
//!   so those Reshapes and Transposes disappear.

use super::{binary, ops_in, type_of, value_of, with_scalar};
use crate::egraph::analysis::{KEGraph, Rhs};
use crate::rules::{class, Rule};
use egg::{Id, Subst};
use kiln_ir::{Attr, Attrs, DType, Op, Tensor};

/// A mask found on the scores.
#[derive(Clone, Copy, Debug)]
enum Mask {
    /// Added to the scores.
    Additive(Id),
    /// `Where(m, scores, −∞)`: a boolean mask, true = keep.
    Keep(Id),
    /// `Where(m, −∞, scores)`: masked where true.
    Drop(Id),
}

fn is_neg_inf(eg: &KEGraph, c: Id) -> bool {
    super::scalar(eg, c) == Some(f64::NEG_INFINITY)
}

/// The `(scores, mask)` readings of the softmax input `s`.
fn split_mask(eg: &KEGraph, s: Id) -> Vec<(Id, Option<Mask>)> {
    let mut v = vec![(s, None)];
    for (a, b) in binary(eg, s, Op::Add) {
        v.push((a, Some(Mask::Additive(b))));
        v.push((b, Some(Mask::Additive(a))));
    }
    for o in ops_in(eg, s, Op::Where) {
        let [c, x, y] = [o.args[0], o.args[1], o.args[2]].map(|a| eg.find(a));
        if is_neg_inf(eg, y) {
            v.push((x, Some(Mask::Keep(c))));
        }
        if is_neg_inf(eg, x) {
            v.push((y, Some(Mask::Drop(c))));
        }
    }
    v
}

/// `(x, factor)` readings of a scaled class: `x·k`, `k·x`, `x/k`, then `x` itself.
fn scalings(eg: &KEGraph, c: Id) -> Vec<(Id, f64)> {
    let mut v = with_scalar(eg, c, Op::Mul);
    v.extend(
        with_scalar(eg, c, Op::Div)
            .into_iter()
            .filter(|&(_, k)| k != 0.0)
            .map(|(x, k)| (x, 1.0 / k)),
    );
    // the unscaled reading last: the first reading that fits wins, and an
    // absorbed scale saves a kernel
    v.push((c, 1.0));
    v
}

fn dims4(eg: &KEGraph, c: Id) -> Option<[usize; 4]> {
    let d = type_of(eg, c)?.shape.fixed()?;
    d.try_into().ok()
}

/// Whether a mask of type `t` is one Attention reads as the Add/Where did:
/// rank ≤ 4, last axis exactly `total` (Attention pads a shorter one instead
/// of broadcasting it), every other axis 1 or the full one.
fn mask_fits(shape: &[usize], full: [usize; 4]) -> bool {
    !shape.is_empty()
        && shape.len() <= 4
        && *shape.last().unwrap_or(&0) == full[3]
        && shape
            .iter()
            .rev()
            .zip(full.iter().rev())
            .skip(1)
            .all(|(&m, &f)| m == 1 || m == f)
}

/// Whether a constant mask is exactly the causal one (0 or true where
/// `j ≤ i`, −∞ or false above), with only leading axes of size 1.
fn is_causal_const(t: &Tensor, keep_true: bool) -> bool {
    let s = t.shape();
    if s.len() < 2 || s[..s.len() - 2].iter().any(|&d| d != 1) {
        return false;
    }
    let (n, m) = (s[s.len() - 2], s[s.len() - 1]);
    if n != m {
        return false;
    }
    let v = t.to_f64_vec();
    (0..n).all(|i| {
        (0..m).all(|j| {
            let x = v[i * m + j];
            match (t.dtype() == DType::Bool, keep_true) {
                (true, true) => (x != 0.0) == (j <= i),
                (true, false) => (x != 0.0) == (j > i),
                (false, _) => {
                    if j <= i {
                        x == 0.0
                    } else {
                        x == f64::NEG_INFINITY
                    }
                }
            }
        })
    })
}

fn sdpa(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let (p, v) = (eg.find(class(s, "?p")?), eg.find(class(s, "?v")?));
    let vd = dims4(eg, v)?;
    for sm in ops_in(eg, p, Op::Softmax) {
        let axis = sm.attrs.attrs().int_or("axis", -1).ok()?;
        if axis != -1 && axis != 3 {
            continue;
        }
        let sin = eg.find(sm.args[0]);
        for (t, mask) in split_mask(eg, sin) {
            for (qk, s1) in scalings(eg, t) {
                for (q0, kt0) in binary(eg, qk, Op::MatMul) {
                    for (q, s2) in scalings(eg, q0) {
                        for (kt, s3) in scalings(eg, kt0) {
                            if let Some(r) =
                                build_sdpa(eg, matched, q, kt, v, vd, mask, s1 * s2 * s3)
                            {
                                return Some(r);
                            }
                        }
                    }
                }
            }
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn build_sdpa(
    eg: &mut KEGraph,
    matched: Id,
    q: Id,
    kt: Id,
    v: Id,
    vd: [usize; 4],
    mask: Option<Mask>,
    scale: f64,
) -> Option<Rhs> {
    let (qd, kd) = (dims4(eg, q)?, dims4(eg, kt)?);
    let qt = type_of(eg, q)?.dtype;
    if !qt.is_float() || type_of(eg, kt)?.dtype != qt || type_of(eg, v)?.dtype != qt {
        return None;
    }
    // q [B, H, S, D], kᵀ [B, Hk, D, T], v [B, Hk, T, Dv]; MatMul broadcasts Hk = 1 like Attention's kv heads
    let (b, h, sq, d) = (qd[0], qd[1], qd[2], qd[3]);
    let (hk, t) = (kd[1], kd[3]);
    if kd[0] != b
        || vd[0] != b
        || kd[2] != d
        || vd[1] != hk
        || vd[2] != t
        || !(hk == h || hk == 1)
        || h == 0
    {
        return None;
    }
    let full = [b, h, sq, t];
    let mut attrs = Attrs::new().with("scale", Attr::Float(scale as f32));
    if !(scale as f32).is_finite() || scale == 0.0 {
        return None;
    }
    // the mask, checked before anything is added
    let mut mask_arg: Option<(Id, bool)> = None; // (class, negate)
    match mask {
        None => {}
        Some(Mask::Additive(m)) | Some(Mask::Keep(m)) | Some(Mask::Drop(m)) => {
            let mt = type_of(eg, m)?;
            let shape = mt.shape.fixed()?;
            let boolean = !matches!(mask, Some(Mask::Additive(_)));
            if (boolean && mt.dtype != DType::Bool)
                || (!boolean && mt.dtype != qt)
                || !mask_fits(&shape, full)
            {
                return None;
            }
            let causal = value_of(eg, m)
                .is_some_and(|c| is_causal_const(c, !matches!(mask, Some(Mask::Drop(_)))));
            if causal {
                attrs.set("is_causal", Attr::Int(1));
            } else {
                mask_arg = Some((m, matches!(mask, Some(Mask::Drop(_)))));
            }
        }
    }
    // K from Kᵀ: fold the swap into a Transpose that produced Kᵀ
    let mut k_src: Option<(Id, Vec<i64>)> = None;
    for o in ops_in(eg, kt, Op::Transpose) {
        if let Ok(Some(p)) = o.attrs.attrs().ints("perm") {
            if p.len() == 4 {
                k_src = Some((eg.find(o.args[0]), vec![p[0], p[1], p[3], p[2]]));
                break;
            }
        }
    }
    let mut r = Rhs::new();
    let hq = r.class(q);
    let hkk = match k_src {
        Some((src, perm)) if perm == [0, 1, 2, 3] => r.class(src),
        Some((src, perm)) => {
            let hs = r.class(src);
            r.op(
                Op::Transpose,
                Attrs::new().with("perm", Attr::Ints(perm)),
                &[hs],
            )
        }
        None => {
            let hs = r.class(kt);
            r.op(
                Op::Transpose,
                Attrs::new().with("perm", Attr::Ints(vec![0, 1, 3, 2])),
                &[hs],
            )
        }
    };
    let hv = r.class(v);
    let mut args = vec![hq, hkk, hv];
    if let Some((m, negate)) = mask_arg {
        let hm = r.class(m);
        args.push(if negate {
            r.op(Op::Not, Attrs::new(), &[hm])
        } else {
            hm
        });
    }
    let a = r.op(Op::Attention, attrs, &args);
    r.union_with(matched, a);
    Some(r)
}

/// `(x3, heads)` when class `c` is `Transpose[0,2,1,3](Reshape(x3, ·))` with
/// x3 `[B, S, H·D]` split into `[B, S, H, D]`.
fn split_heads(eg: &KEGraph, c: Id) -> Option<(Id, usize)> {
    for o in ops_in(eg, c, Op::Transpose) {
        if o.attrs.attrs().ints("perm").ok()? != Some(&[0, 2, 1, 3][..]) {
            continue;
        }
        let r = eg.find(o.args[0]);
        let rd = dims4(eg, r)?;
        for re in ops_in(eg, r, Op::Reshape) {
            let x = eg.find(re.args[0]);
            let Some(xd) = type_of(eg, x).and_then(|t| t.shape.fixed()) else {
                continue;
            };
            if xd.len() == 3 && xd[0] == rd[0] && xd[1] == rd[1] && xd[2] == rd[2] * rd[3] {
                return Some((x, rd[2]));
            }
        }
    }
    None
}

fn heads_3d(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let y = eg.find(class(s, "?y")?);
    let out = type_of(eg, matched)?.shape.fixed()?;
    if out.len() != 3 {
        return None;
    }
    for o in ops_in(eg, y, Op::Attention) {
        if !(o.args.len() == 3 || o.args.len() == 4) || dims4(eg, o.args[0]).is_none() {
            continue;
        }
        let Some((q3, hq)) = split_heads(eg, o.args[0]) else {
            continue;
        };
        let Some((k3, hk)) = split_heads(eg, o.args[1]) else {
            continue;
        };
        let Some((v3, hv)) = split_heads(eg, o.args[2]) else {
            continue;
        };
        if hk != hv {
            continue;
        }
        let mut attrs = o.attrs.attrs().clone();
        attrs.set("q_num_heads", Attr::Int(hq as i64));
        attrs.set("kv_num_heads", Attr::Int(hk as i64));
        let mut r = Rhs::new();
        let mut args = vec![r.class(q3), r.class(k3), r.class(v3)];
        if let Some(&m) = o.args.get(3) {
            args.push(r.class(eg.find(m)));
        }
        let a = r.op(Op::Attention, attrs, &args);
        r.union_with(matched, a);
        return Some(r);
    }
    None
}

/// The rules of this file.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::custom(
            "attention-sdpa",
            "MatMul(Softmax[axis=-1](c·(Q·Kᵀ) + M), V) = Attention[scale=c](Q, K, V, M) on 4-D heads \
             (Q [B,H,S,D], Kᵀ [B,Hk,D,T], V [B,Hk,T,Dv], Hk = H or 1, same B): c from a Div or Mul of the \
             scores or of Q or Kᵀ by scalar constants; M an additive operand of the scores whose last axis \
             is T (Attention pads a shorter last axis, so it is not accepted) and whose other axes are 1 or \
             full, or Where(m, scores, −∞) (boolean m), or Where(m, −∞, scores) (Not m); a constant \
             0/−∞ (or boolean) lower-triangular M becomes is_causal=1. K is Kᵀ with its last two axes \
             swapped, folded into the Transpose that made Kᵀ. Equal up to rounding (Attention scales Q and \
             K by √c each); for scores of +∞ under a Where mask the decomposition gives −∞ where \
             Attention gives NaN",
            "(MatMul ?p ?v)",
            sdpa,
        )
        .example(SDPA_4D)
        .example("graph @g {\n in %0: f32[2,2,3,4]\n in %1: f32[2,2,4,3]\n in %2: f32[2,2,3,4]\n const %3: f32[] = 0.5\n const %4: f32[1,1,3,3] = [0.0, -inf, -inf, 0.0, 0.0, -inf, 0.0, 0.0, 0.0]\n %5: f32[2,2,3,4] = Mul(%0, %3)\n %6: f32[2,2,3,3] = MatMul(%5, %1)\n %7: f32[2,2,3,3] = Add(%4, %6)\n %8: f32[2,2,3,3] = Softmax(%7)\n %9: f32[2,2,3,4] = MatMul(%8, %2)\n out %9\n}")
        .example("graph @g {\n in %0: f32[1,2,3,4]\n in %1: f32[1,2,3,4]\n in %2: f32[1,2,3,4]\n const %3: bool[1,1,3,3] = [true, false, false, false, true, false, false, false, true]\n const %4: f32[] = -inf\n %5: f32[1,2,4,3] = Transpose[perm=[0,1,3,2]](%1)\n %6: f32[1,2,3,3] = MatMul(%0, %5)\n %7: f32[1,2,3,3] = Where(%3, %4, %6)\n %8: f32[1,2,3,3] = Softmax[axis=-1](%7)\n %9: f32[1,2,3,4] = MatMul(%8, %2)\n out %9\n}"),
        Rule::custom(
            "attention-heads-3d",
            "Reshape(Transpose[0,2,1,3](Attention(Q₄, K₄, V₄, M)), [B, S, H·Dv]) = \
             Attention[q_num_heads=H, kv_num_heads=Hk](Q, K, V, M) when each of Q₄, K₄, V₄ is \
             Transpose[0,2,1,3](Reshape(X, [B, S, h, d])) of a 3-D X [B, S, h·d]: the 3-D Attention \
             splits and merges heads exactly so; exact (the same arithmetic in the same order)",
            "(Reshape[*] (Transpose[perm=[0,2,1,3]] ?y) ?shape)",
            heads_3d,
        )
        .example("graph @g {\n in %0: f32[1,3,8]\n in %1: f32[1,3,8]\n in %2: f32[1,3,8]\n in %3: f32[1,1,1,3]\n const %4: i64[4] = [1, 3, 2, 4]\n const %5: i64[3] = [1, 3, 8]\n %6: f32[1,3,2,4] = Reshape(%0, %4)\n %7: f32[1,2,3,4] = Transpose[perm=[0,2,1,3]](%6)\n %8: f32[1,3,2,4] = Reshape(%1, %4)\n %9: f32[1,2,3,4] = Transpose[perm=[0,2,1,3]](%8)\n %10: f32[1,3,2,4] = Reshape(%2, %4)\n %11: f32[1,2,3,4] = Transpose[perm=[0,2,1,3]](%10)\n %12: f32[1,2,3,4] = Attention[scale=0.5](%7, %9, %11, %3)\n %13: f32[1,3,2,4] = Transpose[perm=[0,2,1,3]](%12)\n %14: f32[1,3,8] = Reshape(%13, %5)\n out %14\n}"),
    ]
}

/// Attention as BERT exports write it, on 4-D heads, with a padding mask.
pub const SDPA_4D: &str = "graph @g {\n in %0: f32[1,2,3,4]\n in %1: f32[1,2,4,3]\n in %2: f32[1,2,3,4]\n in %3: f32[1,1,1,3]\n const %4: f32[] = 2.0\n %5: f32[1,2,3,3] = MatMul(%0, %1)\n %6: f32[1,2,3,3] = Div(%5, %4)\n %7: f32[1,2,3,3] = Add(%6, %3)\n %8: f32[1,2,3,3] = Softmax[axis=-1](%7)\n %9: f32[1,2,3,4] = MatMul(%8, %2)\n out %9\n}";
