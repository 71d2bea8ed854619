//! The integer-product schedule: MatMulInteger, QLinearMatMul, ConvInteger
//! and QLinearConv.
//!
//! Requires: static shapes; u8/i8 operands; zero points and scales shaped as
//! the reference interpreter accepts them (MatMul: per tensor, per row of A —
//! 1-D of length M or `[..., M, 1]` — and per column of B; Conv: scalars, with
//! the weight's zero point and scale optionally per output channel).
//! Establishes: one kernel per node, exact against the interpreter:
//! operands are widened to i32, their zero points subtracted, and products
//! accumulated in i32 (wrapping, so the order of the sum does not matter).
//!
//! - MatMul: numpy semantics (rank-1 promotion, broadcast batch axes); the
//!   grid runs over `batch · M` rows, each grid point loops over N columns
//!   and the K reduction.
//! - Conv: any number of spatial axes, groups, strides, dilations and pads
//!   (the interpreter's geometry, [`kiln_ir::interp::conv_axes`]); the grid
//!   runs over `N · M` output planes, each grid point loops over output
//!   positions, input channels of its group and kernel taps. Taps in the
//!   padding contribute 0 (padding is the zero point).
//! - QLinear*: the factor `a_scale · b_scale / y_scale` is computed in f32
//!   (per element of the output, from the broadcast scales), the product
//!   `acc · factor` in f64, rounded half to even, plus the output zero point,
//!   saturated to u8/i8. QLinearConv adds its i32 bias to the accumulator
//!   first.

use super::*;
use kiln_ir::interp::conv_axes;
use kiln_ir::kernel::{BinOp, CmpOp, Ty, UnOp};
use kiln_ir::Attrs;

fn is_int8(d: DType) -> bool {
    matches!(d, DType::U8 | DType::I8)
}

fn fixed(t: &TensorType) -> Vec<usize> {
    t.shape.fixed().unwrap_or_default()
}

/// The shape a quantization parameter of shape `p` takes when broadcast onto
/// `target` (a 1-D parameter of length `target[row_axis]` is one value per
/// row), or why it does not fit. `None` for a per-tensor parameter.
fn param_shape(
    what: &str,
    p: &[usize],
    target: &[usize],
    row_axis: Option<usize>,
) -> Result<Option<Vec<usize>>, String> {
    if p.iter().product::<usize>() == 1 {
        return Ok(None);
    }
    let mut shape = p.to_vec();
    if let (Some(ax), [len]) = (row_axis, p) {
        if target.get(ax) == Some(len) {
            shape = vec![*len, 1];
        }
    }
    if kiln_ir::shape::broadcast_shapes(&shape, target).as_deref() != Some(target) {
        return Err(format!(
            "{what} has shape {p:?}, which is neither per-tensor nor per-row/column for {target:?}"
        ));
    }
    Ok(Some(shape))
}

/// The geometry of a numpy matmul of `a` by `b`.
struct Mm {
    a: Vec<usize>,
    b: Vec<usize>,
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
}

