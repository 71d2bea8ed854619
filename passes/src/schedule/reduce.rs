//! The reduction schedule: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/
//! LogSumExp/SumSquare and ArgMax/ArgMin.
//!
//! Requires: static shapes; constant `axes` (input 1). Establishes: one
//! kernel; the grid runs over output elements, and each grid point walks the
//! reduced axes in index order with a scalar accumulator (f32 for
//! f16/bf16/f32, f64 for f64, the integer type for integers), so the
//! summation order is the reference interpreter's. Empty reductions give
//! ONNX's identities. Integer ReduceL2, ReduceLogSum and ReduceLogSumExp are
//! not scheduled (a [`Reason`]); integer ReduceMean sums in f64 and truncates.

use super::*;
use kiln_ir::kernel::{BinOp, CmpOp, Ty, UnOp};
use kiln_ir::Attrs;

pub(super) fn supports(
    op: Op,
    _attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    _outputs: &[&TensorType],
) -> Result<(), Reason> {
    let d = inputs
        .first()
        .copied()
        .flatten()
        .map(|t| t.dtype)
        .ok_or(Reason(format!("{op} without data")))?;
    match op {
        Op::CumSum => Err(Reason("CumSum has no kernel schedule".into())),
        Op::ReduceL2 | Op::ReduceLogSum | Op::ReduceLogSumExp if !d.is_float() => Err(Reason(
            format!("{op} of {d} (integer) has no kernel schedule"),
        )),
        _ if d == DType::Bool => Err(Reason(format!("{op} of bool"))),
        _ => Ok(()),
    }
}

