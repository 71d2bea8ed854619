//! More row schedules: LayerNormalization with its Mean and InvStdDev
//! outputs (or a `stash_type` other than f32), Hardmax, LpNormalization and
//! MeanVarianceNormalization.
//!
//! Requires: static shapes, float data. Establishes: one kernel per node,
//! with the grid over independent rows and each grid point making the
//! reference interpreter's passes over its row in index order (so results
//! are bit-identical to it):
//!
//! - LayerNormalization: computes in f64 when x or `stash_type` is f64, else
//!   f32; two-pass statistics (mean, then mean squared deviation), `inv =
//!   1 / sqrt(var + eps)`, `y = (x − mean) · inv · scale (+ B)`; Mean and
//!   InvStdDev are stored in the stash dtype with shape `x.shape[..axis] ++ 1s`.
//! - Hardmax: the NaN-propagating row maximum, then 1 at its first occurrence
//!   (the first NaN, if any), 0 elsewhere.
//! - LpNormalization (p = 1 or 2): `x / Σ|x|` or `x / sqrt(Σx²)`; 0 where the
//!   norm is 0.
//! - MeanVarianceNormalization: per group of the kept axes, `E[x]` and
//!   `E[x²]` in one pass, `(x − E[x]) / (sqrt(E[x²] − E[x]²) + 1e-9)`.
//!
//! f16 and bf16 compute in f32 and round once on store.

use super::*;
use kiln_ir::kernel::{BinOp, CmpOp, Ty, UnOp};
use kiln_ir::Attrs;

/// Whether this file schedules the node (the rest of the Normalization class
/// is [`super::norm`]'s).
pub fn claims(op: Op, attrs: &Attrs, n_outputs: usize) -> bool {
    match op {
        Op::LayerNormalization => n_outputs > 1 || attrs.int_or("stash_type", 1).unwrap_or(1) != 1,
        Op::Hardmax | Op::LpNormalization | Op::MeanVarianceNormalization => true,
        _ => false,
    }
}

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    _outputs: &[&TensorType],
) -> Result<(), Reason> {
    let no = |m: String| Err(Reason(format!("{op}: {m}")));
    let Some(x) = inputs.first().copied().flatten() else {
        return no("missing input".into());
    };
    if !x.dtype.is_float() {
        return no(format!("input of {}", x.dtype));
    }
    match op {
        Op::LayerNormalization => {
            if inputs.get(1).copied().flatten().is_none() {
                return no("missing scale".into());
            }
            if let Err(e) = stash(attrs) {
                return no(e);
            }
            Ok(())
        }
        Op::Hardmax => Ok(()),
        Op::LpNormalization => match attrs.int_or("p", 2) {
            Ok(1 | 2) => Ok(()),
            _ => no("p must be 1 or 2".into()),
        },
        Op::MeanVarianceNormalization => {
            let rank = x.shape.rank();
            match mvn_axes(attrs, rank) {
                Ok(_) => Ok(()),
                Err(e) => no(e),
            }
        }
        o => no(format!("{o} is not scheduled here")),
    }
}

fn stash(attrs: &Attrs) -> Result<DType, String> {
    let code = attrs.int_or("stash_type", 1).map_err(|e| e.to_string())?;
    match i32::try_from(code).ok().and_then(DType::from_onnx_code) {
        Some(d) if d.is_float() => Ok(d),
        _ => Err(format!("stash_type must be a float type code, got {code}")),
    }
}

fn mvn_axes(attrs: &Attrs, rank: usize) -> Result<Vec<usize>, String> {
    let axes = attrs
        .ints("axes")
        .map_err(|e| e.to_string())?
        .unwrap_or(&[0, 2, 3]);
    let mut out = Vec::new();
    for &a in axes {
        let n = kiln_ir::shape::normalize_axis(a, rank)
            .ok_or_else(|| format!("axis {a} is out of range for rank {rank}"))?;
        if out.contains(&n) {
            return Err(format!("axis {a} is repeated"));
        }
        out.push(n);
    }
    Ok(out)
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    match node.op {
        Op::LayerNormalization => layer_norm(cx, node),
        Op::Hardmax | Op::LpNormalization => lane_op(cx, node),
        Op::MeanVarianceNormalization => mvn(cx, node),
        o => Err(format!("{o} is not scheduled here")),
    }
}

