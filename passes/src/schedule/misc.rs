//! The Range and TopK schedules.
//!
//! Requires: static shapes (so Range's length and TopK's `K` are known at
//! compile time; TopK's `K` operand must be a constant). Range's `start`
//! and `delta` may be given at run time. Establishes:
//! - Range: one kernel, `out[i] = start + i·delta` computed as the reference
//!   interpreter does: exactly (wrapping) for integers, in f64 for f32/f64,
//!   in f32 for f16/bf16 (`stash_type` 1, the default; f64 otherwise).
//! - TopK: one kernel whose grid runs over the lines along `axis`; each line
//!   is a K-step selection (each step scans the not-yet-taken elements for
//!   the best one), giving the order of the interpreter's stable sort: NaN
//!   counts as the largest value, ties keep the smaller index first. Values
//!   are copied exactly; indices are i64.

use super::indexing::*;
use super::*;
use kiln_ir::kernel::{BinOp, CmpOp, Scope, Ty, UnOp};
use kiln_ir::Attrs;

pub(super) fn supports(
    op: Op,
    _attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    _outputs: &[&TensorType],
) -> Result<(), Reason> {
    let t = inputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| Reason(format!("{op} without its first input")))?;
    match op {
        Op::Range if t.dtype == DType::Bool => Err(Reason("Range of bool".into())),
        Op::TopK if t.shape.rank() == 0 => Err(Reason("TopK of a scalar".into())),
        _ => Ok(()),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    match node.op {
        Op::Range => range(cx, node),
        Op::TopK => top_k(cx, node),
        o => Err(format!("{o} has no misc schedule")),
    }
}

fn range(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let sv = required(node, 0, "start")?;
    let dv = required(node, 2, "delta")?;
    let dt = cx.dtype(node.outputs[0]);
    let od = cx.dims(node.outputs[0]);
    let stash = int_attr(node, "stash_type", 1)?;
    let (sb, db) = (cx.buf(sv), cx.buf(dv));
    let ob = cx.out_buf(node.outputs[0]);
    let k = per_element(&node.name, &od, &[sb, db], &[ob], |_, _, flat| {
        let s = Expr::load(sb, IndexExpr::c(0), 1);
        let d = Expr::load(db, IndexExpr::c(0), 1);
        let i = ix(flat.clone());
        let value = if dt.is_float() {
            // the type the steps are computed in
            let wt = if matches!(dt, DType::F16 | DType::BF16) && stash == 1 {
                DType::F32
            } else {
                DType::F64
            };
            // (f16/bf16 widen through f32, the one conversion they have)
            let w = |e: Expr| {
                let e = if compute_dtype(dt) != dt {
                    Expr::cast(DType::F32, e)
                } else {
                    e
                };
                Expr::cast(wt, e)
            };
            let v = Expr::binary(
                BinOp::Add,
                w(s),
                Expr::binary(BinOp::Mul, Expr::cast(wt, i), w(d)),
            );
            Expr::cast(dt, v)
        } else {
            Expr::binary(
                BinOp::Add,
                s,
                Expr::binary(BinOp::Mul, Expr::cast(dt, i), d),
            )
        };
        vec![Stmt::Store {
            buf: ob,
            index: flat,
            value,
        }]
    });
    cx.push(k);
    Ok(())
}

