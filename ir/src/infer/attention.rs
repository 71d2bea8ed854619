//! Shape and dtype inference for Attention (see `interp/attention.rs`).
//!
//! With `Hq`/`Hkv` heads, head sizes `D` (Q, K) and `Dv` (V), and
//! `T = past_seq + kv_seq`:
//! - Y: `[B, Hq, Sq, Dv]`, or `[B, Sq, Hq·Dv]` for 3-D inputs, in Q's dtype;
//! - present_key `[B, Hkv, T, D]` in K's dtype, present_value `[B, Hkv, T, Dv]`
//!   in V's;
//! - qk_matmul_output `[B, Hq, Sq, T]` in Q's dtype.
//!
//! Sizes derived from a symbolic dimension (a symbolic hidden size split
//! into heads, a symbolic sum) become fresh unknown dimensions.

use super::util::{operand, opt_operand, ty};
use super::{unknown_dim, Operand};
use crate::{Attrs, DType, Dim, Error, Op, Result, Shape, TensorType};

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("Attention: {msg}"))
}

/// `d / n` (checking divisibility when `d` is fixed).
fn split(what: &str, d: &Dim, n: usize) -> Result<Dim> {
    match d {
        Dim::Fixed(x) if x % n != 0 => Err(bad(format!(
            "{what} hidden size {x} is not divisible by {n} heads"
        ))),
        Dim::Fixed(x) => Ok(Dim::Fixed(x / n)),
        Dim::Sym(_) => Ok(unknown_dim(Op::Attention)),
    }
}

fn heads_attr(attrs: &Attrs, name: &str) -> Result<Option<usize>> {
    match attrs.int(name)? {
        None => Ok(None),
        Some(n) if n > 0 => Ok(Some(n as usize)),
        Some(n) => Err(Error::Attr {
            attr: name.into(),
            msg: format!("must be positive, got {n}"),
        }),
    }
}