/// Loads one element of a `d` buffer converted to compute type `ct`.
fn ld(b: BufId, d: DType, i: IndexExpr, ct: DType) -> Expr {
    let e = Expr::load(b, i, 1);
    if d == ct {
        e
    } else {
        Expr::cast(ct, e)
    }
}

/// Converts a compute value to storage dtype `d`.
fn st(e: Expr, ct: DType, d: DType) -> Expr {
    if d == ct {
        e
    } else {
        Expr::cast(d, e)
    }
}

fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::binary(op, a, b)
}

fn local(var: Var, ct: DType, v: f64) -> Stmt {
    Stmt::Local {
        var,
        ty: Ty::scalar(ct),
        init: Expr::float(ct, v),
    }
}

fn add_to(var: Var, e: Expr) -> Stmt {
    Stmt::Assign {
        var,
        value: bin(BinOp::Add, Expr::var(var), e),
    }
}

fn layer_norm(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let xv = node.inputs[0].ok_or("missing input 0")?;
    let sv = node
        .inputs
        .get(1)
        .copied()
        .flatten()
        .ok_or("missing scale")?;
    let bv = node.inputs.get(2).copied().flatten();
    let dims = cx.dims(xv);
    let dt = cx.dtype(xv);
    let sd = stash(&node.attrs)?;
    let ct = if dt == DType::F64 || sd == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let axis = node.attrs.int_or("axis", -1).map_err(|e| e.to_string())?;
    let axis = kiln_ir::shape::normalize_axis(axis, dims.len()).ok_or("axis out of range")?;
    let eps = node
        .attrs
        .float_or("epsilon", 1e-5)
        .map_err(|e| e.to_string())? as f64;
    let rows: usize = dims[..axis].iter().product();
    let cols: usize = dims[axis..].iter().product();
    let mut kb = KernelBuilder::new(node.name.clone());
    let xb = cx.buf(xv);
    kb.read(xb);
    let (sb, sdt, sdims) = (cx.buf(sv), cx.dtype(sv), cx.dims(sv));
    kb.read(sb);
    let bias = bv.map(|b| (cx.buf(b), cx.dtype(b), cx.dims(b)));
    if let Some((b, _, _)) = bias {
        kb.read(b);
    }
    for (name, p) in [
        ("Scale", &sdims),
        ("B", &bias.as_ref().map(|b| b.2.clone()).unwrap_or_default()),
    ] {
        if kiln_ir::shape::broadcast_shapes(p, &dims).as_deref() != Some(&dims[..]) {
            return Err(format!(
                "{name} {p:?} does not broadcast to the input's shape {dims:?}"
            ));
        }
    }
    let yb = cx.out_buf(node.outputs[0]);
    kb.write(yb);
    let stats: Vec<(BufId, DType)> = node.outputs[1..]
        .iter()
        .map(|&v| (cx.out_buf(v), cx.dtype(v)))
        .collect();
    for (b, _) in &stats {
        kb.write(*b);
    }
    let g = kb.axis(rows);
    let row = IndexExpr::var(g).mul(cols as i64);
    let (j1, j2, j3, acc, sq, mean, inv) = (
        kb.var(),
        kb.var(),
        kb.var(),
        kb.var(),
        kb.var(),
        kb.var(),
        kb.var(),
    );
    let f = |v: f64| Expr::float(ct, v);
    let xat = |v: Var| ld(xb, dt, row.clone().add(IndexExpr::var(v)), ct);
    let param_idx = |v: Var, pd: &[usize]| -> IndexExpr {
        let mut full = unflatten(IndexExpr::var(g), &dims[..axis]);
        full.extend(unflatten(IndexExpr::var(v), &dims[axis..]));
        broadcast_index(pd, &full)
    };
    let n = f(cols as f64);
    let d = bin(BinOp::Sub, xat(j2), Expr::var(mean));
    let mut y = bin(
        BinOp::Mul,
        bin(
            BinOp::Mul,
            bin(BinOp::Sub, xat(j3), Expr::var(mean)),
            Expr::var(inv),
        ),
        ld(sb, sdt, param_idx(j3, &sdims), ct),
    );
    if let Some((bb, bdt, bd)) = &bias {
        y = bin(BinOp::Add, y, ld(*bb, *bdt, param_idx(j3, bd), ct));
    }
    let mut body = vec![
        local(acc, ct, 0.0),
        for_n(j1, cols, vec![add_to(acc, xat(j1))]),
        Stmt::Let {
            var: mean,
            value: bin(BinOp::Div, Expr::var(acc), n.clone()),
        },
        local(sq, ct, 0.0),
        for_n(j2, cols, vec![add_to(sq, bin(BinOp::Mul, d.clone(), d))]),
        Stmt::Let {
            var: inv,
            value: bin(
                BinOp::Div,
                f(1.0),
                Expr::unary(
                    UnOp::Sqrt,
                    bin(BinOp::Add, bin(BinOp::Div, Expr::var(sq), n), f(eps)),
                ),
            ),
        },
        for_n(
            j3,
            cols,
            vec![Stmt::Store {
                buf: yb,
                index: row.clone().add(IndexExpr::var(j3)),
                value: st(y, ct, dt),
            }],
        ),
    ];
    for ((b, d), v) in stats.iter().zip([mean, inv]) {
        body.push(Stmt::Store {
            buf: *b,
            index: IndexExpr::var(g),
            value: st(Expr::var(v), ct, *d),
        });
    }
    cx.push(kb.finish(body));
    Ok(())
}