impl Mm {
    fn new(a: &[usize], b: &[usize]) -> Result<Mm, String> {
        if a.is_empty() || b.is_empty() {
            return Err(format!("operands must have rank >= 1, got {a:?} and {b:?}"));
        }
        let a2 = if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.to_vec()
        };
        let b2 = if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.to_vec()
        };
        let (ab, ak) = a2.split_at(a2.len() - 2);
        let (bb, bk) = b2.split_at(b2.len() - 2);
        if ak[1] != bk[0] {
            return Err(format!("inner dimensions of {a:?} and {b:?} differ"));
        }
        let batch = kiln_ir::shape::broadcast_shapes(ab, bb)
            .ok_or_else(|| format!("batch dimensions of {a:?} and {b:?} do not broadcast"))?;
        Ok(Mm {
            a: a.to_vec(),
            b: b.to_vec(),
            batch,
            m: ak[0],
            k: ak[1],
            n: bk[1],
        })
    }

    fn full(&self) -> Vec<usize> {
        let mut f = self.batch.clone();
        f.extend([self.m, self.n]);
        f
    }

    /// Per-axis indices into operand `shape` (A or B, as given) for batch
    /// indices `bi`, row/col `r`, `c` of its 2-D matrix.
    fn operand_idx(
        shape: &[usize],
        bi: &[IndexExpr],
        r: IndexExpr,
        c: IndexExpr,
        a: bool,
    ) -> Vec<IndexExpr> {
        if shape.len() == 1 {
            // A [K] is row 0 of [1, K]; B [K] is column 0 of [K, 1].
            return vec![if a { c } else { r }];
        }
        let own = &shape[..shape.len() - 2];
        let off = bi.len() - own.len();
        let mut v: Vec<IndexExpr> = own
            .iter()
            .enumerate()
            .map(|(d, &s)| {
                if s == 1 {
                    IndexExpr::c(0)
                } else {
                    bi[off + d].clone()
                }
            })
            .collect();
        v.extend([r, c]);
        v
    }
}

fn flat(idx: &[IndexExpr], dims: &[usize]) -> IndexExpr {
    let st = kiln_ir::shape::strides(dims);
    idx.iter()
        .zip(&st)
        .zip(dims)
        .fold(IndexExpr::c(0), |e, ((i, &s), &n)| {
            if n == 1 {
                e
            } else {
                e.add(i.clone().mul(s as i64))
            }
        })
}

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), Reason> {
    check(op, attrs, inputs, outputs).map_err(|m| Reason(format!("{op}: {m}")))
}

fn check(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), String> {
    let ty = |i: usize| inputs.get(i).copied().flatten();
    let need = |i: usize, what: &str| ty(i).ok_or_else(|| format!("missing {what}"));
    if outputs.len() != 1 {
        return Err(format!("{} outputs", outputs.len()));
    }
    let qlinear = matches!(op, Op::QLinearMatMul | Op::QLinearConv);
    // operand positions: (x, x_zp, w, w_zp)
    let (xi, xz, wi, wz) = if qlinear { (0, 2, 3, 5) } else { (0, 2, 1, 3) };
    let (x, w) = (need(xi, "A/x")?, need(wi, "B/w")?);
    if !is_int8(x.dtype) || !is_int8(w.dtype) {
        return Err(format!("operands {} and {} (u8/i8 only)", x.dtype, w.dtype));
    }
    for (zi, of) in [(xz, x), (wz, w)] {
        if let Some(z) = ty(zi) {
            if z.dtype != of.dtype {
                return Err(format!(
                    "zero point {} for an operand of {}",
                    z.dtype, of.dtype
                ));
            }
        }
    }
    let out = outputs[0].dtype;
    if qlinear && !is_int8(out) {
        return Err(format!("output {out} (u8/i8 only)"));
    }
    match op {
        Op::MatMulInteger | Op::QLinearMatMul => {
            let mm = Mm::new(&fixed(x), &fixed(w))?;
            let xrow = (mm.a.len() >= 2).then(|| mm.a.len() - 2);
            if let Some(z) = ty(xz) {
                param_shape("the zero point of A", &fixed(z), &mm.a, xrow)?;
            }
            if let Some(z) = ty(wz) {
                param_shape("the zero point of B", &fixed(z), &mm.b, None)?;
            }
            if qlinear {
                let full = mm.full();
                let row = Some(full.len() - 2);
                for (i, what, row) in [
                    (1, "a_scale", row),
                    (4, "b_scale", None),
                    (6, "y_scale", None),
                    (7, "y_zero_point", None),
                ] {
                    let t = need(i, what)?;
                    if i != 7 && !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16) {
                        return Err(format!("{what} of {}", t.dtype));
                    }
                    param_shape(what, &fixed(t), &full, row)?;
                }
            }
            Ok(())
        }
        Op::ConvInteger | Op::QLinearConv => {
            let (xs, ws) = (fixed(x), fixed(w));
            conv_axes(op, attrs, &xs, &ws).map_err(|e| e.to_string())?;
            let m = ws[0];
            let scalar =
                |t: &TensorType| t.shape.rank() <= 1 && fixed(t).iter().product::<usize>() == 1;
            let per_m = |t: &TensorType| t.shape.rank() <= 1 && (scalar(t) || fixed(t) == [m]);
            if ty(xz).is_some_and(|z| !scalar(z)) || ty(wz).is_some_and(|z| !per_m(z)) {
                return Err(
                    "zero points must be scalars (the weight's may be per output channel)".into(),
                );
            }
            if qlinear {
                for (i, what, per) in [
                    (1, "x_scale", false),
                    (4, "w_scale", true),
                    (6, "y_scale", false),
                ] {
                    let t = need(i, what)?;
                    if t.dtype != DType::F32 || !(scalar(t) || (per && per_m(t))) {
                        return Err(format!(
                            "{what} must be an f32 scalar{}",
                            if per { " or [M]" } else { "" }
                        ));
                    }
                }
                need(2, "x_zero_point")?;
                need(5, "w_zero_point")?;
                let yz = need(7, "y_zero_point")?;
                if !scalar(yz) || yz.dtype != out {
                    return Err("y_zero_point must be a scalar of the output type".into());
                }
                if let Some(b) = ty(8) {
                    if b.dtype != DType::I32 || fixed(b) != [m] {
                        return Err(format!("B must be i32[{m}]"));
                    }
                }
            }
            Ok(())
        }
        o => Err(format!("{o} is not an integer product")),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    match node.op {
        Op::MatMulInteger | Op::QLinearMatMul => lower_matmul(cx, node),
        Op::ConvInteger | Op::QLinearConv => lower_conv(cx, node),
        o => Err(format!("{o} is not an integer product")),
    }
}