/// The reduced axes of a Reduce* node (or ArgMax/ArgMin's one axis).
fn axes(cx: &Lower, node: &Node, rank: usize) -> Result<Vec<usize>, String> {
    let norm = |a: i64| {
        kiln_ir::shape::normalize_axis(a, rank)
            .ok_or_else(|| format!("axis {a} out of range for rank {rank}"))
    };
    if matches!(node.op, Op::ArgMax | Op::ArgMin) {
        return Ok(vec![norm(
            node.attrs.int_or("axis", 0).map_err(|e| e.to_string())?,
        )?]);
    }
    let given: Vec<i64> = match node.inputs.get(1).copied().flatten() {
        Some(v) => cx
            .const_of(v)
            .ok_or("the `axes` input must be a constant")?
            .to_i64_vec()
            .map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let noop = node
        .attrs
        .int_or("noop_with_empty_axes", 0)
        .map_err(|e| e.to_string())?
        != 0;
    if given.is_empty() {
        return Ok(if noop {
            Vec::new()
        } else {
            (0..rank).collect()
        });
    }
    let mut v: Vec<usize> = given.into_iter().map(norm).collect::<Result<_, _>>()?;
    v.sort();
    v.dedup();
    Ok(v)
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = node.inputs[0].ok_or("missing data input")?;
    let dims = cx.dims(x);
    let dt = cx.dtype(x);
    let ct = compute_dtype(dt);
    let red = axes(cx, node, dims.len())?;
    let out_v = node.outputs[0];
    let out_dt = cx.dtype(out_v);
    let xb = cx.buf(x);
    let ob = cx.out_buf(out_v);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.write(ob);
    let kept: Vec<usize> = (0..dims.len()).filter(|d| !red.contains(d)).collect();
    let kept_dims: Vec<usize> = kept.iter().map(|&d| dims[d]).collect();
    let n_out: usize = kept_dims.iter().product();
    let n_red: usize = red.iter().map(|&d| dims[d]).product();
    let g = kb.axis(n_out);
    let kidx = unflatten(IndexExpr::var(g), &kept_dims);
    let st = kiln_ir::shape::strides(&dims);
    let mut base = IndexExpr::c(0);
    for (i, &d) in kept.iter().enumerate() {
        base = base.add(kidx[i].clone().mul(st[d] as i64));
    }
    // The loop nest over reduced axes: returns (loops wrapper, element index).
    let rvars: Vec<Var> = red.iter().map(|_| kb.var()).collect();
    let mut idx = base.clone();
    for (i, &d) in red.iter().enumerate() {
        idx = idx.add(IndexExpr::var(rvars[i]).mul(st[d] as i64));
    }
    let nest = |inner: Vec<Stmt>, vars: &[Var]| -> Vec<Stmt> {
        let mut s = inner;
        for (i, &d) in red.iter().enumerate().rev() {
            s = vec![for_n(vars[i], dims[d], s)];
        }
        s
    };
    let load = load_c(xb, dt, idx.clone(), 1);
    let k = |v: f64| -> Expr {
        if ct.is_float() {
            Expr::float(ct, v)
        } else {
            Expr::int(ct, v as i64)
        }
    };
    let acc = kb.var();
    let mut body = Vec::new();
    let out_idx = IndexExpr::var(g);
    let op = node.op;
    if matches!(op, Op::ArgMax | Op::ArgMin) {
        let last = node
            .attrs
            .int_or("select_last_index", 0)
            .map_err(|e| e.to_string())?
            != 0;
        if n_red == 0 {
            return Err("ArgMax/ArgMin over an empty axis".into());
        }
        let best = kb.var();
        let bi = kb.var();
        let xv = kb.var();
        let first = IndexExpr::c(0).add(base.clone());
        body.push(Stmt::Local {
            var: best,
            ty: Ty::scalar(ct),
            init: load_c(xb, dt, first, 1),
        });
        body.push(Stmt::Local {
            var: bi,
            ty: Ty::INDEX,
            init: Expr::int(DType::I64, 0),
        });
        let cmp = if op == Op::ArgMax {
            CmpOp::Gt
        } else {
            CmpOp::Lt
        };
        let cmp_last = if op == Op::ArgMax {
            CmpOp::Ge
        } else {
            CmpOp::Le
        };
        let better = Expr::cmp(
            if last { cmp_last } else { cmp },
            Expr::var(xv),
            Expr::var(best),
        );
        let cond = if ct.is_float() {
            let bn = Expr::unary(UnOp::IsNan, Expr::var(best));
            let xn = Expr::unary(UnOp::IsNan, Expr::var(xv));
            let when_nan = if last {
                xn.clone()
            } else {
                Expr::int(DType::Bool, 0)
            };
            Expr::select(bn, when_nan, Expr::binary(BinOp::Or, xn, better))
        } else {
            better
        };
        let r = rvars[0];
        let inner = vec![
            Stmt::Let {
                var: xv,
                value: load,
            },
            Stmt::If {
                cond,
                then: vec![
                    Stmt::Assign {
                        var: best,
                        value: Expr::var(xv),
                    },
                    Stmt::Assign {
                        var: bi,
                        value: Expr::Index(IndexExpr::var(r)),
                    },
                ],
                els: vec![],
            },
        ];
        body.push(for_n(r, dims[red[0]], inner));
        body.push(Stmt::Store {
            buf: ob,
            index: out_idx,
            value: Expr::cast(out_dt, Expr::var(bi)),
        });
        cx.push(kb.finish(body));
        return Ok(());
    }
    // Integer means accumulate in f64.
    let at = if op == Op::ReduceMean && !ct.is_float() {
        DType::F64
    } else {
        ct
    };
    let xval = if at != ct {
        Expr::cast(at, load.clone())
    } else {
        load.clone()
    };
    let ka = |v: f64| {
        if at.is_float() {
            Expr::float(at, v)
        } else {
            Expr::int(at, v as i64)
        }
    };
    let (init, step): (Expr, Expr) = match op {
        Op::ReduceSum | Op::ReduceMean | Op::ReduceLogSum => {
            (ka(0.0), Expr::binary(BinOp::Add, Expr::var(acc), xval))
        }
        Op::ReduceL1 => (
            ka(0.0),
            Expr::binary(BinOp::Add, Expr::var(acc), Expr::unary(UnOp::Abs, xval)),
        ),
        Op::ReduceL2 | Op::ReduceSumSquare => (
            ka(0.0),
            Expr::binary(
                BinOp::Add,
                Expr::var(acc),
                Expr::binary(BinOp::Mul, xval.clone(), xval),
            ),
        ),
        Op::ReduceProd => (ka(1.0), Expr::binary(BinOp::Mul, Expr::var(acc), xval)),
        Op::ReduceMax | Op::ReduceMin => {
            let init = if ct.is_float() {
                Expr::float(
                    ct,
                    if op == Op::ReduceMax {
                        f64::NEG_INFINITY
                    } else {
                        f64::INFINITY
                    },
                )
            } else {
                extreme_int(ct, op == Op::ReduceMax)
            };
            let b = if op == Op::ReduceMax {
                BinOp::Max
            } else {
                BinOp::Min
            };
            (init, Expr::binary(b, Expr::var(acc), xval))
        }
        Op::ReduceLogSumExp => {
            // pass 1: the maximum; pass 2: sum of exp(x - m)
            let m = kb.var();
            body.push(Stmt::Local {
                var: m,
                ty: Ty::scalar(ct),
                init: Expr::float(ct, f64::NEG_INFINITY),
            });
            let v2: Vec<Var> = red.iter().map(|_| kb.var()).collect();
            body.extend(nest(
                vec![Stmt::Assign {
                    var: m,
                    value: Expr::binary(BinOp::Max, Expr::var(m), load.clone()),
                }],
                &rvars,
            ));
            let mut idx2 = base.clone();
            for (i, &d) in red.iter().enumerate() {
                idx2 = idx2.add(IndexExpr::var(v2[i]).mul(st[d] as i64));
            }
            let l2 = load_c(xb, dt, idx2, 1);
            body.push(Stmt::Local {
                var: acc,
                ty: Ty::scalar(ct),
                init: k(0.0),
            });
            body.extend(nest(
                vec![Stmt::Assign {
                    var: acc,
                    value: Expr::binary(
                        BinOp::Add,
                        Expr::var(acc),
                        Expr::unary(UnOp::Exp, Expr::binary(BinOp::Sub, l2, Expr::var(m))),
                    ),
                }],
                &v2,
            ));
            // m + log(sum); an infinite or NaN m is the result
            let finite = Expr::binary(
                BinOp::And,
                Expr::unary(UnOp::Not, Expr::unary(UnOp::IsNan, Expr::var(m))),
                Expr::unary(UnOp::Not, Expr::unary(UnOp::IsInf, Expr::var(m))),
            );
            let r = Expr::select(
                finite,
                Expr::binary(
                    BinOp::Add,
                    Expr::var(m),
                    Expr::unary(UnOp::Log, Expr::var(acc)),
                ),
                Expr::var(m),
            );
            body.push(Stmt::Store {
                buf: ob,
                index: out_idx,
                value: to_storage(r, out_dt),
            });
            cx.push(kb.finish(body));
            return Ok(());
        }
        other => return Err(format!("{other} has no reduction schedule")),
    };
    body.push(Stmt::Local {
        var: acc,
        ty: Ty::scalar(at),
        init,
    });
    body.extend(nest(
        vec![Stmt::Assign {
            var: acc,
            value: step,
        }],
        &rvars,
    ));
    let r = match op {
        Op::ReduceMean => {
            let m = Expr::binary(BinOp::Div, Expr::var(acc), Expr::float(at, n_red as f64));
            if at != ct {
                Expr::cast(ct, Expr::unary(UnOp::Trunc, m))
            } else {
                m
            }
        }
        Op::ReduceL2 => Expr::unary(UnOp::Sqrt, Expr::var(acc)),
        Op::ReduceLogSum => Expr::unary(UnOp::Log, Expr::var(acc)),
        _ => Expr::var(acc),
    };
    body.push(Stmt::Store {
        buf: ob,
        index: out_idx,
        value: to_storage(r, out_dt),
    });
    cx.push(kb.finish(body));
    Ok(())
}

fn extreme_int(d: DType, want_min: bool) -> Expr {
    let (lo, hi): (i64, i64) = match d {
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        DType::I16 => (i16::MIN as i64, i16::MAX as i64),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::I64 => (i64::MIN, i64::MAX),
        DType::U8 => (0, u8::MAX as i64),
        DType::U16 => (0, u16::MAX as i64),
        DType::U32 => (0, u32::MAX as i64),
        _ => (0, -1), // u64::MAX as a bit pattern
    };
    Expr::int(d, if want_min { lo } else { hi })
}