/// Hardmax and LpNormalization: independent lanes along `axis`.
fn lane_op(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let xv = node.inputs[0].ok_or("missing input 0")?;
    let dims = cx.dims(xv);
    let dt = cx.dtype(xv);
    let ct = if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let axis = node.attrs.int_or("axis", -1).map_err(|e| e.to_string())?;
    let axis = kiln_ir::shape::normalize_axis(axis, dims.len()).ok_or("axis out of range")?;
    let outer: usize = dims[..axis].iter().product();
    let n = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let xb = cx.buf(xv);
    let ob = cx.out_buf(node.outputs[0]);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.write(ob);
    let g = kb.axis(outer * inner);
    let base = IndexExpr::var(g)
        .div(inner as i64)
        .mul((n * inner) as i64)
        .add(IndexExpr::var(g).rem(inner as i64));
    let at = |v: Var| base.clone().add(IndexExpr::var(v).mul(inner as i64));
    let x = |v: Var| ld(xb, dt, at(v), ct);
    let f = |v: f64| Expr::float(ct, v);
    let (j1, j2, j3, acc) = (kb.var(), kb.var(), kb.var(), kb.var());
    let mut body = Vec::new();
    if node.op == Op::Hardmax {
        let first = kb.var();
        let m = Expr::var(acc);
        // nan_max: keep the accumulator if it is NaN or >= the element
        body.push(local(acc, ct, f64::NEG_INFINITY));
        body.push(for_n(
            j1,
            n,
            vec![Stmt::Assign {
                var: acc,
                value: Expr::select(
                    bin(
                        BinOp::Or,
                        Expr::unary(UnOp::IsNan, m.clone()),
                        Expr::cmp(CmpOp::Ge, m.clone(), x(j1)),
                    ),
                    m.clone(),
                    x(j1),
                ),
            }],
        ));
        // the first k whose element is the maximum (NaN matches NaN)
        body.push(Stmt::Local {
            var: first,
            ty: Ty::INDEX,
            init: Expr::int(DType::I64, -1),
        });
        let hit = Expr::select(
            Expr::unary(UnOp::IsNan, m.clone()),
            Expr::unary(UnOp::IsNan, x(j2)),
            Expr::cmp(CmpOp::Eq, x(j2), m.clone()),
        );
        body.push(for_n(
            j2,
            n,
            vec![Stmt::If {
                cond: bin(
                    BinOp::And,
                    Expr::cmp(CmpOp::Lt, Expr::var(first), Expr::int(DType::I64, 0)),
                    hit,
                ),
                then: vec![Stmt::Assign {
                    var: first,
                    value: Expr::Index(IndexExpr::var(j2)),
                }],
                els: vec![],
            }],
        ));
        let y = Expr::select(
            Expr::cmp(CmpOp::Eq, Expr::Index(IndexExpr::var(j3)), Expr::var(first)),
            f(1.0),
            f(0.0),
        );
        body.push(for_n(
            j3,
            n,
            vec![Stmt::Store {
                buf: ob,
                index: at(j3),
                value: st(y, ct, dt),
            }],
        ));
    } else {
        let l1 = node.attrs.int_or("p", 2).map_err(|e| e.to_string())? == 1;
        let norm = kb.var();
        let term = if l1 {
            Expr::unary(UnOp::Abs, x(j1))
        } else {
            bin(BinOp::Mul, x(j1), x(j1))
        };
        body.push(local(acc, ct, 0.0));
        body.push(for_n(j1, n, vec![add_to(acc, term)]));
        body.push(Stmt::Let {
            var: norm,
            value: if l1 {
                Expr::var(acc)
            } else {
                Expr::unary(UnOp::Sqrt, Expr::var(acc))
            },
        });
        let y = Expr::select(
            Expr::cmp(CmpOp::Eq, Expr::var(norm), f(0.0)),
            f(0.0),
            bin(BinOp::Div, x(j3), Expr::var(norm)),
        );
        body.push(for_n(
            j3,
            n,
            vec![Stmt::Store {
                buf: ob,
                index: at(j3),
                value: st(y, ct, dt),
            }],
        ));
        let _ = j2;
    }
    cx.push(kb.finish(body));
    Ok(())
}