/// An operand's buffer and dtype, read by the kernel.
fn operand(
    cx: &mut Lower,
    kb: &mut KernelBuilder,
    node: &Node,
    i: usize,
) -> Option<(BufId, DType, Vec<usize>)> {
    let v = node.inputs.get(i).copied().flatten()?;
    let b = cx.buf(v);
    kb.read(b);
    Some((b, cx.dtype(v), cx.dims(v)))
}

fn load_as(buf: BufId, d: DType, idx: IndexExpr, to: DType) -> Expr {
    let e = Expr::load(buf, idx, 1);
    if d == to {
        e
    } else {
        Expr::cast(to, e)
    }
}

/// `x - zp` in i32.
fn centred(x: Expr, zp: Option<Expr>) -> Expr {
    let x = Expr::cast(DType::I32, x);
    match zp {
        Some(z) => Expr::binary(BinOp::Sub, x, Expr::cast(DType::I32, z)),
        None => x,
    }
}

/// `round_half_even(v) + zp` saturated to the range of `out`, then cast.
fn requantize(v: Expr, zp: Expr, out: DType) -> Expr {
    let (lo, hi) = if out == DType::U8 {
        (0.0, 255.0)
    } else {
        (-128.0, 127.0)
    };
    let r = Expr::binary(BinOp::Add, Expr::unary(UnOp::Round, v), zp);
    let c = Expr::binary(
        BinOp::Max,
        Expr::binary(BinOp::Min, r, Expr::float(DType::F64, hi)),
        Expr::float(DType::F64, lo),
    );
    Expr::cast(out, c)
}

