//! The scatter schedules: ScatterElements and ScatterND, with reductions
//! `none`, `add`, `mul`, `max` and `min`.
//!
//! Requires: static shapes; indices of any integer type, given at run time.
//! Establishes: two kernels per node: a parallel copy of `data` into the
//! output, then one serial kernel (no grid: updates may collide) that applies
//! the updates in index order, as the reference interpreter does, so with
//! `none` the last duplicate wins and reductions fold in the same order.
//! Numerics are the interpreter's: integers wrap; f16/bf16 combine in f32 and
//! round once per update; float max/min propagate NaN from either side
//! (numpy's maximum); for bool, add/max are `or` and mul/min are `and`.
//! Negative indices count from the end; out-of-range indices (an error in
//! the interpreter) are clamped, so compiled code never writes outside the
//! output.

use super::indexing::*;
use super::*;
use kiln_ir::kernel::{BinOp, CmpOp, UnOp};
use kiln_ir::Attrs;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

fn reduction(op: Op, attrs: &Attrs) -> Result<Reduction, String> {
    Ok(
        match attrs
            .str_or("reduction", "none")
            .map_err(|e| e.to_string())?
        {
            "none" => Reduction::None,
            "add" => Reduction::Add,
            "mul" => Reduction::Mul,
            "max" => Reduction::Max,
            "min" => Reduction::Min,
            r => return Err(format!("{op}: unknown reduction {r:?}")),
        },
    )
}

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    _outputs: &[&TensorType],
) -> Result<(), Reason> {
    reduction(op, attrs).map_err(Reason)?;
    match inputs.get(1).copied().flatten() {
        Some(t) if t.dtype.is_int() => Ok(()),
        Some(t) => Err(Reason(format!("{op} with {} indices", t.dtype))),
        None => Err(Reason(format!("{op} without indices"))),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = required(node, 0, "data")?;
    let iv = required(node, 1, "indices")?;
    let uv = required(node, 2, "updates")?;
    let red = reduction(node.op, &node.attrs)?;
    let ds = cx.dims(x);
    let is = cx.dims(iv);
    let us = cx.dims(uv);
    let dt = cx.dtype(x);
    let (xb, ib, ub) = (cx.buf(x), cx.buf(iv), cx.buf(uv));
    let ob = cx.out_buf(node.outputs[0]);
    let copy = movement::copy_kernel(cx, &format!("{} (copy)", node.name), xb, ob);
    cx.push(copy);
    let st = kiln_ir::shape::strides(&ds);
    let name = format!("{} (scatter)", node.name);
    let k = match node.op {
        Op::ScatterElements => {
            let rank = ds.len();
            let axis = axis_of(node.op, int_attr(node, "axis", 0)?, rank)?;
            let fits = is.len() == rank
                && is
                    .iter()
                    .zip(&ds)
                    .enumerate()
                    .all(|(k, (i, d))| k == axis || i <= d);
            if !fits || is != us {
                return Err(format!(
                    "ScatterElements: indices {is:?} and updates {us:?} do not fit data {ds:?}"
                ));
            }
            let n: usize = is.iter().product();
            if n > 0 && ds[axis] == 0 {
                return Err("ScatterElements: indices into an empty axis".into());
            }
            serial(&name, &[ib, ub, ob], &[ob], |kb| {
                let p = kb.var();
                let mut s = Vec::new();
                let coords = unflatten(IndexExpr::var(p), &is);
                let i = resolved_index(kb, Expr::load(ib, IndexExpr::var(p), 1), ds[axis], &mut s);
                let mut dst = IndexExpr::c(0);
                for (a, c) in coords.into_iter().enumerate() {
                    let c = if a == axis { i.clone() } else { c };
                    dst = dst.add(c.mul(st[a] as i64));
                }
                s.extend(combine(
                    ob,
                    dst,
                    Expr::load(ub, IndexExpr::var(p), 1),
                    dt,
                    red,
                ));
                if n > 0 {
                    vec![for_n(p, n, s)]
                } else {
                    Vec::new()
                }
            })
        }
        Op::ScatterND => {
            let k = is.last().copied().unwrap_or(usize::MAX);
            let mut want = is[..is.len().saturating_sub(1)].to_vec();
            if k <= ds.len() {
                want.extend_from_slice(&ds[k..]);
            }
            if is.is_empty() || k > ds.len() || us != want {
                return Err(format!(
                    "ScatterND: indices {is:?} and updates {us:?} do not fit data {ds:?}"
                ));
            }
            let slice: usize = ds[k..].iter().product();
            let n_tuples: usize = is[..is.len() - 1].iter().product();
            if n_tuples * slice > 0 && ds[..k].contains(&0) {
                return Err("ScatterND: indices into an empty axis".into());
            }
            serial(&name, &[ib, ub, ob], &[ob], |kb| {
                let t = kb.var();
                let mut s = Vec::new();
                let mut base = IndexExpr::c(0);
                for j in 0..k {
                    let raw = Expr::load(
                        ib,
                        IndexExpr::var(t).mul(k as i64).add(IndexExpr::c(j as i64)),
                        1,
                    );
                    let i = resolved_index(kb, raw, ds[j], &mut s);
                    base = base.add(i.mul(st[j] as i64));
                }
                let bv = kb.var();
                s.push(Stmt::Let {
                    var: bv,
                    value: ix(base),
                });
                let e = kb.var();
                let upd = Expr::load(
                    ub,
                    IndexExpr::var(t).mul(slice as i64).add(IndexExpr::var(e)),
                    1,
                );
                let dst = IndexExpr::var(bv).add(IndexExpr::var(e));
                s.push(for_n(e, slice, combine(ob, dst, upd, dt, red)));
                if n_tuples * slice > 0 {
                    vec![for_n(t, n_tuples, s)]
                } else {
                    Vec::new()
                }
            })
        }
        o => return Err(format!("{o} has no scatter schedule")),
    };
    cx.push(k);
    Ok(())
}

/// `out[dst] = red(out[dst], upd)` for storage dtype `dt`.
fn combine(out: BufId, dst: IndexExpr, upd: Expr, dt: DType, red: Reduction) -> Vec<Stmt> {
    if red == Reduction::None {
        return vec![Stmt::Store {
            buf: out,
            index: dst,
            value: upd,
        }];
    }
    let ct = compute_dtype(dt);
    let widen = |e: Expr| if ct != dt { Expr::cast(ct, e) } else { e };
    let o = widen(Expr::load(out, dst.clone(), 1));
    let u = widen(upd);
    let v = if dt == DType::Bool {
        let op = match red {
            Reduction::Add | Reduction::Max => BinOp::Or,
            _ => BinOp::And,
        };
        Expr::binary(op, o, u)
    } else {
        match red {
            Reduction::Add => Expr::binary(BinOp::Add, o, u),
            Reduction::Mul => Expr::binary(BinOp::Mul, o, u),
            Reduction::Max | Reduction::Min => {
                let keep = if red == Reduction::Max {
                    CmpOp::Ge
                } else {
                    CmpOp::Le
                };
                let mut cond = Expr::cmp(keep, o.clone(), u.clone());
                if ct.is_float() {
                    cond = Expr::binary(BinOp::Or, Expr::unary(UnOp::IsNan, o.clone()), cond);
                }
                Expr::select(cond, o, u)
            }
            Reduction::None => u,
        }
    };
    vec![Stmt::Store {
        buf: out,
        index: dst,
        value: if ct != dt { Expr::cast(dt, v) } else { v },
    }]
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;

    #[test]
    fn scatter_elements_every_reduction() {
        for red in ["none", "add", "mul", "max", "min"] {
            for dt in ["f32", "i32", "f16"] {
                check(&format!(
                    "graph @t {{\n in %0: {dt}[3,4]\n in %1: i64[3,2]\n in %2: {dt}[3,2]\n %3: {dt}[3,4] = ScatterElements[axis=1, reduction=\"{red}\"](%0, %1, %2) @s\n out %3\n}}"
                ));
            }
            check(&format!(
                "graph @t {{\n in %0: bool[3,4]\n const %1: i64[2,4] = [0, -1, 2, 1, 0, -3, 2, 2]\n in %2: bool[2,4]\n %3: bool[3,4] = ScatterElements[axis=0, reduction=\"{red}\"](%0, %1, %2) @s\n out %3\n}}"
            ));
        }
    }

    #[test]
    fn scatter_nd_every_reduction() {
        for red in ["none", "add", "mul", "max", "min"] {
            check(&format!(
                "graph @t {{\n in %0: f32[4,3,2]\n const %1: i64[3,1] = [0, -1, 0]\n in %2: f32[3,3,2]\n %3: f32[4,3,2] = ScatterND[reduction=\"{red}\"](%0, %1, %2) @s\n out %3\n}}"
            ));
            check(&format!(
                "graph @t {{\n in %0: i64[4,3]\n in %1: i64[2,2]\n in %2: i64[2]\n %3: i64[4,3] = ScatterND[reduction=\"{red}\"](%0, %1, %2) @s\n out %3\n}}"
            ));
        }
    }
}