fn mvn(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let xv = node.inputs[0].ok_or("missing input 0")?;
    let dims = cx.dims(xv);
    let dt = cx.dtype(xv);
    let ct = if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let axes = mvn_axes(&node.attrs, dims.len())?;
    let kept: Vec<usize> = (0..dims.len()).filter(|d| !axes.contains(d)).collect();
    let red: Vec<usize> = (0..dims.len()).filter(|d| axes.contains(d)).collect();
    let kept_dims: Vec<usize> = kept.iter().map(|&d| dims[d]).collect();
    let red_dims: Vec<usize> = red.iter().map(|&d| dims[d]).collect();
    let groups: usize = kept_dims.iter().product();
    let count: usize = red_dims.iter().product();
    let strides = kiln_ir::shape::strides(&dims);
    let xb = cx.buf(xv);
    let ob = cx.out_buf(node.outputs[0]);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.write(ob);
    let g = kb.axis(groups);
    let mut base = IndexExpr::c(0);
    for (&d, i) in kept.iter().zip(unflatten(IndexExpr::var(g), &kept_dims)) {
        base = base.add(i.mul(strides[d] as i64));
    }
    let at = |v: Var| {
        let mut e = base.clone();
        for (&d, i) in red.iter().zip(unflatten(IndexExpr::var(v), &red_dims)) {
            e = e.add(i.mul(strides[d] as i64));
        }
        e
    };
    let x = |v: Var| ld(xb, dt, at(v), ct);
    let f = |v: f64| Expr::float(ct, v);
    let (j1, j2, s, s2, mean, sd) = (kb.var(), kb.var(), kb.var(), kb.var(), kb.var(), kb.var());
    let cnt = f(count as f64);
    let eps = if ct == DType::F32 {
        1e-9f32 as f64
    } else {
        1e-9
    };
    let body = vec![
        local(s, ct, 0.0),
        local(s2, ct, 0.0),
        for_n(
            j1,
            count,
            vec![add_to(s, x(j1)), add_to(s2, bin(BinOp::Mul, x(j1), x(j1)))],
        ),
        Stmt::Let {
            var: mean,
            value: bin(BinOp::Div, Expr::var(s), cnt.clone()),
        },
        Stmt::Let {
            var: sd,
            value: bin(
                BinOp::Add,
                Expr::unary(
                    UnOp::Sqrt,
                    bin(
                        BinOp::Sub,
                        bin(BinOp::Div, Expr::var(s2), cnt),
                        bin(BinOp::Mul, Expr::var(mean), Expr::var(mean)),
                    ),
                ),
                f(eps),
            ),
        },
        for_n(
            j2,
            count,
            vec![Stmt::Store {
                buf: ob,
                index: at(j2),
                value: st(
                    bin(
                        BinOp::Div,
                        bin(BinOp::Sub, x(j2), Expr::var(mean)),
                        Expr::var(sd),
                    ),
                    ct,
                    dt,
                ),
            }],
        ),
    ];
    cx.push(kb.finish(body));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, check_with};
    use super::super::Options;

    #[test]
    fn layer_norm_with_mean_and_inv_std_dev() {
        for (shape, axis, stat) in [
            ("2,3,10", -1, "2,3,1"),
            ("2,3,10", 1, "2,1,1"),
            ("4,5", 0, "1,1"),
        ] {
            let cols = shape
                .split(',')
                .skip(if axis < 0 { 2 } else { axis as usize })
                .collect::<Vec<_>>()
                .join(",");
            check(&format!(
                "graph @t {{\n in %0: f32[{shape}]\n in %1: f32[{cols}]\n in %2: f32[{cols}]\n %3: f32[{shape}], %4: f32[{stat}], %5: f32[{stat}] = LayerNormalization[axis={axis}, epsilon=0.01](%0, %1, %2) @ln\n out %3, %4, %5\n}}"
            ));
        }
        // Mean only, no bias; f64 stash from f32 input; f16 input
        check("graph @t {\n in %0: f32[3,8]\n in %1: f32[8]\n %2: f32[3,8], %3: f32[3,1] = LayerNormalization(%0, %1) @ln\n out %2, %3\n}");
        check("graph @t {\n in %0: f32[3,8]\n in %1: f32[8]\n %2: f32[3,8], %3: f64[3,1], %4: f64[3,1] = LayerNormalization[stash_type=11](%0, %1) @ln\n out %2, %3, %4\n}");
        check_with(
            "graph @t {\n in %0: f16[3,8]\n in %1: f16[8]\n %2: f16[3,8], %3: f32[3,1], %4: f32[3,1] = LayerNormalization(%0, %1) @ln\n out %2, %3, %4\n}",
            &Options::default(),
            1e-3,
        );
    }

    #[test]
    fn hardmax_and_lp_norm() {
        for axis in [0, 1, -1] {
            check(&format!("graph @t {{\n in %0: f32[3,4,5]\n %1: f32[3,4,5] = Hardmax[axis={axis}](%0) @h\n out %1\n}}"));
            for p in [1, 2] {
                check(&format!("graph @t {{\n in %0: f32[3,4,5]\n %1: f32[3,4,5] = LpNormalization[axis={axis}, p={p}](%0) @l\n out %1\n}}"));
            }
        }
        check("graph @t {\n in %0: f64[4,6]\n %1: f64[4,6] = LpNormalization(%0) @l\n out %1\n}");
        // ties and zero rows: a constant input
        check("graph @t {\n const %0: f32[2,3] = [1.0, 1.0, 0.5, 0.0, 0.0, 0.0]\n %1: f32[2,3] = Hardmax(%0) @h\n %2: f32[2,3] = LpNormalization(%0) @l\n out %1, %2\n}");
    }

    #[test]
    fn mean_variance_normalization() {
        check("graph @t {\n in %0: f32[2,3,4,5]\n %1: f32[2,3,4,5] = MeanVarianceNormalization(%0) @m\n out %1\n}");
        check("graph @t {\n in %0: f32[2,3,4]\n %1: f32[2,3,4] = MeanVarianceNormalization[axes=[1, -1]](%0) @m\n out %1\n}");
    }
}
