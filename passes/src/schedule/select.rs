//! The positional-selection schedules: Trilu, ReverseSequence, OneHot and
//! EyeLike.
//!
//! Requires: static shapes; OneHot's `depth` constant (it sets the output
//! shape). Trilu's `k`, ReverseSequence's `sequence_lens` and OneHot's
//! `values` may be given at run time. Establishes: one kernel per node, one
//! store per output element, choosing between a copied input element and a
//! constant by a comparison of coordinates (exact for every dtype).
//! ReverseSequence clamps each length into `0..=time` (the interpreter
//! rejects other lengths).

use super::indexing::*;
use super::*;
use kiln_ir::kernel::{BinOp, CmpOp};
use kiln_ir::Attrs;

pub(super) fn supports(
    op: Op,
    _attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    _outputs: &[&TensorType],
) -> Result<(), Reason> {
    let rank = inputs
        .first()
        .copied()
        .flatten()
        .map_or(0, |t| t.shape.rank());
    match op {
        Op::Trilu | Op::ReverseSequence if rank < 2 => {
            Err(Reason(format!("{op} of a rank-{rank} input")))
        }
        Op::EyeLike if rank != 2 => Err(Reason(format!("EyeLike of a rank-{rank} input"))),
        _ => Ok(()),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    match node.op {
        Op::Trilu => trilu(cx, node),
        Op::ReverseSequence => reverse_sequence(cx, node),
        Op::OneHot => one_hot(cx, node),
        Op::EyeLike => eye_like(cx, node),
        o => Err(format!("{o} has no selection schedule")),
    }
}

/// `if cond { out[flat] = then } else { out[flat] = els }`.
fn store_if(cond: Expr, out: BufId, flat: IndexExpr, then: Expr, els: Expr) -> Stmt {
    Stmt::If {
        cond,
        then: vec![Stmt::Store {
            buf: out,
            index: flat.clone(),
            value: then,
        }],
        els: vec![Stmt::Store {
            buf: out,
            index: flat,
            value: els,
        }],
    }
}

fn trilu(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = required(node, 0, "input")?;
    let xd = cx.dims(x);
    let dt = cx.dtype(x);
    let upper = int_attr(node, "upper", 1)? != 0;
    let r = xd.len();
    if r < 2 {
        return Err(format!("Trilu: input must have rank >= 2, found {xd:?}"));
    }
    let xb = cx.buf(x);
    let zero = scalar_buf(cx, dt, 0.0)?;
    let kbuf = match operand(node, 1) {
        Some(v) if cx.dims(v).iter().product::<usize>() != 1 => {
            return Err("Trilu: k must be one integer".into())
        }
        Some(v) => Some(cx.buf(v)),
        None => None,
    };
    let ob = cx.out_buf(node.outputs[0]);
    let mut reads = vec![xb, zero];
    reads.extend(kbuf);
    let k = per_element(&node.name, &xd, &reads, &[ob], |_, o, flat| {
        let kv = match kbuf {
            Some(b) => Expr::cast(DType::I64, Expr::load(b, IndexExpr::c(0), 1)),
            None => Expr::int(DType::I64, 0),
        };
        // keep where j - i >= k (upper) or j - i <= k (lower)
        let diff = ix(o[r - 1].clone().add(o[r - 2].clone().mul(-1)));
        let cond = Expr::cmp(if upper { CmpOp::Ge } else { CmpOp::Le }, diff, kv);
        vec![store_if(
            cond,
            ob,
            flat.clone(),
            Expr::load(xb, flat, 1),
            Expr::load(zero, IndexExpr::c(0), 1),
        )]
    });
    cx.push(k);
    Ok(())
}

fn reverse_sequence(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = required(node, 0, "input")?;
    let lv = required(node, 1, "sequence_lens")?;
    let xd = cx.dims(x);
    let ba = int_attr(node, "batch_axis", 1)?;
    let ta = int_attr(node, "time_axis", 0)?;
    if xd.len() < 2 || !matches!((ba, ta), (0, 1) | (1, 0)) {
        return Err(format!(
            "ReverseSequence: batch_axis {ba} and time_axis {ta} must be 0 and 1 (rank {})",
            xd.len()
        ));
    }
    let (ba, ta) = (ba as usize, ta as usize);
    if cx.dims(lv).iter().product::<usize>() != xd[ba] {
        return Err(format!(
            "ReverseSequence: sequence_lens must have {} entries",
            xd[ba]
        ));
    }
    let nt = xd[ta] as i64;
    let st = kiln_ir::shape::strides(&xd);
    let (xb, lb) = (cx.buf(x), cx.buf(lv));
    let ob = cx.out_buf(node.outputs[0]);
    let k = per_element(&node.name, &xd, &[xb, lb], &[ob], |kb, o, flat| {
        let len = kb.var();
        let raw = Expr::cast(DType::I64, Expr::load(lb, o[ba].clone(), 1));
        let t = o[ta].clone();
        // element t < len comes from len - 1 - t: an offset of (len - 1 - 2t) time steps
        let lenx = IndexExpr::var(len)
            .max(IndexExpr::c(0))
            .min(IndexExpr::c(nt));
        let src = flat.clone().add(
            lenx.clone()
                .add(IndexExpr::c(-1))
                .add(t.clone().mul(-2))
                .mul(st[ta] as i64),
        );
        vec![
            Stmt::Let {
                var: len,
                value: raw,
            },
            store_if(
                lt(ix(t), ix(lenx)),
                ob,
                flat.clone(),
                Expr::load(xb, src, 1),
                Expr::load(xb, flat, 1),
            ),
        ]
    });
    cx.push(k);
    Ok(())
}

fn one_hot(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let iv = required(node, 0, "indices")?;
    let dv = required(node, 1, "depth")?;
    let vv = required(node, 2, "values")?;
    let id = cx.dims(iv);
    let od = cx.dims(node.outputs[0]);
    let depth = cx
        .const_of(dv)
        .ok_or("OneHot: `depth` must be a constant to be scheduled")?
        .to_f64_vec();
    let depth = match depth.as_slice() {
        [d] if *d >= 0.0 && d.is_finite() => *d as usize,
        v => {
            return Err(format!(
                "OneHot: depth must be one non-negative number, found {v:?}"
            ))
        }
    };
    if cx.dims(vv).iter().product::<usize>() != 2 {
        return Err("OneHot: values must be [off, on]".into());
    }
    let axis = axis_of(node.op, int_attr(node, "axis", -1)?, id.len() + 1)?;
    let mut want = id.clone();
    want.insert(axis, depth);
    if want != od {
        return Err(format!("OneHot: output {od:?} should be {want:?}"));
    }
    let (ib, vb) = (cx.buf(iv), cx.buf(vv));
    let ob = cx.out_buf(node.outputs[0]);
    let ist = kiln_ir::shape::strides(&id);
    let k = per_element(&node.name, &od, &[ib, vb], &[ob], |kb, o, flat| {
        let mut ii = IndexExpr::c(0);
        let mut n = 0;
        for (a, oa) in o.iter().enumerate() {
            if a != axis {
                ii = ii.add(oa.clone().mul(ist[n] as i64));
                n += 1;
            }
        }
        // indices truncate toward zero like a cast to int64; negative ones count from the end
        let r = kb.var();
        let w = kb.var();
        let d = depth as i64;
        vec![
            Stmt::Let {
                var: r,
                value: Expr::cast(DType::I64, Expr::load(ib, ii, 1)),
            },
            Stmt::Let {
                var: w,
                value: Expr::select(
                    lt(Expr::var(r), Expr::int(DType::I64, 0)),
                    Expr::binary(BinOp::Add, Expr::var(r), Expr::int(DType::I64, d)),
                    Expr::var(r),
                ),
            },
            store_if(
                Expr::cmp(CmpOp::Eq, Expr::var(w), ix(o[axis].clone())),
                ob,
                flat,
                Expr::load(vb, IndexExpr::c(1), 1),
                Expr::load(vb, IndexExpr::c(0), 1),
            ),
        ]
    });
    cx.push(k);
    Ok(())
}

fn eye_like(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let od = cx.dims(node.outputs[0]);
    let dt = cx.dtype(node.outputs[0]);
    let k = int_attr(node, "k", 0)?;
    if od.len() != 2 {
        return Err(format!("EyeLike: output must be 2-D, found {od:?}"));
    }
    let one = scalar_buf(cx, dt, 1.0)?;
    let zero = scalar_buf(cx, dt, 0.0)?;
    let ob = cx.out_buf(node.outputs[0]);
    let kern = per_element(&node.name, &od, &[one, zero], &[ob], |_, o, flat| {
        let diff = ix(o[1].clone().add(o[0].clone().mul(-1)));
        vec![store_if(
            Expr::cmp(CmpOp::Eq, diff, Expr::int(DType::I64, k)),
            ob,
            flat,
            Expr::load(one, IndexExpr::c(0), 1),
            Expr::load(zero, IndexExpr::c(0), 1),
        )]
    });
    cx.push(kern);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;

    #[test]
    fn trilu_both_triangles_constant_and_runtime_k() {
        for upper in [0, 1] {
            for k in [-2, 0, 1, 5] {
                check(&format!(
                    "graph @t {{\n in %0: f32[2,4,5]\n const %1: i64[] = {k}\n %2: f32[2,4,5] = Trilu[upper={upper}](%0, %1) @t\n out %2\n}}"
                ));
            }
            check(&format!(
                "graph @t {{\n in %0: i32[3,3]\n in %1: i64[]\n %2: i32[3,3] = Trilu[upper={upper}](%0, %1) @t\n out %2\n}}"
            ));
            check(&format!(
                "graph @t {{\n in %0: f16[3,2]\n %1: f16[3,2] = Trilu[upper={upper}](%0) @t\n out %1\n}}"
            ));
        }
    }

    #[test]
    fn reverse_sequence_both_layouts() {
        check("graph @t {\n in %0: f32[4,3,2]\n in %1: i64[3]\n %2: f32[4,3,2] = ReverseSequence[batch_axis=1, time_axis=0](%0, %1) @r\n out %2\n}");
        check("graph @t {\n in %0: i32[3,4]\n const %1: i64[3] = [4, 0, 3]\n %2: i32[3,4] = ReverseSequence[batch_axis=0, time_axis=1](%0, %1) @r\n out %2\n}");
    }

    #[test]
    fn one_hot_axes_negative_and_out_of_range_indices() {
        for (axis, out) in [(-1, "2,3,5"), (0, "5,2,3"), (1, "2,5,3")] {
            check(&format!(
                "graph @t {{\n const %0: i64[2,3] = [0, -1, 4, 7, -6, 2]\n const %1: i64[] = 5\n in %2: f32[2]\n %3: f32[{out}] = OneHot[axis={axis}](%0, %1, %2) @o\n out %3\n}}"
            ));
        }
        check("graph @t {\n in %0: f32[4]\n const %1: f32[] = 3.0\n in %2: i32[2]\n %3: i32[4,3] = OneHot(%0, %1, %2) @o\n out %3\n}");
    }

    #[test]
    fn eye_like_diagonals_and_dtypes() {
        for k in [-1, 0, 2, 9] {
            check(&format!(
                "graph @t {{\n in %0: f32[3,4]\n %1: f32[3,4] = EyeLike[k={k}](%0) @e\n out %1\n}}"
            ));
        }
        check("graph @t {\n in %0: f32[3,3]\n %1: i32[3,3] = EyeLike[dtype=6](%0) @e\n out %1\n}");
        check("graph @t {\n in %0: i64[2,3]\n %1: i64[2,3] = EyeLike(%0) @e\n out %1\n}");
    }
}