fn lower_matmul(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let q = node.op == Op::QLinearMatMul;
    let (ai, az, bi_, bz) = if q { (0, 2, 3, 5) } else { (0, 2, 1, 3) };
    let mut kb = KernelBuilder::new(node.name.clone());
    let (ab, ad, adims) = operand(cx, &mut kb, node, ai).ok_or("missing A")?;
    let (bb, bd, bdims) = operand(cx, &mut kb, node, bi_).ok_or("missing B")?;
    let mm = Mm::new(&adims, &bdims)?;
    let full = mm.full();
    let out_v = node.outputs[0];
    let out_d = cx.dtype(out_v);
    let ob = cx.out_buf(out_v);
    kb.write(ob);
    let rows = mm.batch.iter().product::<usize>() * mm.m;
    let g = kb.axis(rows);
    let (j, p, acc) = (kb.var(), kb.var(), kb.var());
    let bidx = unflatten(IndexExpr::var(g).div(mm.m.max(1) as i64), &mm.batch);
    let i = IndexExpr::var(g).rem(mm.m.max(1) as i64);
    let a_idx = Mm::operand_idx(&mm.a, &bidx, i.clone(), IndexExpr::var(p), true);
    let b_idx = Mm::operand_idx(&mm.b, &bidx, IndexExpr::var(p), IndexExpr::var(j), false);
    let mut full_idx = bidx.clone();
    full_idx.extend([i.clone(), IndexExpr::var(j)]);
    let row_a = (mm.a.len() >= 2).then(|| mm.a.len() - 2);
    // A parameter of shape `pd` loaded at its broadcast index.
    let param = |b: BufId,
                 d: DType,
                 pd: &[usize],
                 target: &[usize],
                 idx: &[IndexExpr],
                 row: Option<usize>,
                 to: DType|
     -> Result<Expr, String> {
        let at = match param_shape("parameter", pd, target, row)? {
            None => IndexExpr::c(0),
            Some(s) => broadcast_index(&s, idx),
        };
        Ok(load_as(b, d, at, to))
    };
    let za = match operand(cx, &mut kb, node, az) {
        Some((b, d, s)) => Some(param(b, d, &s, &mm.a, &a_idx, row_a, d)?),
        None => None,
    };
    let zb = match operand(cx, &mut kb, node, bz) {
        Some((b, d, s)) => Some(param(b, d, &s, &mm.b, &b_idx, None, d)?),
        None => None,
    };
    let prod = Expr::binary(
        BinOp::Mul,
        centred(Expr::load(ab, flat(&a_idx, &mm.a), 1), za),
        centred(Expr::load(bb, flat(&b_idx, &mm.b), 1), zb),
    );
    let _ = (ad, bd);
    let mut inner = vec![
        Stmt::Local {
            var: acc,
            ty: Ty::scalar(DType::I32),
            init: Expr::int(DType::I32, 0),
        },
        for_n(
            p,
            mm.k,
            vec![Stmt::Assign {
                var: acc,
                value: Expr::binary(BinOp::Add, Expr::var(acc), prod),
            }],
        ),
    ];
    let out_idx = IndexExpr::var(g).mul(mm.n as i64).add(IndexExpr::var(j));
    let value = if q {
        let row_f = Some(full.len() - 2);
        let mut s = Vec::new();
        for (k, row) in [(1, row_f), (4, None), (6, None)] {
            let (b, d, sd) = operand(cx, &mut kb, node, k).ok_or("missing scale")?;
            s.push(param(b, d, &sd, &full, &full_idx, row, DType::F32)?);
        }
        let (zb_, zd, zs) = operand(cx, &mut kb, node, 7).ok_or("missing y_zero_point")?;
        let zy = param(zb_, zd, &zs, &full, &full_idx, None, DType::F64)?;
        let factor = Expr::binary(
            BinOp::Div,
            Expr::binary(BinOp::Mul, s[0].clone(), s[1].clone()),
            s[2].clone(),
        );
        let v = Expr::binary(
            BinOp::Mul,
            Expr::cast(DType::F64, Expr::var(acc)),
            Expr::cast(DType::F64, factor),
        );
        requantize(v, zy, out_d)
    } else {
        Expr::var(acc)
    };
    inner.push(Stmt::Store {
        buf: ob,
        index: out_idx,
        value,
    });
    let body = if rows * mm.n > 0 {
        vec![for_n(j, mm.n, inner)]
    } else {
        Vec::new()
    };
    cx.push(kb.finish(body));
    Ok(())
}

