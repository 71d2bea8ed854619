//! The pooling schedule: MaxPool (its first output), AveragePool,
//! GlobalAveragePool and GlobalMaxPool.
//!
//! Requires: static shapes; a float input `[N, C, spatial...]`; window
//! attributes resolved by the interpreter's geometry
//! ([`kiln_ir::interp::pool_axes`]: `kernel_shape`, `strides`, `pads`,
//! `dilations`, `auto_pad`, `ceil_mode`). Establishes: one kernel per node,
//! its grid over the `N·C` planes, a scalar loop over output positions and,
//! inside, over the window's taps in row-major order, each tap either inside
//! the input (read through a clamped index) or skipped, as the reference
//! interpreter does:
//!
//! - MaxPool keeps the first largest tap (a NaN is replaced by any later tap;
//!   NaN only if every tap is NaN; −∞ for a window with no tap inside);
//! - AveragePool divides the sum by the number of taps inside the input, or
//!   with `count_include_pad` by the number inside the explicitly padded input
//!   (never the extra room `ceil_mode` adds), counted per window at run time;
//! - the global pools sweep each plane in order (a mean is the sum divided by
//!   the plane size).
//!
//! f16/bf16 and f32 compute in f32 and round once, f64 in f64.
//! Not scheduled here (a [`Reason`]): MaxPool's `Indices` output (that is
//! [`super::extra_outputs`]), MaxPool of 8-bit integers, LpPool.

use super::*;
use kiln_ir::interp::{pool_axes, WindowAxis};
use kiln_ir::kernel::{BinOp, CmpOp, Ty, UnOp};
use kiln_ir::Attrs;

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), Reason> {
    let no = |m: String| Err(Reason(m));
    if !matches!(
        op,
        Op::MaxPool | Op::AveragePool | Op::GlobalAveragePool | Op::GlobalMaxPool
    ) {
        return no(format!("{op} has no kernel schedule"));
    }
    if outputs.len() != 1 {
        return no(format!(
            "{op} with {} outputs (MaxPool's Indices output is not scheduled here)",
            outputs.len()
        ));
    }
    let x = match inputs.first().copied().flatten() {
        Some(x) => x,
        None => return no(format!("{op} without an input")),
    };
    if !matches!(x.dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
        return no(format!("{op} of {} (float inputs only)", x.dtype));
    }
    let dims = x.shape.fixed().unwrap_or_default();
    if matches!(op, Op::MaxPool | Op::AveragePool) {
        pool_axes(op, attrs, &dims).map_err(|e| Reason(e.to_string()))?;
    } else if dims.len() < 2 {
        return no(format!(
            "{op} needs an input of shape [N, C, spatial...], found {dims:?}"
        ));
    }
    Ok(())
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let xv = node.inputs[0].ok_or("missing input 0")?;
    let dims = cx.dims(xv);
    let dt = cx.dtype(xv);
    let ct = compute_dtype(dt);
    let out_v = node.outputs[0];
    let xb = cx.buf(xv);
    let ob = cx.out_buf(out_v);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.write(ob);
    if dims.len() < 2 {
        return Err(format!("input {dims:?} has no channel axis"));
    }
    let planes = dims[0] * dims[1];
    let max = matches!(node.op, Op::MaxPool | Op::GlobalMaxPool);
    let f = |v: f64| Expr::float(ct, v);
    let gp = kb.axis(planes);
    // Locals: the running sum or maximum, whether a tap was seen, the count.
    let (best, seen, count) = (kb.var(), kb.var(), kb.var());
    let mut init = vec![Stmt::Local {
        var: best,
        ty: Ty::scalar(ct),
        init: f(if max { f64::NEG_INFINITY } else { 0.0 }),
    }];
    if max {
        init.push(Stmt::Local {
            var: seen,
            ty: Ty::BOOL,
            init: Expr::int(DType::Bool, 0),
        });
    }
    // One tap: `inside` (None: always) and the value.
    let step = |inside: Option<Expr>, v: Expr| -> Vec<Stmt> {
        if max {
            // take v if inside && (!seen || v > best || best is NaN)
            let take = Expr::binary(
                BinOp::Or,
                Expr::unary(UnOp::Not, Expr::var(seen)),
                Expr::binary(
                    BinOp::Or,
                    Expr::cmp(CmpOp::Gt, v.clone(), Expr::var(best)),
                    Expr::unary(UnOp::IsNan, Expr::var(best)),
                ),
            );
            let (take, now_seen) = match inside {
                Some(c) => (
                    Expr::binary(BinOp::And, c.clone(), take),
                    Expr::binary(BinOp::Or, Expr::var(seen), c),
                ),
                None => (take, Expr::int(DType::Bool, 1)),
            };
            vec![
                Stmt::Assign {
                    var: best,
                    value: Expr::select(take, v, Expr::var(best)),
                },
                Stmt::Assign {
                    var: seen,
                    value: now_seen,
                },
            ]
        } else {
            let v = match inside {
                Some(c) => Expr::select(c, v, f(0.0)),
                None => v,
            };
            vec![Stmt::Assign {
                var: best,
                value: Expr::binary(BinOp::Add, Expr::var(best), v),
            }]
        }
    };
    let ld = |i: IndexExpr| load_c(xb, dt, i, 1);
    let mut body = Vec::new();
    if matches!(node.op, Op::GlobalAveragePool | Op::GlobalMaxPool) {
        let size: usize = dims[2..].iter().product();
        let j = kb.var();
        body.extend(init);
        let at = IndexExpr::var(gp).mul(size as i64).add(IndexExpr::var(j));
        body.push(for_n(j, size, step(None, ld(at))));
        let y = if max {
            Expr::var(best)
        } else {
            Expr::binary(BinOp::Div, Expr::var(best), f(size as f64))
        };
        body.push(Stmt::Store {
            buf: ob,
            index: IndexExpr::var(gp),
            value: to_storage(y, dt),
        });
    } else {
        let axes = pool_axes(node.op, &node.attrs, &dims).map_err(|e| e.to_string())?;
        let include_pad = node.op == Op::AveragePool
            && node
                .attrs
                .int_or("count_include_pad", 0)
                .map_err(|e| e.to_string())?
                != 0;
        let r = axes.len();
        let in_sp: Vec<usize> = axes.iter().map(|a| a.input).collect();
        let out_sp: Vec<usize> = axes.iter().map(|a| a.output).collect();
        let k_sp: Vec<usize> = axes.iter().map(|a| a.kernel).collect();
        let (in_size, out_size) = (
            in_sp.iter().product::<usize>(),
            out_sp.iter().product::<usize>(),
        );
        let o: Vec<Var> = (0..r).map(|_| kb.var()).collect();
        let t: Vec<Var> = (0..r).map(|_| kb.var()).collect();
        let (inside, idx, padded) = window(&axes, &o, &t);
        let at = IndexExpr::var(gp).mul(in_size as i64).add(idx);
        let mut tap = step(inside.clone(), ld(at));
        if !max {
            // the divisor: taps inside the input, or inside the padded input
            let c = if include_pad { padded } else { inside };
            let one = match c {
                Some(c) => Expr::select(c, f(1.0), f(0.0)),
                None => f(1.0),
            };
            tap.push(Stmt::Assign {
                var: count,
                value: Expr::binary(BinOp::Add, Expr::var(count), one),
            });
            init.push(Stmt::Local {
                var: count,
                ty: Ty::scalar(ct),
                init: f(0.0),
            });
        }
        let mut inner = init;
        inner.extend(nest(&t, &k_sp, tap));
        let y = if max {
            Expr::var(best)
        } else {
            Expr::binary(BinOp::Div, Expr::var(best), Expr::var(count))
        };
        let oi: Vec<IndexExpr> = o.iter().map(|&v| IndexExpr::var(v)).collect();
        let st = kiln_ir::shape::strides(&out_sp);
        let o_flat = oi
            .iter()
            .zip(&st)
            .fold(IndexExpr::c(0), |e, (i, &s)| e.add(i.clone().mul(s as i64)));
        inner.push(Stmt::Store {
            buf: ob,
            index: IndexExpr::var(gp).mul(out_size as i64).add(o_flat),
            value: to_storage(y, dt),
        });
        body.extend(nest(&o, &out_sp, inner));
    }
    cx.push(kb.finish(body));
    Ok(())
}

