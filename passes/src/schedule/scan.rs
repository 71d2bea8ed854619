//! The scan schedule: CumSum (with `exclusive` and `reverse`).
//!
//! Requires: static shapes; a numeric (not bool) input. The `axis` operand
//! may be a constant or given at run time. Establishes: for a constant axis,
//! one kernel whose grid runs over the lines along that axis, each walking
//! its line in order (reversed for `reverse`) with a scalar accumulator, so
//! the summation order is the reference interpreter's: f32 for f16/bf16/f32
//! (rounding each output once), f64 for f64, wrapping integers. For an axis
//! known only at run time, one such kernel per possible axis, each guarded by
//! a comparison with the loaded axis value (exactly one does the work; an
//! out-of-range axis leaves the output unwritten).

use super::indexing::*;
use super::*;
use kiln_ir::kernel::{BinOp, CmpOp, Ty};
use kiln_ir::Attrs;

pub(super) fn supports(
    op: Op,
    _attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    _outputs: &[&TensorType],
) -> Result<(), Reason> {
    match inputs.first().copied().flatten() {
        Some(t) if t.dtype == DType::Bool => Err(Reason(format!("{op} of bool"))),
        Some(t) if t.shape.rank() == 0 => Err(Reason(format!("{op} of a scalar"))),
        Some(_) => Ok(()),
        None => Err(Reason(format!("{op} without data"))),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = required(node, 0, "x")?;
    let av = required(node, 1, "axis")?;
    let xd = cx.dims(x);
    let dt = cx.dtype(x);
    let rank = xd.len();
    let exclusive = int_attr(node, "exclusive", 0)? != 0;
    let reverse = int_attr(node, "reverse", 0)? != 0;
    let (xb, ob) = (cx.buf(x), cx.out_buf(node.outputs[0]));
    match cx.const_of(av) {
        Some(t) => {
            let a = match t.to_i64_vec().map_err(|e| e.to_string())?.as_slice() {
                [a] => *a,
                v => return Err(format!("CumSum: the axis must be one integer, found {v:?}")),
            };
            let axis = axis_of(node.op, a, rank)?;
            let k = line_kernel(&node.name, &xd, dt, axis, xb, ob, None, exclusive, reverse);
            cx.push(k);
        }
        None => {
            if cx.dims(av).iter().product::<usize>() != 1 {
                return Err("CumSum: the axis must be one integer".into());
            }
            let ab = cx.buf(av);
            for axis in 0..rank {
                let name = format!("{} (axis {axis})", node.name);
                let k = line_kernel(&name, &xd, dt, axis, xb, ob, Some(ab), exclusive, reverse);
                cx.push(k);
            }
        }
    }
    Ok(())
}

/// The cumulative sum along `axis`; with `guard`, only when the axis value
/// loaded from it names `axis` (directly or counted from the end).
#[allow(clippy::too_many_arguments)]
fn line_kernel(
    name: &str,
    xd: &[usize],
    dt: DType,
    axis: usize,
    xb: BufId,
    ob: BufId,
    guard: Option<BufId>,
    exclusive: bool,
    reverse: bool,
) -> Kernel {
    let n = xd[axis];
    let outer: usize = xd[..axis].iter().product();
    let inner: usize = xd[axis + 1..].iter().product();
    let ct = compute_dtype(dt);
    let mut kb = KernelBuilder::new(name.to_string());
    kb.read(xb);
    kb.write(ob);
    if let Some(g) = guard {
        kb.read(g);
    }
    let g = kb.axis(outer * inner);
    let base = IndexExpr::var(g)
        .div(inner as i64)
        .mul((n * inner) as i64)
        .add(IndexExpr::var(g).rem(inner as i64));
    let acc = kb.var();
    let step = kb.var();
    let k = if reverse {
        IndexExpr::c(n as i64 - 1).add(IndexExpr::var(step).mul(-1))
    } else {
        IndexExpr::var(step)
    };
    let at = base.add(k.mul(inner as i64));
    let zero = if ct.is_float() {
        Expr::float(ct, 0.0)
    } else {
        Expr::int(ct, 0)
    };
    let add = Stmt::Assign {
        var: acc,
        value: Expr::binary(BinOp::Add, Expr::var(acc), load_c(xb, dt, at.clone(), 1)),
    };
    let store = Stmt::Store {
        buf: ob,
        index: at,
        value: to_storage(Expr::var(acc), dt),
    };
    let inner_body = if exclusive {
        vec![store, add]
    } else {
        vec![add, store]
    };
    let mut body = vec![
        Stmt::Local {
            var: acc,
            ty: Ty::scalar(ct),
            init: zero,
        },
        for_n(step, n, inner_body),
    ];
    if let Some(gb) = guard {
        let a = Expr::cast(DType::I64, Expr::load(gb, IndexExpr::c(0), 1));
        let rank = xd.len() as i64;
        let cond = Expr::binary(
            BinOp::Or,
            Expr::cmp(CmpOp::Eq, a.clone(), Expr::int(DType::I64, axis as i64)),
            Expr::cmp(CmpOp::Eq, a, Expr::int(DType::I64, axis as i64 - rank)),
        );
        body = vec![Stmt::If {
            cond,
            then: body,
            els: vec![],
        }];
    }
    let total: usize = xd.iter().product();
    kb.finish(if total > 0 { body } else { Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;

    #[test]
    fn cumsum_every_flag_axis_and_dtype() {
        for (ex, rev) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            for axis in [0, 1, -1] {
                for dt in ["f32", "i32", "f64", "f16", "u8"] {
                    check(&format!(
                        "graph @t {{\n in %0: {dt}[3,4,2]\n const %1: i64[] = {axis}\n %2: {dt}[3,4,2] = CumSum[exclusive={ex}, reverse={rev}](%0, %1) @c\n out %2\n}}"
                    ));
                }
            }
            check(&format!(
                "graph @t {{\n in %0: f32[3,4,2]\n in %1: i32[]\n %2: f32[3,4,2] = CumSum[exclusive={ex}, reverse={rev}](%0, %1) @c\n out %2\n}}"
            ));
        }
    }
}