fn lower_conv(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let q = node.op == Op::QLinearConv;
    let (xi, xz, wi, wz) = if q { (0, 2, 3, 5) } else { (0, 2, 1, 3) };
    let mut kb = KernelBuilder::new(node.name.clone());
    let (xb, _, xs) = operand(cx, &mut kb, node, xi).ok_or("missing x")?;
    let (wb, _, ws) = operand(cx, &mut kb, node, wi).ok_or("missing w")?;
    let axes = conv_axes(node.op, &node.attrs, &xs, &ws).map_err(|e| e.to_string())?;
    let group = node
        .attrs
        .int_or("group", 1)
        .map_err(|e| e.to_string())?
        .max(1) as usize;
    let (nb, c, m) = (xs[0], xs[1], ws[0]);
    let (cg, mg) = (c / group, (m / group).max(1));
    let in_dims: Vec<usize> = axes.iter().map(|a| a.input).collect();
    let out_dims: Vec<usize> = axes.iter().map(|a| a.output).collect();
    let k_dims: Vec<usize> = axes.iter().map(|a| a.kernel).collect();
    let (in_size, out_size, taps) = (
        in_dims.iter().product::<usize>(),
        out_dims.iter().product::<usize>(),
        k_dims.iter().product::<usize>(),
    );
    let out_v = node.outputs[0];
    let out_d = cx.dtype(out_v);
    let ob = cx.out_buf(out_v);
    kb.write(ob);
    let g = kb.axis(nb * m);
    let n = IndexExpr::var(g).div(m.max(1) as i64);
    let mi = IndexExpr::var(g).rem(m.max(1) as i64);
    let o: Vec<Var> = axes.iter().map(|_| kb.var()).collect();
    let t: Vec<Var> = axes.iter().map(|_| kb.var()).collect();
    let (ci, acc) = (kb.var(), kb.var());
    // zero points: x's is a scalar, w's a scalar or per output channel
    let zx = operand(cx, &mut kb, node, xz).map(|(b, _, _)| Expr::load(b, IndexExpr::c(0), 1));
    let zw = operand(cx, &mut kb, node, wz).map(|(b, _, s)| {
        let at = if s.iter().product::<usize>() == 1 {
            IndexExpr::c(0)
        } else {
            mi.clone()
        };
        Expr::load(b, at, 1)
    });
    // input position per axis, clamped into the input, and whether it is inside
    let in_st = kiln_ir::shape::strides(&in_dims);
    let mut cond: Option<Expr> = None;
    let mut xidx = n
        .clone()
        .mul(c as i64)
        .add(mi.clone().div(mg as i64).mul(cg as i64))
        .add(IndexExpr::var(ci))
        .mul(in_size as i64);
    for (d, a) in axes.iter().enumerate() {
        let pos = IndexExpr::var(o[d])
            .mul(a.stride as i64)
            .add(IndexExpr::var(t[d]).mul(a.dilation as i64))
            .add(IndexExpr::c(-a.pad_begin));
        let lo_ok = a.pad_begin > 0;
        let max_pos = (a.output as i64 - 1) * a.stride as i64
            + (a.kernel as i64 - 1) * a.dilation as i64
            - a.pad_begin;
        let hi_ok = max_pos >= a.input as i64;
        let mut clamped = pos.clone();
        if lo_ok {
            clamped = clamped.max(IndexExpr::c(0));
            let cnd = Expr::cmp(
                CmpOp::Ge,
                Expr::Index(pos.clone()),
                Expr::int(DType::I64, 0),
            );
            cond = Some(and(cond, cnd));
        }
        if hi_ok {
            clamped = clamped.min(IndexExpr::c(a.input as i64 - 1));
            let cnd = Expr::cmp(
                CmpOp::Lt,
                Expr::Index(pos),
                Expr::int(DType::I64, a.input as i64),
            );
            cond = Some(and(cond, cnd));
        }
        xidx = xidx.add(clamped.mul(in_st[d] as i64));
    }
    let k_st = kiln_ir::shape::strides(&k_dims);
    let mut widx = mi
        .clone()
        .mul(cg as i64)
        .add(IndexExpr::var(ci))
        .mul(taps as i64);
    for d in 0..axes.len() {
        widx = widx.add(IndexExpr::var(t[d]).mul(k_st[d] as i64));
    }
    let mut prod = Expr::binary(
        BinOp::Mul,
        centred(Expr::load(xb, xidx, 1), zx),
        centred(Expr::load(wb, widx, 1), zw),
    );
    if let Some(cnd) = cond {
        prod = Expr::select(cnd, prod, Expr::int(DType::I32, 0));
    }
    let taps_loop = nest(
        &t,
        &k_dims,
        vec![Stmt::Assign {
            var: acc,
            value: Expr::binary(BinOp::Add, Expr::var(acc), prod),
        }],
    );
    let mut per_pos = vec![
        Stmt::Local {
            var: acc,
            ty: Ty::scalar(DType::I32),
            init: Expr::int(DType::I32, 0),
        },
        for_n(ci, cg, taps_loop),
    ];
    let oidx: Vec<IndexExpr> = o.iter().map(|&v| IndexExpr::var(v)).collect();
    let out_idx = IndexExpr::var(g)
        .mul(out_size as i64)
        .add(flat(&oidx, &out_dims));
    let value = if q {
        let mut a = Expr::var(acc);
        if let Some((b, _, _)) = operand(cx, &mut kb, node, 8) {
            a = Expr::binary(BinOp::Add, a, Expr::load(b, mi.clone(), 1));
        }
        let sx = operand(cx, &mut kb, node, 1).ok_or("missing x_scale")?.0;
        let (swb, _, sws) = operand(cx, &mut kb, node, 4).ok_or("missing w_scale")?;
        let sy = operand(cx, &mut kb, node, 6).ok_or("missing y_scale")?.0;
        let (zyb, zyd, _) = operand(cx, &mut kb, node, 7).ok_or("missing y_zero_point")?;
        let sw_at = if sws.iter().product::<usize>() == 1 {
            IndexExpr::c(0)
        } else {
            mi.clone()
        };
        let mult = Expr::binary(
            BinOp::Div,
            Expr::binary(
                BinOp::Mul,
                Expr::load(sx, IndexExpr::c(0), 1),
                Expr::load(swb, sw_at, 1),
            ),
            Expr::load(sy, IndexExpr::c(0), 1),
        );
        let v = Expr::binary(
            BinOp::Mul,
            Expr::cast(DType::F64, a),
            Expr::cast(DType::F64, mult),
        );
        requantize(v, load_as(zyb, zyd, IndexExpr::c(0), DType::F64), out_d)
    } else {
        Expr::var(acc)
    };
    per_pos.push(Stmt::Store {
        buf: ob,
        index: out_idx,
        value,
    });
    let body = if nb * m * out_size > 0 {
        nest(&o, &out_dims, per_pos)
    } else {
        Vec::new()
    };
    cx.push(kb.finish(body));
    Ok(())
}

