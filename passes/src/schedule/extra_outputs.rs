//! Schedules for the optional second outputs that the main schedules leave
//! out: Dropout's `mask` and MaxPool's `Indices`.
//!
//! Requires: static shapes. Establishes: one kernel per node.
//!
//! - Dropout with its mask (inference semantics, as the reference
//!   interpreter): `output = data`, `mask` all true, grid over chunks of the
//!   flat tensor. A constant `training_mode` that is true with a constant
//!   `ratio` above 0 (random dropout) is rejected; a `training_mode` given at
//!   run time is taken as inference, like the single-output elementwise
//!   schedule does (the interpreter rejects a true one with a positive ratio).
//! - MaxPool with Indices (float inputs): grid over the `N·C` planes, loops
//!   over output positions and kernel taps in row-major order, taps outside
//!   the input skipped; the running best is replaced when there is none yet,
//!   when the tap is greater, or when the best is NaN (the interpreter's
//!   rule). `Indices` is the flat index into X (`storage_order = 1`: the
//!   spatial part column-major); an empty window gives −∞ and −1.

use super::*;
use kiln_ir::interp::pool_axes;
use kiln_ir::kernel::{BinOp, CmpOp, Ty, UnOp};
use kiln_ir::Attrs;

/// Whether this file schedules the node.
pub fn claims(op: Op, n_outputs: usize) -> bool {
    matches!(op, Op::Dropout | Op::MaxPool) && n_outputs == 2
}

