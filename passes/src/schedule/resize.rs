//! The Resize schedule: `nearest` (every `nearest_mode`), `linear` and
//! `cubic` (with `antialias`, `exclude_outside`, `cubic_coeff_a`), every
//! `coordinate_transformation_mode`, `axes` and `keep_aspect_ratio_policy`.
//!
//! Requires: static shapes; constant `roi`, `scales` and `sizes` operands
//! (they are folded whenever they set the output shape). Establishes: the
//! sampling tables the reference interpreter computes
//! ([`kiln_ir::interp::resize_tables`]) become constant buffers, and:
//! - nearest: one kernel, one store per output element, the source element
//!   being the sum of a table lookup per resized axis (a pure selection, exact
//!   for every dtype; -1 in a table marks the extrapolation value);
//! - linear/cubic: one kernel per resized axis, in the interpreter's order,
//!   each a weighted sum over that axis's taps in f64 (tap order, no fused
//!   multiply-add) into an f64 temporary; the last one converts as the
//!   interpreter does (floats clamped to the type's finite range, integers
//!   rounded half to even and saturated). f16/bf16 results round through f32.

use super::indexing::*;
use super::*;
use kiln_ir::kernel::{BinOp, CmpOp, Ty, UnOp};
use kiln_ir::Attrs;

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    _outputs: &[&TensorType],
) -> Result<(), Reason> {
    let t = inputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| Reason(format!("{op} without data")))?;
    let mode = attrs
        .str_or("mode", "nearest")
        .map_err(|e| Reason(e.to_string()))?;
    if mode != "nearest" && t.dtype == DType::Bool {
        return Err(Reason(format!("{op} {mode} of bool")));
    }
    Ok(())
}

/// A constant operand (`None` when omitted), or an error naming it.
fn const_operand<'a>(
    cx: &'a Lower,
    node: &Node,
    i: usize,
    what: &str,
) -> Result<Option<&'a Tensor>, String> {
    match operand(node, i) {
        None => Ok(None),
        Some(v) => match cx.const_of(v) {
            Some(t) => Ok(Some(t)),
            // an empty operand counts as omitted
            None if cx.dims(v).iter().product::<usize>() == 0 => Ok(None),
            None => Err(format!(
                "Resize: the `{what}` input (#{i}) must be a constant to be scheduled"
            )),
        },
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = required(node, 0, "X")?;
    let xd = cx.dims(x);
    let dt = cx.dtype(x);
    let od = cx.dims(node.outputs[0]);
    let tables = kiln_ir::interp::resize_tables(
        &node.attrs,
        &xd,
        dt,
        const_operand(cx, node, 1, "roi")?,
        const_operand(cx, node, 2, "scales")?,
        const_operand(cx, node, 3, "sizes")?,
    )
    .map_err(|e| e.to_string())?;
    if tables.out_shape != od {
        return Err(format!(
            "Resize: computes the shape {:?} but the node declares {od:?}",
            tables.out_shape
        ));
    }
    let xb = cx.buf(x);
    if tables.axes.is_empty() {
        let ob = cx.out_buf(node.outputs[0]);
        let k = movement::copy_kernel(cx, &node.name, xb, ob);
        cx.push(k);
        return Ok(());
    }
    if tables.nearest {
        nearest(cx, node, &xd, xb, &tables)
    } else {
        interpolate(cx, node, &xd, xb, &tables)
    }
}

fn i64_table(cx: &mut Lower, what: String, vals: Vec<i64>) -> Result<BufId, String> {
    let n = vals.len();
    let t = Tensor::from_vec(vec![n], vals).map_err(|e| e.to_string())?;
    Ok(cx.add_buffer(Some(what), DType::I64, vec![n], BufKind::Const(t)))
}

fn nearest(
    cx: &mut Lower,
    node: &Node,
    xd: &[usize],
    xb: BufId,
    tables: &kiln_ir::interp::ResizeTables,
) -> Result<(), String> {
    let dt = cx.dtype(node.outputs[0]);
    let od = tables.out_shape.clone();
    let st = kiln_ir::shape::strides(xd);
    // per axis: a table of source offsets (-1: extrapolate), or None for a kept axis
    let mut per_axis: Vec<Option<BufId>> = vec![None; xd.len()];
    let mut may_fill = false;
    for (a, taps) in &tables.axes {
        let vals: Vec<i64> = taps
            .iter()
            .map(|t| match t.as_deref() {
                Some([(i, _)]) => (*i * st[*a]) as i64,
                _ => -1,
            })
            .collect();
        may_fill |= vals.contains(&-1);
        per_axis[*a] = Some(i64_table(
            cx,
            format!("{} axis {a} sources", node.name),
            vals,
        )?);
    }
    let fill = scalar_buf(cx, dt, tables.extrapolation)?;
    let ob = cx.out_buf(node.outputs[0]);
    let mut reads = vec![xb, fill];
    reads.extend(per_axis.iter().flatten());
    let k = per_element(&node.name, &od, &reads, &[ob], |kb, o, flat| {
        let mut s = Vec::new();
        let mut src = IndexExpr::c(0);
        let mut conds = Vec::new();
        for (a, oa) in o.iter().enumerate() {
            match per_axis[a] {
                None => src = src.add(oa.clone().mul(st[a] as i64)),
                Some(tb) => {
                    let v = kb.var();
                    s.push(Stmt::Let {
                        var: v,
                        value: Expr::load(tb, oa.clone(), 1),
                    });
                    conds.push(Expr::cmp(CmpOp::Ge, Expr::var(v), Expr::int(DType::I64, 0)));
                    src = src.add(IndexExpr::var(v));
                }
            }
        }
        let copy = Stmt::Store {
            buf: ob,
            index: flat.clone(),
            value: Expr::load(xb, src, 1),
        };
        if may_fill {
            s.push(Stmt::If {
                cond: all(conds),
                then: vec![copy],
                els: vec![Stmt::Store {
                    buf: ob,
                    index: flat,
                    value: Expr::load(fill, IndexExpr::c(0), 1),
                }],
            });
        } else {
            s.push(copy);
        }
        s
    });
    cx.push(k);
    Ok(())
}

