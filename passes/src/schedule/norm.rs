//! The row-op schedule: Softmax, LogSoftmax, LayerNormalization (first
//! output only) and RMSNormalization.
//!
//! Requires: static shapes, float data. Establishes: one kernel per node;
//! the grid runs over rows (all axes but the normalised ones; for Softmax the
//! axes before and after `axis`), and each grid point makes the reference
//! interpreter's passes over its row in index order: Softmax takes the row
//! maximum, sums `exp(x - max)` and divides; LayerNorm takes the mean, then the
//! mean squared deviation (two-pass statistics); RMSNorm the mean square.
//! f16/bf16 and f32 compute in f32, f64 in f64. Rows are scalar loops.
//!
//! The channel normalisations over `[N, C, D...]`:
//! - BatchNormalization (inference mode, output 0): grid over the `N·C`
//!   planes, `scale·(x − mean)/sqrt(var + eps) + B` with the plane's
//!   parameters in scalars and the plane vectorised (f32) with a scalar tail;
//! - GroupNormalization and InstanceNormalization (groups = C): grid over
//!   `N·groups`, two-pass statistics over the group's contiguous block in
//!   index order, then the per-channel scale and bias, with the operations in
//!   the interpreter's order (`1/(1/sqrt(var + eps))` included).
//!
//! Not scheduled (a [`Reason`]): Hardmax, LpNormalization,
//! MeanVarianceNormalization, BatchNormalization in training mode or with its
//! running-statistics outputs, LayerNormalization's Mean/InvStdDev outputs and
//! its `stash_type` other than f32.