fn top_k(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = required(node, 0, "X")?;
    let xd = cx.dims(x);
    let dt = cx.dtype(x);
    let rank = xd.len();
    let axis = axis_of(node.op, int_attr(node, "axis", -1)?, rank)?;
    let largest = int_attr(node, "largest", 1)? != 0;
    let k = match const_ints(cx, node, 1, "K")?.as_deref() {
        Some([k]) if *k >= 0 => *k as usize,
        v => {
            return Err(format!(
                "TopK: K must be one non-negative integer, found {v:?}"
            ))
        }
    };
    let dim = xd[axis];
    if k > dim {
        return Err(format!("TopK: K = {k} exceeds the axis size {dim}"));
    }
    let outer: usize = xd[..axis].iter().product();
    let inner: usize = xd[axis + 1..].iter().product();
    let xb = cx.buf(x);
    let vb = cx.out_buf(node.outputs[0]);
    if let Some(&v) = node.outputs.get(1) {
        if cx.dtype(v) != DType::I64 {
            return Err("TopK: indices must be i64".into());
        }
    }
    let ib = node.outputs.get(1).map(|&v| cx.out_buf(v));
    // Values compare in f32 for f16/bf16 (exact), as u8 for bool.
    let ct = match dt {
        DType::Bool => DType::U8,
        d => compute_dtype(d),
    };
    let taken = cx.local();
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.write(vb);
    if let Some(b) = ib {
        kb.write(b);
    }
    let g = kb.axis(outer * inner);
    let (o, i) = (
        IndexExpr::var(g).div(inner as i64),
        IndexExpr::var(g).rem(inner as i64),
    );
    let src = |j: IndexExpr| {
        o.clone()
            .mul((dim * inner) as i64)
            .add(i.clone())
            .add(j.mul(inner as i64))
    };
    let dst = |j: IndexExpr| {
        o.clone()
            .mul((k * inner) as i64)
            .add(i.clone())
            .add(j.mul(inner as i64))
    };
    let load = |j: IndexExpr| -> Expr {
        let e = Expr::load(xb, src(j), 1);
        if ct != dt {
            Expr::cast(ct, e)
        } else {
            e
        }
    };
    let (step, best, bi, c, v) = (kb.var(), kb.var(), kb.var(), kb.var(), kb.var());
    // v is better than best: strictly (ties keep the earlier index); NaN is the largest.
    let better = {
        let (vv, bv) = (Expr::var(v), Expr::var(best));
        let strict = Expr::cmp(
            if largest { CmpOp::Gt } else { CmpOp::Lt },
            vv.clone(),
            bv.clone(),
        );
        if ct.is_float() {
            let vn = Expr::unary(UnOp::IsNan, vv);
            let bn = Expr::unary(UnOp::IsNan, bv);
            if largest {
                // v NaN and best not, or both numbers and v > best
                Expr::binary(
                    BinOp::Or,
                    Expr::binary(BinOp::And, vn, Expr::unary(UnOp::Not, bn)),
                    strict,
                )
            } else {
                // best NaN and v not, or v < best
                Expr::binary(
                    BinOp::Or,
                    Expr::binary(BinOp::And, bn, Expr::unary(UnOp::Not, vn)),
                    strict,
                )
            }
        } else {
            strict
        }
    };
    let first = Expr::cmp(CmpOp::Lt, Expr::var(bi), Expr::int(DType::I64, 0));
    let scan = vec![Stmt::If {
        cond: Expr::cmp(
            CmpOp::Eq,
            Expr::load(taken, IndexExpr::var(c), 1),
            Expr::int(DType::U8, 0),
        ),
        then: vec![
            Stmt::Let {
                var: v,
                value: load(IndexExpr::var(c)),
            },
            Stmt::If {
                cond: Expr::binary(BinOp::Or, first, better),
                then: vec![
                    Stmt::Assign {
                        var: best,
                        value: Expr::var(v),
                    },
                    Stmt::Assign {
                        var: bi,
                        value: ix(IndexExpr::var(c)),
                    },
                ],
                els: vec![],
            },
        ],
        els: vec![],
    }];
    let zero = if ct.is_float() {
        Expr::float(ct, 0.0)
    } else {
        Expr::int(ct, 0)
    };
    let chosen = IndexExpr::var(bi)
        .max(IndexExpr::c(0))
        .min(IndexExpr::c(dim as i64 - 1));
    let mut per_step = vec![
        Stmt::Local {
            var: best,
            ty: Ty::scalar(ct),
            init: zero,
        },
        Stmt::Local {
            var: bi,
            ty: Ty::INDEX,
            init: Expr::int(DType::I64, -1),
        },
        for_n(c, dim, scan),
        Stmt::Store {
            buf: taken,
            index: chosen.clone(),
            value: Expr::int(DType::U8, 1),
        },
        Stmt::Store {
            buf: vb,
            index: dst(IndexExpr::var(step)),
            value: Expr::load(xb, src(chosen), 1),
        },
    ];
    if let Some(b) = ib {
        per_step.push(Stmt::Store {
            buf: b,
            index: dst(IndexExpr::var(step)),
            value: Expr::var(bi),
        });
    }
    let body = vec![
        Stmt::Alloc {
            buf: taken,
            scope: Scope::Private,
            dtype: DType::U8,
            len: dim.max(1),
        },
        for_n(step, k, per_step),
    ];
    let total = outer * inner * k;
    cx.push(kb.finish(if total > 0 { body } else { Vec::new() }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;

    #[test]
    fn range_of_each_dtype() {
        check("graph @t {\n const %0: f32[] = 1.5\n const %1: f32[] = 9.0\n const %2: f32[] = 0.7\n %3: f32[11] = Range(%0, %1, %2) @r\n out %3\n}");
        check("graph @t {\n const %0: i32[] = 10\n const %1: i32[] = -2\n const %2: i32[] = -3\n %3: i32[4] = Range(%0, %1, %2) @r\n out %3\n}");
        check("graph @t {\n const %0: f16[] = 0.1\n const %1: f16[] = 2.0\n const %2: f16[] = 0.3\n %3: f16[7] = Range(%0, %1, %2) @r\n out %3\n}");
        check("graph @t {\n const %0: f64[] = -1.0\n const %1: f64[] = 1.0\n const %2: f64[] = 0.1\n %3: f64[20] = Range(%0, %1, %2) @r\n out %3\n}");
    }

    #[test]
    fn top_k_largest_smallest_axes_and_ties() {
        for largest in [0, 1] {
            for (axis, k, out) in [(-1, 2, "3,4,2"), (1, 3, "3,3,5"), (0, 1, "1,4,5")] {
                for dt in ["f32", "i32", "f16"] {
                    check(&format!(
                        "graph @t {{\n in %0: {dt}[3,4,5]\n const %1: i64[1] = [{k}]\n %2: {dt}[{out}], %3: i64[{out}] = TopK[axis={axis}, largest={largest}](%0, %1) @k\n out %2, %3\n}}"
                    ));
                }
            }
            // ties everywhere, and NaN
            check(&format!(
                "graph @t {{\n const %0: f32[2,5] = [1.0, 2.0, 2.0, 1.0, 2.0, nan, 1.0, nan, -1.0, 1.0]\n const %1: i64[1] = [4]\n %2: f32[2,4], %3: i64[2,4] = TopK[largest={largest}](%0, %1) @k\n out %2, %3\n}}"
            ));
            check(&format!(
                "graph @t {{\n in %0: u8[3,6]\n const %1: i64[1] = [6]\n %2: u8[3,6], %3: i64[3,6] = TopK[largest={largest}](%0, %1) @k\n out %2, %3\n}}"
            ));
        }
    }
}