/// For output position `o` and tap `t`: whether the tap is inside the input
/// (None: always), the flat input index (clamped into the input), and
/// whether it is inside the explicitly padded input (None: always).
fn window(axes: &[WindowAxis], o: &[Var], t: &[Var]) -> (Option<Expr>, IndexExpr, Option<Expr>) {
    let in_sp: Vec<usize> = axes.iter().map(|a| a.input).collect();
    let st = kiln_ir::shape::strides(&in_sp);
    let (mut inside, mut padded): (Option<Expr>, Option<Expr>) = (None, None);
    let and = |a: Option<Expr>, b: Expr| match a {
        Some(a) => Some(Expr::binary(BinOp::And, a, b)),
        None => Some(b),
    };
    let mut idx = IndexExpr::c(0);
    for (d, a) in axes.iter().enumerate() {
        let pos = IndexExpr::var(o[d])
            .mul(a.stride as i64)
            .add(IndexExpr::var(t[d]).mul(a.dilation as i64))
            .add(IndexExpr::c(-a.pad_begin));
        let max_pos =
            ((a.output.max(1) - 1) * a.stride + (a.kernel - 1) * a.dilation) as i64 - a.pad_begin;
        let mut clamped = pos.clone();
        let ge = |lim: i64| {
            Expr::cmp(
                CmpOp::Ge,
                Expr::Index(pos.clone()),
                Expr::int(DType::I64, lim),
            )
        };
        let lt = |lim: i64| {
            Expr::cmp(
                CmpOp::Lt,
                Expr::Index(pos.clone()),
                Expr::int(DType::I64, lim),
            )
        };
        if a.pad_begin > 0 {
            clamped = clamped.max(IndexExpr::c(0));
            inside = and(inside, ge(0));
        }
        if max_pos >= a.input as i64 {
            clamped = clamped.min(IndexExpr::c(a.input as i64 - 1));
            inside = and(inside, lt(a.input as i64));
        }
        // the padded input is -pad_begin .. input + pad_end
        // (pos >= -pad_begin always holds)
        if max_pos >= a.input as i64 + a.pad_end {
            padded = and(padded, lt(a.input as i64 + a.pad_end));
        }
        idx = idx.add(clamped.mul(st[d] as i64));
    }
    (inside, idx, padded)
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
    use super::super::conv::tests::typed;
    use super::super::testing::check_with;
    use super::*;

    fn pool(op: &str, dt: &str, x: &str, attrs: &str, rank: usize) -> Program {
        let q = vec!["?"; rank].join(",");
        let src = typed(&format!(
            "graph @t {{\n in %0 \"x\": {dt}[{x}]\n %1: {dt}[{q}] = {op}{attrs}(%0) @pool\n out %1\n}}"
        ));
        let tol = if dt == "f32" || dt == "f64" {
            1e-6
        } else {
            1e-2
        };
        check_with(&src, &Options::default(), tol)
    }

    #[test]
    fn max_and_average_pools() {
        for op in ["MaxPool", "AveragePool"] {
            for attrs in [
                "[kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]]",
                "[kernel_shape=[2,2]]",
                "[kernel_shape=[3,2], strides=[2,1], pads=[0,1,2,0]]",
                "[kernel_shape=[3,3], strides=[2,2], ceil_mode=1]",
                "[kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1], ceil_mode=1]",
                "[kernel_shape=[3,3], auto_pad=\"SAME_UPPER\", strides=[2,2]]",
                "[kernel_shape=[4,4], auto_pad=\"SAME_LOWER\", strides=[3,3]]",
                "[kernel_shape=[3,3], auto_pad=\"VALID\"]",
            ] {
                pool(op, "f32", "2,3,9,10", attrs, 4);
            }
        }
        pool(
            "MaxPool",
            "f32",
            "1,2,11,11",
            "[kernel_shape=[3,3], dilations=[2,2], pads=[1,1,1,1]]",
            4,
        );
        for attrs in [
            "[kernel_shape=[3,3], pads=[1,1,1,1], count_include_pad=1]",
            "[kernel_shape=[3,3], strides=[2,2], pads=[1,2,1,0], count_include_pad=1, ceil_mode=1]",
            "[kernel_shape=[2,2], auto_pad=\"SAME_UPPER\", count_include_pad=1]",
        ] {
            pool("AveragePool", "f32", "2,3,8,9", attrs, 4);
        }
    }

    #[test]
    fn pools_1d_3d_and_other_dtypes() {
        pool(
            "MaxPool",
            "f32",
            "2,3,17",
            "[kernel_shape=[3], strides=[2], pads=[1,1]]",
            3,
        );
        pool(
            "AveragePool",
            "f32",
            "1,2,5,6,7",
            "[kernel_shape=[2,3,2], pads=[1,1,0,0,1,1]]",
            5,
        );
        for dt in ["f16", "bf16", "f64"] {
            pool(
                "MaxPool",
                dt,
                "1,3,7,7",
                "[kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]]",
                4,
            );
            pool(
                "AveragePool",
                dt,
                "1,3,7,7",
                "[kernel_shape=[3,3], pads=[1,1,1,1]]",
                4,
            );
            pool("GlobalAveragePool", dt, "2,3,5,5", "", 4);
        }
    }

    #[test]
    fn global_pools() {
        for op in ["GlobalAveragePool", "GlobalMaxPool"] {
            pool(op, "f32", "2,5,7,7", "", 4);
            pool(op, "f32", "2,5,9", "", 3);
            pool(op, "f32", "1,3,2,3,4", "", 5);
        }
    }

    #[test]
    fn max_pool_nan_and_empty_windows() {
        // Sqrt of inputs in [-2, 2): about half NaN; the reference keeps NaN
        // only when every tap is NaN
        let src = "graph @t {\n in %0: f32[2,3,8,9]\n %1: f32[2,3,8,9] = Sqrt(%0) @nan\n %2: f32[2,3,4,5] = MaxPool[kernel_shape=[2,2], strides=[2,2], pads=[0,0,0,1]](%1) @pool\n out %2\n}";
        check_with(src, &Options::default(), 0.0);
        // windows entirely in the padding (−∞)
        let src = "graph @t {\n in %0: f32[1,1,3,3]\n %1: f32[?,?,?,?] = MaxPool[kernel_shape=[1,1], strides=[2,2], pads=[1,1,1,1]](%0) @pool\n out %1\n}";
        check_with(&typed(src), &Options::default(), 0.0);
    }

    #[test]
    fn lp_pool_is_a_reason() {
        let g = crate::testutil::parse("graph @t {\n in %0: f32[1,1,4,4]\n %1: f32[1,1,2,2] = LpPool[kernel_shape=[2,2], strides=[2,2]](%0) @lp\n out %1\n}");
        let e = super::super::lower(&g, &Options::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("lp") && e.contains("LpPool"), "{e}");
    }
}