fn interpolate(
    cx: &mut Lower,
    node: &Node,
    xd: &[usize],
    xb: BufId,
    tables: &kiln_ir::interp::ResizeTables,
) -> Result<(), String> {
    let dt = cx.dtype(node.outputs[0]);
    let mut shape = xd.to_vec();
    let mut cur = xb;
    let last = tables.axes.len() - 1;
    for (step, (a, taps)) in tables.axes.iter().enumerate() {
        let a = *a;
        let n = taps.iter().flatten().map(Vec::len).max().unwrap_or(1);
        if taps.iter().flatten().any(|t| t.len() != n) {
            return Err(format!("Resize: axis {a} has taps of different lengths"));
        }
        let out_len = taps.len();
        let mut idx = Vec::with_capacity(out_len * n);
        let mut wts = Vec::with_capacity(out_len * n);
        for t in taps {
            match t {
                Some(t) => {
                    idx.extend(t.iter().map(|&(i, _)| i as i64));
                    wts.extend(t.iter().map(|&(_, w)| w));
                }
                None => {
                    idx.extend(std::iter::repeat_n(-1, n));
                    wts.extend(std::iter::repeat_n(0.0, n));
                }
            }
        }
        let ib = i64_table(cx, format!("{} axis {a} taps", node.name), idx)?;
        let wt = Tensor::from_vec(vec![wts.len()], wts).map_err(|e| e.to_string())?;
        let wb = cx.add_buffer(
            Some(format!("{} axis {a} weights", node.name)),
            DType::F64,
            vec![out_len * n],
            BufKind::Const(wt),
        );
        let in_len = shape[a];
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        shape[a] = out_len;
        let next = if step == last {
            cx.out_buf(node.outputs[0])
        } else {
            cx.add_buffer(
                None,
                DType::F64,
                shape.clone(),
                BufKind::Temp { offset: None },
            )
        };
        let cur_dt = if step == 0 { dt } else { DType::F64 };
        let src_buf = cur;
        let extrap = tables.extrapolation;
        let name = format!("{} (axis {a})", node.name);
        let k = per_element(
            &name,
            &[outer, out_len, inner],
            &[src_buf, ib, wb],
            &[next],
            |kb, o, flat| {
                let (acc, t, i) = (kb.var(), kb.var(), kb.var());
                let row = o[1].clone().mul(n as i64);
                let tap = row.clone().add(IndexExpr::var(t));
                let at = o[0]
                    .clone()
                    .mul((in_len * inner) as i64)
                    .add(IndexExpr::var(i).mul(inner as i64))
                    .add(o[2].clone());
                let sval = to_f64(Expr::load(src_buf, at, 1), cur_dt);
                let term = Expr::binary(BinOp::Mul, Expr::load(wb, tap.clone(), 1), sval);
                let sum = vec![
                    Stmt::Local {
                        var: acc,
                        ty: Ty::scalar(DType::F64),
                        init: Expr::float(DType::F64, 0.0),
                    },
                    for_n(
                        t,
                        n,
                        vec![
                            Stmt::Let {
                                var: i,
                                value: Expr::load(ib, tap, 1),
                            },
                            Stmt::Assign {
                                var: acc,
                                value: Expr::binary(BinOp::Add, Expr::var(acc), term),
                            },
                        ],
                    ),
                ];
                let finish = |v: Expr| -> Expr {
                    if step == last {
                        from_f64(v, dt)
                    } else {
                        v
                    }
                };
                let mut then = sum;
                then.push(Stmt::Store {
                    buf: next,
                    index: flat.clone(),
                    value: finish(Expr::var(acc)),
                });
                vec![Stmt::If {
                    cond: Expr::cmp(CmpOp::Lt, Expr::load(ib, row, 1), Expr::int(DType::I64, 0)),
                    then: vec![Stmt::Store {
                        buf: next,
                        index: flat,
                        value: finish(Expr::float(DType::F64, extrap)),
                    }],
                    els: then,
                }]
            },
        );
        cx.push(k);
        cur = next;
    }
    Ok(())
}