fn scalar_const(t: Option<&Tensor>) -> Option<f64> {
    t.filter(|t| t.numel() == 1).map(|t| t.to_f64_vec()[0])
}

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), Reason> {
    let no = |m: String| Err(Reason(format!("{op}: {m}")));
    let Some(x) = inputs.first().copied().flatten() else {
        return no("missing input".into());
    };
    match op {
        Op::Dropout => {
            if outputs.get(1).map(|t| t.dtype) != Some(DType::Bool) {
                return no("the mask must be bool".into());
            }
            Ok(())
        }
        Op::MaxPool => {
            if !x.dtype.is_float() {
                return no(format!("Indices output for {} input (float only)", x.dtype));
            }
            let dims = x.shape.fixed().unwrap_or_default();
            if let Err(e) = pool_axes(op, attrs, &dims) {
                return no(e.to_string());
            }
            match attrs.int_or("storage_order", 0) {
                Ok(0 | 1) => Ok(()),
                _ => no("storage_order must be 0 or 1".into()),
            }
        }
        o => no(format!("{o} is not scheduled here")),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    match node.op {
        Op::Dropout => dropout(cx, node),
        Op::MaxPool => max_pool(cx, node),
        o => Err(format!("{o} is not scheduled here")),
    }
}

fn dropout(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let konst = |i: usize| {
        node.inputs
            .get(i)
            .copied()
            .flatten()
            .map(|v| scalar_const(cx.const_of(v)))
    };
    // (None: omitted; Some(None): a run-time value)
    if let Some(Some(t)) = konst(2) {
        let ratio = match konst(1) {
            None => Some(0.5),
            Some(r) => r,
        };
        if t != 0.0 && ratio != Some(0.0) {
            return Err(format!(
                "training mode with ratio {ratio:?} is random (only inference mode or ratio 0)"
            ));
        }
    }
    let xv = node.inputs[0].ok_or("missing input 0")?;
    let total: usize = cx.dims(xv).iter().product();
    let xb = cx.buf(xv);
    let yb = cx.out_buf(node.outputs[0]);
    let mb = cx.out_buf(node.outputs[1]);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.write(yb);
    kb.write(mb);
    let chunk = cx.opts.chunk.max(1);
    let g = kb.axis(total.div_ceil(chunk).max(1));
    let j = kb.var();
    let start = IndexExpr::var(g).mul(chunk as i64);
    let end = start
        .clone()
        .add(IndexExpr::c(chunk as i64))
        .min(IndexExpr::c(total as i64));
    let body = vec![for_(
        j,
        start,
        end,
        1,
        vec![
            Stmt::Store {
                buf: yb,
                index: IndexExpr::var(j),
                value: Expr::load(xb, IndexExpr::var(j), 1),
            },
            Stmt::Store {
                buf: mb,
                index: IndexExpr::var(j),
                value: Expr::int(DType::Bool, 1),
            },
        ],
    )];
    cx.push(kb.finish(if total > 0 { body } else { Vec::new() }));
    Ok(())
}

fn max_pool(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let xv = node.inputs[0].ok_or("missing input 0")?;
    let xs = cx.dims(xv);
    let dt = cx.dtype(xv);
    let ct = if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let axes = pool_axes(node.op, &node.attrs, &xs).map_err(|e| e.to_string())?;
    let col_major = node
        .attrs
        .int_or("storage_order", 0)
        .map_err(|e| e.to_string())?
        == 1;
    let in_dims: Vec<usize> = axes.iter().map(|a| a.input).collect();
    let out_dims: Vec<usize> = axes.iter().map(|a| a.output).collect();
    let k_dims: Vec<usize> = axes.iter().map(|a| a.kernel).collect();
    let in_size: usize = in_dims.iter().product();
    let out_size: usize = out_dims.iter().product();
    let planes = xs[0] * xs[1];
    let in_st = kiln_ir::shape::strides(&in_dims);
    let col_st: Vec<usize> = (0..axes.len())
        .map(|d| in_dims[..d].iter().product())
        .collect();
    let xb = cx.buf(xv);
    let yb = cx.out_buf(node.outputs[0]);
    let ib = cx.out_buf(node.outputs[1]);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.write(yb);
    kb.write(ib);
    let g = kb.axis(planes);
    let o: Vec<Var> = axes.iter().map(|_| kb.var()).collect();
    let t: Vec<Var> = axes.iter().map(|_| kb.var()).collect();
    let (best, bi, v) = (kb.var(), kb.var(), kb.var());
    let mut cond: Option<Expr> = None;
    let mut xoff = IndexExpr::c(0);
    let mut spatial = IndexExpr::c(0);
    for (d, a) in axes.iter().enumerate() {
        let pos = IndexExpr::var(o[d])
            .mul(a.stride as i64)
            .add(IndexExpr::var(t[d]).mul(a.dilation as i64))
            .add(IndexExpr::c(-a.pad_begin));
        let inside = Expr::binary(
            BinOp::And,
            Expr::cmp(
                CmpOp::Ge,
                Expr::Index(pos.clone()),
                Expr::int(DType::I64, 0),
            ),
            Expr::cmp(
                CmpOp::Lt,
                Expr::Index(pos.clone()),
                Expr::int(DType::I64, a.input as i64),
            ),
        );
        cond = Some(match cond {
            Some(c) => Expr::binary(BinOp::And, c, inside),
            None => inside,
        });
        let clamped = pos
            .max(IndexExpr::c(0))
            .min(IndexExpr::c(a.input as i64 - 1));
        xoff = xoff.add(clamped.clone().mul(in_st[d] as i64));
        spatial = spatial.add(clamped.mul(if col_major { col_st[d] } else { in_st[d] } as i64));
    }
    let plane = IndexExpr::var(g).mul(in_size as i64);
    let x = Expr::load(xb, plane.clone().add(xoff), 1);
    let x = if dt == ct { x } else { Expr::cast(ct, x) };
    let none = Expr::cmp(CmpOp::Lt, Expr::var(bi), Expr::int(DType::I64, 0));
    let take = Expr::binary(
        BinOp::Or,
        Expr::binary(
            BinOp::Or,
            none.clone(),
            Expr::cmp(CmpOp::Gt, Expr::var(v), Expr::var(best)),
        ),
        Expr::unary(UnOp::IsNan, Expr::var(best)),
    );
    let tap = vec![Stmt::If {
        cond: cond.unwrap_or(Expr::int(DType::Bool, 1)),
        then: vec![
            Stmt::Let { var: v, value: x },
            Stmt::If {
                cond: take,
                then: vec![
                    Stmt::Assign {
                        var: best,
                        value: Expr::var(v),
                    },
                    Stmt::Assign {
                        var: bi,
                        value: Expr::Index(plane.add(spatial)),
                    },
                ],
                els: vec![],
            },
        ],
        els: vec![],
    }];
    let st = kiln_ir::shape::strides(&out_dims);
    let oidx = o
        .iter()
        .zip(&st)
        .fold(IndexExpr::var(g).mul(out_size as i64), |e, (&v, &s)| {
            e.add(IndexExpr::var(v).mul(s as i64))
        });
    let y = Expr::select(
        none.clone(),
        Expr::float(ct, f64::NEG_INFINITY),
        Expr::var(best),
    );
    let mut per_pos = vec![
        Stmt::Local {
            var: best,
            ty: Ty::scalar(ct),
            init: Expr::float(ct, f64::NEG_INFINITY),
        },
        Stmt::Local {
            var: bi,
            ty: Ty::INDEX,
            init: Expr::int(DType::I64, -1),
        },
    ];
    per_pos.extend(nest(&t, &k_dims, tap));
    per_pos.push(Stmt::Store {
        buf: yb,
        index: oidx.clone(),
        value: if dt == ct { y } else { Expr::cast(dt, y) },
    });
    per_pos.push(Stmt::Store {
        buf: ib,
        index: oidx,
        value: Expr::var(bi),
    });
    let body = if planes * out_size > 0 {
        nest(&o, &out_dims, per_pos)
    } else {
        Vec::new()
    };
    cx.push(kb.finish(body));
    Ok(())
}

/// Nested loops `for v_d in 0..dims[d]` around `body`, outermost first.
fn nest(vars: &[Var], dims: &[usize], body: Vec<Stmt>) -> Vec<Stmt> {
    let mut s = body;
    for (&v, &n) in vars.iter().zip(dims).rev() {
        s = vec![for_n(v, n, s)];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use super::super::{lower, Options};
    use crate::testutil::parse;

    #[test]
    fn dropout_mask_is_all_true() {
        check("graph @t {\n in %0: f32[3,5]\n %1: f32[3,5], %2: bool[3,5] = Dropout(%0) @d\n out %1, %2\n}");
        check("graph @t {\n in %0: f32[7]\n const %1: f32[] = 0.0\n const %2: bool[] = true\n %3: f32[7], %4: bool[7] = Dropout(%0, %1, %2) @d\n out %3, %4\n}");
        let g = parse("graph @t {\n in %0: f32[7]\n const %1: f32[] = 0.5\n const %2: bool[] = true\n %3: f32[7], %4: bool[7] = Dropout(%0, %1, %2) @my_drop\n out %3, %4\n}");
        let e = lower(&g, &Options::default()).unwrap_err().to_string();
        assert!(e.contains("my_drop") && e.contains("random"), "{e}");
    }

    #[test]
    fn max_pool_with_indices() {
        for (x, attrs, o) in [
            ("f32[1,2,5,5]", "[kernel_shape=[2,2]]", "1,2,4,4"),
            (
                "f32[1,1,5,5]",
                "[kernel_shape=[3,3], pads=[1,1,1,1], strides=[2,2]]",
                "1,1,3,3",
            ),
            (
                "f32[1,1,5,5]",
                "[kernel_shape=[3,3], pads=[1,1,1,1], storage_order=1]",
                "1,1,5,5",
            ),
            (
                "f32[2,3,7]",
                "[kernel_shape=[3], dilations=[2], ceil_mode=1, strides=[2]]",
                "2,3,2",
            ),
        ] {
            check(&format!(
                "graph @t {{\n in %0: {x}\n %1: f32[{o}], %2: i64[{o}] = MaxPool{attrs}(%0) @p\n out %1, %2\n}}"
            ));
        }
    }
}