pub(crate) fn infer(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    if op != Op::Attention {
        return Err(Error::unsupported(format!("{op} is not an Attention op")));
    }
    if !(1..=4).contains(&n_outputs) {
        return Err(bad(format!(
            "it has 1 to 4 outputs but the node has {n_outputs}"
        )));
    }
    let q = operand(op, inputs, 0)?.ty;
    let k = operand(op, inputs, 1)?.ty;
    let v = operand(op, inputs, 2)?.ty;
    for (what, t) in [("Q", q), ("K", k), ("V", v)] {
        if !t.dtype.is_float() {
            return Err(bad(format!("{what} must be a float tensor, found {t}")));
        }
    }
    if k.dtype != q.dtype {
        return Err(bad(format!(
            "K is {} but Q is {}; they must agree",
            k.dtype, q.dtype
        )));
    }
    let rank = q.shape.rank();
    if k.shape.rank() != rank || v.shape.rank() != rank || !(rank == 3 || rank == 4) {
        return Err(bad(format!(
            "Q, K and V must all be 3-D or all 4-D, got {q}, {k} and {v}"
        )));
    }
    let (qd, kd, vd) = (&q.shape.0, &k.shape.0, &v.shape.0);
    let qh = heads_attr(attrs, "q_num_heads")?;
    let kvh = heads_attr(attrs, "kv_num_heads")?;
    // (batch, q heads, kv heads, q seq, kv seq, head size, v head size)
    let (b, hq, hkv, sq, skv, head, vhead) = if rank == 3 {
        let (Some(qh), Some(kvh)) = (qh, kvh) else {
            return Err(bad(
                "3-D inputs need the q_num_heads and kv_num_heads attributes",
            ));
        };
        let head = split("Q", &qd[2], qh)?;
        split("K", &kd[2], kvh)?;
        let vhead = split("V", &vd[2], kvh)?;
        (
            qd[0].clone(),
            Dim::Fixed(qh),
            Dim::Fixed(kvh),
            qd[1].clone(),
            kd[1].clone(),
            head,
            vhead,
        )
    } else {
        (
            qd[0].clone(),
            qd[1].clone(),
            kd[1].clone(),
            qd[2].clone(),
            kd[2].clone(),
            kd[3].clone(),
            vd[3].clone(),
        )
    };
    if let (Dim::Fixed(a), Dim::Fixed(c)) = (&hq, &hkv) {
        if *c == 0 || a % c != 0 {
            return Err(bad(format!(
                "the {a} query heads are not a multiple of the {c} key/value heads"
            )));
        }
    }
    let past = match (opt_operand(inputs, 4), opt_operand(inputs, 5)) {
        (Some(pk), Some(pv)) => {
            if pk.ty.shape.rank() != 4 || pv.ty.shape.rank() != 4 {
                return Err(bad(format!(
                    "past_key {} and past_value {} must be 4-D",
                    pk.ty, pv.ty
                )));
            }
            Some(pk.ty.shape.0[2].clone())
        }
        (None, None) => None,
        _ => return Err(bad("past_key and past_value must be given together")),
    };
    let total = match (past, &skv) {
        (None, s) => s.clone(),
        (Some(Dim::Fixed(p)), Dim::Fixed(s)) => Dim::Fixed(p + s),
        (Some(Dim::Fixed(0)), s) => s.clone(),
        _ => unknown_dim(op),
    };
    let y_shape = if rank == 3 {
        let merged = match (&hq, &vhead) {
            (Dim::Fixed(h), Dim::Fixed(d)) => Dim::Fixed(h * d),
            _ => unknown_dim(op),
        };
        vec![b.clone(), sq.clone(), merged]
    } else {
        vec![b.clone(), hq.clone(), sq.clone(), vhead.clone()]
    };
    let mut outs = vec![ty(q.dtype, Shape(y_shape))];
    let present = |dtype: DType, d: &Dim| {
        ty(
            dtype,
            Shape(vec![b.clone(), hkv.clone(), total.clone(), d.clone()]),
        )
    };
    if n_outputs > 1 {
        outs.push(present(k.dtype, &head));
    }
    if n_outputs > 2 {
        outs.push(present(v.dtype, &vhead));
    }
    if n_outputs > 3 {
        outs.push(ty(
            q.dtype,
            Shape(vec![b.clone(), hq.clone(), sq.clone(), total.clone()]),
        ));
    }
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;

    fn op(t: &TensorType) -> Option<Operand<'_>> {
        Some(Operand { ty: t, value: None })
    }

    fn shape(dims: &[&str]) -> Shape {
        Shape(
            dims.iter()
                .map(|d| {
                    d.parse()
                        .map(Dim::Fixed)
                        .unwrap_or_else(|_| Dim::Sym(d.to_string()))
                })
                .collect(),
        )
    }

    #[test]
    fn three_d_with_cache_and_all_outputs() {
        let q = TensorType {
            dtype: DType::F32,
            shape: shape(&["b", "s", "64"]),
        };
        let k = TensorType {
            dtype: DType::F32,
            shape: shape(&["b", "s", "32"]),
        };
        let v = TensorType {
            dtype: DType::F32,
            shape: shape(&["b", "s", "48"]),
        };
        let pk = TensorType::new(DType::F32, vec![1, 2, 5, 16]);
        let pv = TensorType::new(DType::F32, vec![1, 2, 5, 24]);
        let attrs = Attrs::new()
            .with("q_num_heads", Attr::Int(4))
            .with("kv_num_heads", Attr::Int(2));
        let ins = [op(&q), op(&k), op(&v), None, op(&pk), op(&pv)];
        let out = infer(Op::Attention, &attrs, &ins, 4).unwrap();
        assert_eq!(out[0].shape, shape(&["b", "s", "96"]));
        assert_eq!(out[1].shape, shape(&["b", "2", "?Attention", "16"]));
        assert_eq!(out[2].shape, shape(&["b", "2", "?Attention", "24"]));
        assert_eq!(out[3].shape, shape(&["b", "4", "s", "?Attention"]));
        assert!(
            infer(Op::Attention, &Attrs::new(), &ins, 1).is_err(),
            "3-D needs head counts"
        );
    }

    #[test]
    fn four_d_fixed() {
        let q = TensorType::new(DType::F16, vec![2, 8, 3, 16]);
        let k = TensorType::new(DType::F16, vec![2, 2, 6, 16]);
        let v = TensorType::new(DType::F16, vec![2, 2, 6, 8]);
        let out = infer(Op::Attention, &Attrs::new(), &[op(&q), op(&k), op(&v)], 4).unwrap();
        assert_eq!(out[0], TensorType::new(DType::F16, vec![2, 8, 3, 8]));
        assert_eq!(out[1], TensorType::new(DType::F16, vec![2, 2, 6, 16]));
        assert_eq!(out[3], TensorType::new(DType::F16, vec![2, 8, 3, 6]));
        let k3 = TensorType::new(DType::F16, vec![2, 3, 6, 16]);
        assert!(infer(Op::Attention, &Attrs::new(), &[op(&q), op(&k3), op(&v)], 1).is_err());
    }
}