/// A loaded element of storage dtype `d` as f64.
fn to_f64(e: Expr, d: DType) -> Expr {
    match d {
        DType::F64 => e,
        DType::F16 | DType::BF16 => Expr::cast(DType::F64, Expr::cast(DType::F32, e)),
        _ => Expr::cast(DType::F64, e),
    }
}

/// An f64 result converted to `d` as the interpreter does.
fn from_f64(v: Expr, d: DType) -> Expr {
    if d.is_float() {
        // the largest finite value of each type
        let max = match d {
            DType::F16 => 65504.0,
            DType::BF16 => 3.389_531_389_251_535_5e38,
            DType::F32 => f32::MAX as f64,
            _ => f64::MAX,
        };
        let c = Expr::binary(
            BinOp::Min,
            Expr::binary(BinOp::Max, v, Expr::float(DType::F64, -max)),
            Expr::float(DType::F64, max),
        );
        match d {
            DType::F64 => c,
            DType::F32 => Expr::cast(DType::F32, c),
            _ => Expr::cast(d, Expr::cast(DType::F32, c)),
        }
    } else {
        Expr::cast(d, Expr::unary(UnOp::Round, v))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, check_with};
    use super::super::Options;

    fn graph(attrs: &str, x: &str, scales: &str, out: &str) -> String {
        format!(
            "graph @t {{\n in %0: {x}\n const %1: f32[4] = {scales}\n %2: {out} = Resize[{attrs}](%0, _, %1) @r\n out %2\n}}"
        )
    }

    #[test]
    fn nearest_every_mode() {
        for nm in ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"] {
            for ct in [
                "half_pixel",
                "asymmetric",
                "align_corners",
                "pytorch_half_pixel",
                "half_pixel_symmetric",
            ] {
                let attrs = format!("mode=\"nearest\", nearest_mode=\"{nm}\", coordinate_transformation_mode=\"{ct}\"");
                check(&graph(
                    &attrs,
                    "f32[1,2,3,4]",
                    "[1.0, 1.0, 2.5, 0.6]",
                    "f32[1,2,7,2]",
                ));
                check(&graph(
                    &attrs,
                    "i64[1,1,4,4]",
                    "[1.0, 1.0, 0.5, 1.75]",
                    "i64[1,1,2,7]",
                ));
            }
        }
    }

    #[test]
    fn linear_and_cubic_with_antialias() {
        for mode in ["linear", "cubic"] {
            for ct in [
                "half_pixel",
                "asymmetric",
                "align_corners",
                "pytorch_half_pixel",
            ] {
                for aa in [0, 1] {
                    let attrs = format!(
                        "mode=\"{mode}\", coordinate_transformation_mode=\"{ct}\", antialias={aa}"
                    );
                    check(&graph(
                        &attrs,
                        "f32[1,2,4,5]",
                        "[1.0, 1.0, 2.0, 0.6]",
                        "f32[1,2,8,3]",
                    ));
                }
            }
            let ex = format!("mode=\"{mode}\", exclude_outside=1, cubic_coeff_a=-0.5");
            check(&graph(
                &ex,
                "f64[1,1,4,4]",
                "[1.0, 1.0, 0.75, 1.5]",
                "f64[1,1,3,6]",
            ));
            check(&graph(
                &format!("mode=\"{mode}\""),
                "u8[1,1,3,3]",
                "[1.0, 1.0, 2.0, 2.0]",
                "u8[1,1,6,6]",
            ));
            check_with(
                &graph(
                    &format!("mode=\"{mode}\""),
                    "f16[1,1,3,3]",
                    "[1.0, 1.0, 2.0, 2.0]",
                    "f16[1,1,6,6]",
                ),
                &Options::default(),
                1e-3,
            );
        }
    }

    #[test]
    fn crop_and_resize_extrapolates_and_sizes_with_axes() {
        for mode in ["nearest", "linear"] {
            check(&format!(
                "graph @t {{\n in %0: f32[1,1,4,4]\n const %1: f32[4] = [-0.2, 0.6, 0.6, 1.3]\n const %2: i64[2] = [3, 3]\n %3: f32[1,1,3,3] = Resize[mode=\"{mode}\", axes=[2, 3], coordinate_transformation_mode=\"tf_crop_and_resize\", extrapolation_value=10.0](%0, %1, _, %2) @r\n out %3\n}}"
            ));
            check(&format!(
                "graph @t {{\n in %0: f32[1,1,4,4]\n const %1: i64[2] = [7, 3]\n %2: f32[1,1,3,7] = Resize[mode=\"{mode}\", axes=[3, 2]](%0, _, _, %1) @r\n out %2\n}}"
            ));
        }
    }
}