fn and(a: Option<Expr>, b: Expr) -> Expr {
    match a {
        Some(a) => Expr::binary(BinOp::And, a, b),
        None => b,
    }
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

    #[test]
    fn matmul_integer_shapes_and_zero_points() {
        for (a, b, za, zb, o) in [
            ("u8[4,3]", "u8[3,5]", Some("u8[]"), Some("u8[]"), "i32[4,5]"),
            (
                "i8[4,3]",
                "u8[3,5]",
                Some("i8[4]"),
                Some("u8[5]"),
                "i32[4,5]",
            ),
            ("u8[2,4,3]", "i8[3,5]", None, Some("i8[5]"), "i32[2,4,5]"),
            ("u8[3]", "u8[2,3,5]", None, None, "i32[2,5]"),
            (
                "u8[2,1,4,3]",
                "u8[3,3]",
                Some("u8[2,1,4,1]"),
                None,
                "i32[2,1,4,3]",
            ),
            ("i8[4,3]", "i8[3]", None, None, "i32[4]"),
        ] {
            let mut ins = format!(" in %0: {a}\n in %1: {b}\n");
            let mut args = "%0, %1".to_string();
            let mut next = 2;
            for (k, z) in [za, zb].into_iter().enumerate() {
                match z {
                    Some(z) => {
                        ins += &format!(" in %{next}: {z}\n");
                        args += &format!(", %{next}");
                        next += 1;
                    }
                    None if k == 0 && zb.is_some() => args += ", _",
                    None => {}
                }
            }
            check(&format!(
                "graph @t {{\n{ins} %{next}: {o} = MatMulInteger({args}) @mm\n out %{next}\n}}"
            ));
        }
    }

    #[test]
    fn qlinear_matmul_requantizes() {
        for (a, b, sa, sb, out, zy) in [
            ("u8[4,3]", "u8[3,5]", "f32[]", "f32[]", "u8[4,5]", "u8[]"),
            (
                "i8[2,4,3]",
                "i8[3,5]",
                "f32[4]",
                "f32[5]",
                "i8[2,4,5]",
                "i8[]",
            ),
            ("u8[4,3]", "u8[3,5]", "f16[]", "f16[]", "u8[4,5]", "u8[]"),
        ] {
            let zt = |t: &str| t.split('[').next().unwrap().to_string();
            let (za, zb) = (zt(a), zt(b));
            check(&format!(
                "graph @t {{\n in %0: {a}\n in %1: {sa}\n in %2: {za}[]\n in %3: {b}\n in %4: {sb}\n in %5: {zb}[]\n const %6: f32[] = 0.0625\n in %7: {zy}\n %8: {out} = QLinearMatMul(%0, %1, %2, %3, %4, %5, %6, %7) @q\n out %8\n}}"
            ));
        }
    }

    #[test]
    fn conv_integer_padding_strides_groups() {
        for (x, w, attrs, o) in [
            (
                "u8[1,2,5,5]",
                "u8[3,2,3,3]",
                "[pads=[1,1,1,1]]",
                "i32[1,3,5,5]",
            ),
            (
                "i8[2,4,6]",
                "i8[4,2,3]",
                "[group=2, strides=[2], dilations=[2], pads=[2,1]]",
                "i32[2,4,3]",
            ),
            ("u8[1,1,4,4]", "u8[2,1,2,2]", "", "i32[1,2,3,3]"),
        ] {
            let wd = w.split('[').next().unwrap();
            let xd = x.split('[').next().unwrap();
            check(&format!(
                "graph @t {{\n in %0: {x}\n in %1: {w}\n in %2: {xd}[]\n in %3: {wd}[]\n %4: {o} = ConvInteger{attrs}(%0, %1, %2, %3) @c\n out %4\n}}"
            ));
        }
        // without zero points
        check("graph @t {\n in %0: u8[1,2,4,4]\n in %1: u8[2,2,3,3]\n %2: i32[1,2,2,2] = ConvInteger(%0, %1) @c\n out %2\n}");
    }

    #[test]
    fn qlinear_conv_per_channel_and_bias() {
        check("graph @t {\n in %0: u8[1,2,5,5]\n const %1: f32[] = 0.5\n in %2: u8[]\n in %3: i8[3,2,3,3]\n const %4: f32[3] = [0.25, 0.125, 1.0]\n in %5: i8[3]\n const %6: f32[] = 0.75\n in %7: u8[]\n in %8: i32[3]\n %9: u8[1,3,5,5] = QLinearConv[pads=[1,1,1,1]](%0, %1, %2, %3, %4, %5, %6, %7, %8) @c\n out %9\n}");
        check("graph @t {\n in %0: i8[1,1,4,4]\n const %1: f32[] = 0.5\n in %2: i8[]\n in %3: i8[2,1,2,2]\n const %4: f32[] = 3.0\n in %5: i8[]\n const %6: f32[] = 0.75\n in %7: i8[]\n %8: i8[1,2,3,3] = QLinearConv(%0, %1, %2, %3, %4, %5, %6, %7) @c\n out %8\n}");
    }
}