use super::*;
use kiln_ir::kernel::{BinOp, Ty, UnOp};
use kiln_ir::Attrs;

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    _inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), Reason> {
    match op {
        Op::Softmax | Op::LogSoftmax | Op::RMSNormalization => Ok(()),
        Op::LayerNormalization => {
            if outputs.len() > 1 {
                return Err(Reason(
                    "LayerNormalization's Mean and InvStdDev outputs are not scheduled".into(),
                ));
            }
            if attrs.int_or("stash_type", 1).unwrap_or(0) != 1 {
                return Err(Reason(
                    "LayerNormalization with stash_type other than f32".into(),
                ));
            }
            Ok(())
        }
        Op::BatchNormalization | Op::InstanceNormalization | Op::GroupNormalization => {
            channel_supports(op, attrs, _inputs, outputs)
        }
        o => Err(Reason(format!("{o} has no kernel schedule"))),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    if matches!(
        node.op,
        Op::BatchNormalization | Op::InstanceNormalization | Op::GroupNormalization
    ) {
        return lower_channel(cx, node);
    }
    let x = node.inputs[0].ok_or("missing input 0")?;
    let dims = cx.dims(x);
    let dt = cx.dtype(x);
    let ct = if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let rank = dims.len();
    let axis = node.attrs.int_or("axis", -1).map_err(|e| e.to_string())?;
    let axis = kiln_ir::shape::normalize_axis(axis, rank.max(1)).ok_or("axis out of range")?;
    let xb = cx.buf(x);
    let out_v = node.outputs[0];
    let ob = cx.out_buf(out_v);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.write(ob);
    let f = |v: f64| Expr::float(ct, v);
    let ld = |b: BufId, d: DType, i: IndexExpr| -> Expr {
        let e = Expr::load(b, i, 1);
        if d == ct {
            e
        } else {
            Expr::cast(
                ct,
                if compute_dtype(d) != d {
                    Expr::cast(DType::F32, e)
                } else {
                    e
                },
            )
        }
    };
    let st = |e: Expr| -> Expr {
        if dt == ct {
            e
        } else if ct == DType::F32 && compute_dtype(dt) != dt {
            Expr::cast(dt, e)
        } else {
            Expr::cast(dt, e)
        }
    };
    let mut body = Vec::new();
    match node.op {
        Op::Softmax | Op::LogSoftmax => {
            let outer: usize = dims[..axis].iter().product();
            let n = dims.get(axis).copied().unwrap_or(1);
            let inner: usize = dims.get(axis + 1..).map_or(1, |s| s.iter().product());
            let g = kb.axis(outer * inner);
            let base = IndexExpr::var(g)
                .div(inner as i64)
                .mul((n * inner) as i64)
                .add(IndexExpr::var(g).rem(inner as i64));
            let at = |v: Var| base.clone().add(IndexExpr::var(v).mul(inner as i64));
            let (m, s) = (kb.var(), kb.var());
            let (j1, j2, j3) = (kb.var(), kb.var(), kb.var());
            body.push(Stmt::Local {
                var: m,
                ty: Ty::scalar(ct),
                init: f(f64::NEG_INFINITY),
            });
            body.push(for_n(
                j1,
                n,
                vec![Stmt::Assign {
                    var: m,
                    value: Expr::binary(BinOp::Max, Expr::var(m), ld(xb, dt, at(j1))),
                }],
            ));
            body.push(Stmt::Local {
                var: s,
                ty: Ty::scalar(ct),
                init: f(0.0),
            });
            let ex = |v: Var| {
                Expr::unary(
                    UnOp::Exp,
                    Expr::binary(BinOp::Sub, ld(xb, dt, at(v)), Expr::var(m)),
                )
            };
            body.push(for_n(
                j2,
                n,
                vec![Stmt::Assign {
                    var: s,
                    value: Expr::binary(BinOp::Add, Expr::var(s), ex(j2)),
                }],
            ));
            let y = if node.op == Op::Softmax {
                Expr::binary(BinOp::Div, ex(j3), Expr::var(s))
            } else {
                Expr::binary(
                    BinOp::Sub,
                    Expr::binary(BinOp::Sub, ld(xb, dt, at(j3)), Expr::var(m)),
                    Expr::unary(UnOp::Log, Expr::var(s)),
                )
            };
            body.push(for_n(
                j3,
                n,
                vec![Stmt::Store {
                    buf: ob,
                    index: at(j3),
                    value: st(y),
                }],
            ));
        }
        Op::LayerNormalization | Op::RMSNormalization => {
            let rows: usize = dims[..axis].iter().product();
            let cols: usize = dims[axis..].iter().product();
            let eps = node
                .attrs
                .float_or("epsilon", 1e-5)
                .map_err(|e| e.to_string())? as f64;
            let sv = node
                .inputs
                .get(1)
                .copied()
                .flatten()
                .ok_or("missing scale")?;
            let (sb, sdt, sdims) = (cx.buf(sv), cx.dtype(sv), cx.dims(sv));
            kb.read(sb);
            let bias = match node.inputs.get(2).copied().flatten() {
                Some(b) if node.op == Op::LayerNormalization => {
                    let bb = cx.buf(b);
                    kb.read(bb);
                    Some((bb, cx.dtype(b), cx.dims(b)))
                }
                _ => None,
            };
            let g = kb.axis(rows);
            let row = IndexExpr::var(g).mul(cols as i64);
            let (j1, j2, j3) = (kb.var(), kb.var(), kb.var());
            let (mean, acc, inv) = (kb.var(), kb.var(), kb.var());
            let xat = |v: Var| ld(xb, dt, row.clone().add(IndexExpr::var(v)));
            let param_idx = |v: Var, pd: &[usize]| -> IndexExpr {
                // unidirectional broadcast of the parameter onto x; only the
                // normalised (trailing) axes vary inside a row.
                let mut full: Vec<IndexExpr> = unflatten(IndexExpr::var(g), &dims[..axis]);
                full.extend(unflatten(IndexExpr::var(v), &dims[axis..]));
                broadcast_index(pd, &full)
            };
            let n = f(cols as f64);
            if node.op == Op::LayerNormalization {
                body.push(Stmt::Local {
                    var: acc,
                    ty: Ty::scalar(ct),
                    init: f(0.0),
                });
                body.push(for_n(
                    j1,
                    cols,
                    vec![Stmt::Assign {
                        var: acc,
                        value: Expr::binary(BinOp::Add, Expr::var(acc), xat(j1)),
                    }],
                ));
                body.push(Stmt::Let {
                    var: mean,
                    value: Expr::binary(BinOp::Div, Expr::var(acc), n.clone()),
                });
                let var_acc = kb.var();
                let d = Expr::binary(BinOp::Sub, xat(j2), Expr::var(mean));
                body.push(Stmt::Local {
                    var: var_acc,
                    ty: Ty::scalar(ct),
                    init: f(0.0),
                });
                body.push(for_n(
                    j2,
                    cols,
                    vec![Stmt::Assign {
                        var: var_acc,
                        value: Expr::binary(
                            BinOp::Add,
                            Expr::var(var_acc),
                            Expr::binary(BinOp::Mul, d.clone(), d),
                        ),
                    }],
                ));
                let var = Expr::binary(BinOp::Div, Expr::var(var_acc), n);
                body.push(Stmt::Let {
                    var: inv,
                    value: Expr::binary(
                        BinOp::Div,
                        f(1.0),
                        Expr::unary(UnOp::Sqrt, Expr::binary(BinOp::Add, var, f(eps))),
                    ),
                });
                let mut y = Expr::binary(
                    BinOp::Mul,
                    Expr::binary(
                        BinOp::Mul,
                        Expr::binary(BinOp::Sub, xat(j3), Expr::var(mean)),
                        Expr::var(inv),
                    ),
                    ld(sb, sdt, param_idx(j3, &sdims)),
                );
                if let Some((bb, bdt, bd)) = &bias {
                    y = Expr::binary(BinOp::Add, y, ld(*bb, *bdt, param_idx(j3, bd)));
                }
                body.push(for_n(
                    j3,
                    cols,
                    vec![Stmt::Store {
                        buf: ob,
                        index: row.clone().add(IndexExpr::var(j3)),
                        value: st(y),
                    }],
                ));
            } else {
                body.push(Stmt::Local {
                    var: acc,
                    ty: Ty::scalar(ct),
                    init: f(0.0),
                });
                body.push(for_n(
                    j1,
                    cols,
                    vec![Stmt::Assign {
                        var: acc,
                        value: Expr::binary(
                            BinOp::Add,
                            Expr::var(acc),
                            Expr::binary(BinOp::Mul, xat(j1), xat(j1)),
                        ),
                    }],
                ));
                body.push(Stmt::Let {
                    var: inv,
                    value: Expr::binary(
                        BinOp::Div,
                        f(1.0),
                        Expr::unary(
                            UnOp::Sqrt,
                            Expr::binary(
                                BinOp::Add,
                                Expr::binary(BinOp::Div, Expr::var(acc), n),
                                f(eps),
                            ),
                        ),
                    ),
                });
                let y = Expr::binary(
                    BinOp::Mul,
                    Expr::binary(BinOp::Mul, xat(j3), Expr::var(inv)),
                    ld(sb, sdt, param_idx(j3, &sdims)),
                );
                body.push(for_n(
                    j3,
                    cols,
                    vec![Stmt::Store {
                        buf: ob,
                        index: row.clone().add(IndexExpr::var(j3)),
                        value: st(y),
                    }],
                ));
                let _ = (j2, mean);
            }
        }
        other => return Err(format!("{other} has no row schedule")),
    }
    cx.push(kb.finish(body));
    Ok(())
}

fn channel_supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), Reason> {
    let no = |m: String| Err(Reason(m));
    if outputs.len() != 1 {
        return no(format!(
            "{op} with {} outputs (only output 0 is scheduled)",
            outputs.len()
        ));
    }
    let x = match inputs.first().copied().flatten() {
        Some(x) if x.dtype.is_float() => x,
        _ => return no(format!("{op} needs a float input")),
    };
    let n_params = if op == Op::BatchNormalization { 5 } else { 3 };
    if inputs.len() < n_params || inputs[..n_params].iter().any(|i| i.is_none()) {
        return no(format!("{op} with an omitted input"));
    }
    let dims = x.shape.fixed().unwrap_or_default();
    let c = if op == Op::BatchNormalization && dims.len() == 1 {
        1
    } else if dims.len() >= 2 {
        dims[1]
    } else {
        return no(format!("{op} of rank {}", dims.len()));
    };
    for p in inputs[1..n_params].iter().flatten() {
        if p.shape.rank() > 1 || p.shape.fixed().map(|s| s.iter().product::<usize>()) != Some(c) {
            return no(format!(
                "{op}: parameter {p} is not one value per channel ({c})"
            ));
        }
    }
    let ai = |n: &str, d: i64| attrs.int_or(n, d).map_err(|e| Reason(e.to_string()));
    match op {
        Op::BatchNormalization if ai("training_mode", 0)? != 0 => {
            no("BatchNormalization in training mode".into())
        }
        Op::GroupNormalization => {
            let g = attrs
                .int("num_groups")
                .map_err(|e| Reason(e.to_string()))?
                .ok_or(Reason("GroupNormalization without num_groups".into()))?;
            if g <= 0 || c % g as usize != 0 {
                return no(format!("num_groups {g} does not divide {c} channels"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// BatchNormalization, InstanceNormalization, GroupNormalization.
fn lower_channel(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = node.inputs[0].ok_or("missing input 0")?;
    let dims = cx.dims(x);
    let dt = cx.dtype(x);
    let ct = if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let eps = node
        .attrs
        .float_or("epsilon", 1e-5)
        .map_err(|e| e.to_string())?;
    let (c, inner) = match dims.as_slice() {
        [_] => (1, 1),
        [_, c, rest @ ..] => (*c, rest.iter().product::<usize>()),
        _ => return Err(format!("input of shape {dims:?}")),
    };
    let planes = dims.iter().product::<usize>() / (c * inner).max(1) * c;
    let xb = cx.buf(x);
    let n_params = if node.op == Op::BatchNormalization {
        4
    } else {
        2
    };
    let mut params = Vec::new();
    for i in 1..=n_params {
        let v = node
            .inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or(format!("missing input {i}"))?;
        params.push((cx.buf(v), cx.dtype(v)));
    }
    let ob = cx.out_buf(node.outputs[0]);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.write(ob);
    for p in &params {
        kb.read(p.0);
    }
    let f = |v: f64| Expr::float(ct, v);
    // loads convert to the compute type (f16/bf16 via f32)
    let ld = |b: BufId, d: DType, i: IndexExpr, l: u32| -> Expr {
        let e = load_c(b, d, i, l);
        if compute_dtype(d) == ct {
            e
        } else {
            Expr::cast(ct, e)
        }
    };
    let st = |e: Expr| -> Expr {
        if dt == ct {
            e
        } else {
            Expr::cast(dt, e)
        }
    };
    let bin = Expr::binary;
    let mut body = Vec::new();
    if node.op == Op::BatchNormalization {
        let g = kb.axis(planes);
        let ch = IndexExpr::var(g).rem(c as i64);
        let pv: Vec<Var> = (0..4).map(|_| kb.var()).collect();
        for (k, &v) in pv.iter().enumerate() {
            let (b, d) = params[k];
            let mut e = ld(b, d, ch.clone(), 1);
            if k == 3 {
                // den = sqrt(var + eps)
                e = Expr::unary(UnOp::Sqrt, bin(BinOp::Add, e, f(eps as f64)));
            }
            body.push(Stmt::Let { var: v, value: e });
        }
        let lanes = if dt == DType::F32 {
            cx.opts.lanes.max(1)
        } else {
            1
        };
        let base = IndexExpr::var(g).mul(inner as i64);
        let y = |i: IndexExpr, l: u32| -> Stmt {
            let p = |k: usize| Expr::splat(l, Expr::var(pv[k]));
            let xv = ld(xb, dt, base.clone().add(i.clone()), l);
            let v = bin(
                BinOp::Add,
                bin(
                    BinOp::Div,
                    bin(BinOp::Mul, p(0), bin(BinOp::Sub, xv, p(2))),
                    p(3),
                ),
                p(1),
            );
            Stmt::Store {
                buf: ob,
                index: base.clone().add(i),
                value: st(v),
            }
        };
        let main = if lanes > 1 {
            inner / lanes as usize * lanes as usize
        } else {
            0
        };
        if main > 0 {
            let j = kb.var();
            body.push(for_(
                j,
                IndexExpr::c(0),
                IndexExpr::c(main as i64),
                lanes as i64,
                vec![y(IndexExpr::var(j), lanes)],
            ));
        }
        if main < inner {
            let j = kb.var();
            body.push(for_(
                j,
                IndexExpr::c(main as i64),
                IndexExpr::c(inner as i64),
                1,
                vec![y(IndexExpr::var(j), 1)],
            ));
        }
    } else {
        let groups = if node.op == Op::InstanceNormalization {
            c
        } else {
            node.attrs
                .int("num_groups")
                .map_err(|e| e.to_string())?
                .ok_or("missing num_groups")? as usize
        };
        let cpg = c / groups.max(1);
        let block = cpg * inner;
        let g = kb.axis(dims[0] * groups);
        let base = IndexExpr::var(g).mul(block as i64);
        let (j1, j2, cl, j3) = (kb.var(), kb.var(), kb.var(), kb.var());
        let (sum, mean, ss, inv, den) = (kb.var(), kb.var(), kb.var(), kb.var(), kb.var());
        let xat = |v: Var| ld(xb, dt, base.clone().add(IndexExpr::var(v)), 1);
        let n = f(block as f64);
        body.push(Stmt::Local {
            var: sum,
            ty: Ty::scalar(ct),
            init: f(0.0),
        });
        body.push(for_n(
            j1,
            block,
            vec![Stmt::Assign {
                var: sum,
                value: bin(BinOp::Add, Expr::var(sum), xat(j1)),
            }],
        ));
        body.push(Stmt::Let {
            var: mean,
            value: bin(BinOp::Div, Expr::var(sum), n.clone()),
        });
        let d = bin(BinOp::Sub, xat(j2), Expr::var(mean));
        body.push(Stmt::Local {
            var: ss,
            ty: Ty::scalar(ct),
            init: f(0.0),
        });
        body.push(for_n(
            j2,
            block,
            vec![Stmt::Assign {
                var: ss,
                value: bin(BinOp::Add, Expr::var(ss), bin(BinOp::Mul, d.clone(), d)),
            }],
        ));
        let var = bin(BinOp::Div, Expr::var(ss), n);
        body.push(Stmt::Let {
            var: inv,
            value: bin(
                BinOp::Div,
                f(1.0),
                Expr::unary(UnOp::Sqrt, bin(BinOp::Add, var, f(eps as f64))),
            ),
        });
        body.push(Stmt::Let {
            var: den,
            value: bin(BinOp::Div, f(1.0), Expr::var(inv)),
        });
        let ch = IndexExpr::var(g)
            .rem(groups as i64)
            .mul(cpg as i64)
            .add(IndexExpr::var(cl));
        let (s_v, b_v) = (kb.var(), kb.var());
        let at = base
            .clone()
            .add(IndexExpr::var(cl).mul(inner as i64))
            .add(IndexExpr::var(j3));
        let xv = ld(xb, dt, at.clone(), 1);
        let centered = bin(BinOp::Sub, xv, Expr::var(mean));
        let y = if node.op == Op::InstanceNormalization {
            bin(
                BinOp::Add,
                bin(
                    BinOp::Div,
                    bin(BinOp::Mul, Expr::var(s_v), centered),
                    Expr::var(den),
                ),
                Expr::var(b_v),
            )
        } else {
            bin(
                BinOp::Add,
                bin(
                    BinOp::Mul,
                    bin(BinOp::Div, centered, Expr::var(den)),
                    Expr::var(s_v),
                ),
                Expr::var(b_v),
            )
        };
        body.push(for_n(
            cl,
            cpg,
            vec![
                Stmt::Let {
                    var: s_v,
                    value: ld(params[0].0, params[0].1, ch.clone(), 1),
                },
                Stmt::Let {
                    var: b_v,
                    value: ld(params[1].0, params[1].1, ch, 1),
                },
                for_n(
                    j3,
                    inner,
                    vec![Stmt::Store {
                        buf: ob,
                        index: at,
                        value: st(y),
                    }],
                ),
            ],
        ));
    }
    cx.push(kb.finish(body));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::conv::tests::{rand_list, typed};
    use super::super::testing::check_with;
    use super::*;

    fn positive(n: usize) -> String {
        let v: Vec<String> = (0..n)
            .map(|i| format!("{}", 0.25 + (i % 7) as f64 * 0.5))
            .collect();
        format!("[{}]", v.join(", "))
    }

    fn bn(dt: &str, x: &str, c: usize, rank: usize, vec_lanes: u32) {
        let q = vec!["?"; rank].join(",");
        let src = typed(&format!(
            "graph @t {{\n in %0 \"x\": {dt}[{x}]\n const %1: {dt}[{c}] = {}\n const %2: {dt}[{c}] = {}\n const %3: {dt}[{c}] = {}\n const %4: {dt}[{c}] = {}\n %5: {dt}[{q}] = BatchNormalization[epsilon=0.001](%0, %1, %2, %3, %4) @bn\n out %5\n}}",
            rand_list(c, 1),
            rand_list(c, 2),
            rand_list(c, 3),
            positive(c)
        ));
        let tol = if dt == "f32" || dt == "f64" {
            1e-6
        } else {
            1e-2
        };
        let opts = Options {
            lanes: vec_lanes,
            ..Options::default()
        };
        check_with(&src, &opts, tol);
    }

    #[test]
    fn batch_norm_inference() {
        for lanes in [4, 1] {
            bn("f32", "2,5,7,9", 5, 4, lanes);
            bn("f32", "3,6", 6, 2, lanes);
            bn("f32", "2,3,4,5,3", 3, 5, lanes);
            bn("f32", "7", 1, 1, lanes);
        }
        for dt in ["f16", "bf16", "f64"] {
            bn(dt, "2,3,5,5", 3, 4, 4);
        }
        // parameters that are graph inputs (a negative variance gives NaN on both sides)
        let src = typed("graph @t {\n in %0: f32[2,3,4]\n in %1: f32[3]\n in %2: f32[3]\n in %3: f32[3]\n in %4: f32[3]\n %5: f32[?,?,?] = BatchNormalization(%0, %1, %2, %3, %4) @bn\n out %5\n}");
        check_with(&src, &Options::default(), 1e-6);
    }

    #[test]
    fn instance_and_group_norm() {
        for (dt, tol) in [("f32", 1e-5), ("f64", 1e-12), ("f16", 1e-2)] {
            let src = typed(&format!(
                "graph @t {{\n in %0: {dt}[2,4,5,6]\n in %1: {dt}[4]\n in %2: {dt}[4]\n %3: {dt}[?,?,?,?] = InstanceNormalization[epsilon=0.01](%0, %1, %2) @in\n out %3\n}}"
            ));
            check_with(&src, &Options::default(), tol);
            for groups in [1, 2, 4] {
                let src = typed(&format!(
                    "graph @t {{\n in %0: {dt}[2,4,3,5]\n in %1: {dt}[4]\n in %2: {dt}[4]\n %3: {dt}[?,?,?,?] = GroupNormalization[num_groups={groups}](%0, %1, %2) @gn\n out %3\n}}"
                ));
                check_with(&src, &Options::default(), tol);
            }
        }
        let src = typed("graph @t {\n in %0: f32[2,3,7]\n in %1: f32[3]\n in %2: f32[3]\n %3: f32[?,?,?] = InstanceNormalization(%0, %1, %2) @in\n out %3\n}");
        check_with(&src, &Options::default(), 1e-5);
    }

    #[test]
    fn batch_norm_training_is_a_reason() {
        let g = crate::testutil::parse("graph @t {\n in %0: f32[2,3]\n in %1: f32[3]\n in %2: f32[3]\n in %3: f32[3]\n in %4: f32[3]\n %5: f32[2,3] = BatchNormalization[training_mode=1](%0, %1, %2, %3, %4) @bn\n out %5\n}");
        let e = super::super::lower(&g, &Options::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bn") && e.contains("training"), "{e}");
    }
}
