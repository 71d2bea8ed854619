//! The quantization schedule: QuantizeLinear, DequantizeLinear and
//! DynamicQuantizeLinear.
//!
//! Requires: static shapes; scales and zero points that are per tensor (one
//! element), per axis (1-D, the length of `axis`) or blocked (`block_size` >
//! 0: the input's shape with the `axis` dimension divided by the block size,
//! rounded up), as the reference interpreter (`kiln_ir::interp`, quant.rs)
//! accepts them; scales and zero points may be runtime values.
//! Establishes: one kernel per node that reproduces the interpreter exactly:
//!
//! - QuantizeLinear divides in `precision` (else the scale's dtype): f32 in
//!   f32, f16/bf16 by rounding the operands and the f32 quotient to that
//!   type, anything else in f64; then rounds half to even, adds the zero
//!   point, saturates to u8/i8/u16/i16 (NaN goes to the low end). The grid
//!   runs over the rows `outer · axis` (per axis, blocked) or over chunks of
//!   the flat tensor (per tensor); the inner loop is scalar.
//! - DequantizeLinear computes `(x − zero_point) · scale` in f32 and rounds
//!   once to the output dtype (f32, f16, bf16); inputs u8, i8, u16, i16, i32.
//! - DynamicQuantizeLinear (f32 input, three outputs) is one sequential
//!   kernel: the NaN-propagating max and min over the tensor (starting from
//!   0), the scale and zero point as ONNX's function body computes them, and
//!   the u8 values; the statistics are inherently serial.

use super::*;
use kiln_ir::kernel::{BinOp, CmpOp, Ty, UnOp};
use kiln_ir::Attrs;

/// A dtype from an ONNX type-code attribute (0: absent).
fn code_attr(attrs: &Attrs, name: &str) -> Result<Option<DType>, String> {
    let code = attrs.int_or(name, 0).map_err(|e| e.to_string())?;
    if code == 0 {
        return Ok(None);
    }
    i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx_code)
        .map(Some)
        .ok_or_else(|| format!("{name} = {code} is not a type kiln supports"))
}

/// Where each element's scale and zero point come from.
#[derive(Clone, Debug, PartialEq)]
enum Layout {
    PerTensor,
    /// `axis`, its length `d` and the product of the dims after it.
    PerAxis {
        outer: usize,
        d: usize,
        inner: usize,
    },
    /// Blocks of `b` along the axis; `s = ceil(d / b)` parameters per row.
    Blocked {
        outer: usize,
        d: usize,
        inner: usize,
        b: usize,
        s: usize,
    },
}

fn layout(attrs: &Attrs, x: &[usize], p: &[usize]) -> Result<Layout, String> {
    if p.iter().product::<usize>() == 1 {
        return Ok(Layout::PerTensor);
    }
    let axis = attrs.int_or("axis", 1).map_err(|e| e.to_string())?;
    let block = attrs.int_or("block_size", 0).map_err(|e| e.to_string())?;
    let ax = kiln_ir::shape::normalize_axis(axis, x.len())
        .ok_or_else(|| format!("axis {axis} is out of range for rank {}", x.len()))?;
    let (outer, d, inner) = (
        x[..ax].iter().product::<usize>(),
        x[ax],
        x[ax + 1..].iter().product::<usize>(),
    );
    let bad = || {
        format!(
            "scale shape {p:?} fits neither per-axis (axis {axis}) nor blocked \
             (block_size {block}) quantization of an input of shape {x:?}"
        )
    };
    if block < 0 {
        return Err(format!("block_size must be >= 0, got {block}"));
    }
    if block == 0 {
        return if p == [d] {
            Ok(Layout::PerAxis { outer, d, inner })
        } else {
            Err(bad())
        };
    }
    let b = block as usize;
    let s = d.div_ceil(b);
    let ok = p.len() == x.len()
        && p.iter()
            .zip(x)
            .enumerate()
            .all(|(i, (&pd, &xd))| if i == ax { pd == s } else { pd == xd });
    if ok {
        Ok(Layout::Blocked {
            outer,
            d,
            inner,
            b,
            s,
        })
    } else {
        Err(bad())
    }
}

fn ty_of<'a>(inputs: &[Option<&'a TensorType>], i: usize) -> Option<&'a TensorType> {
    inputs.get(i).copied().flatten()
}

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), Reason> {
    let no = |m: String| Err(Reason(m));
    let fixed = |t: &TensorType| t.shape.fixed().unwrap_or_default();
    let Some(x) = ty_of(inputs, 0) else {
        return no(format!("{op} without its input"));
    };
    match op {
        Op::QuantizeLinear | Op::DequantizeLinear => {
            let Some(s) = ty_of(inputs, 1) else {
                return no(format!("{op} without a scale"));
            };
            if let Some(z) = ty_of(inputs, 2) {
                if z.shape != s.shape {
                    return no(format!(
                        "{op}: the zero point's shape {} differs from the scale's {}",
                        z.shape, s.shape
                    ));
                }
            }
            if let Err(m) = layout(attrs, &fixed(x), &fixed(s)) {
                return no(format!("{op}: {m}"));
            }
            let out = outputs.first().map(|t| t.dtype);
            if op == Op::QuantizeLinear {
                if !(x.dtype.is_float() || x.dtype == DType::I32) {
                    return no(format!("{op} of {}", x.dtype));
                }
                if let Err(m) = code_attr(attrs, "precision") {
                    return no(format!("{op}: {m}"));
                }
                if !matches!(out, Some(DType::U8 | DType::I8 | DType::U16 | DType::I16)) {
                    return no(format!("{op} to {out:?} (supported: u8, i8, u16, i16)"));
                }
            } else {
                if !matches!(
                    x.dtype,
                    DType::U8 | DType::I8 | DType::U16 | DType::I16 | DType::I32
                ) {
                    return no(format!("{op} of {}", x.dtype));
                }
                if !matches!(out, Some(DType::F32 | DType::F16 | DType::BF16)) {
                    return no(format!("{op} to {out:?}"));
                }
            }
            if outputs.len() != 1 {
                return no(format!("{op} with {} outputs", outputs.len()));
            }
            Ok(())
        }
        Op::DynamicQuantizeLinear => {
            if x.dtype != DType::F32 || outputs.len() != 3 {
                return no(format!(
                    "{op} of {} with {} outputs (f32 and 3 outputs only)",
                    x.dtype,
                    outputs.len()
                ));
            }
            Ok(())
        }
        o => no(format!("{o} is not a quantization op")),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    match node.op {
        Op::QuantizeLinear | Op::DequantizeLinear => lower_linear(cx, node),
        Op::DynamicQuantizeLinear => lower_dynamic(cx, node),
        o => Err(format!("{o} is not a quantization op")),
    }
}

/// `load` converted to `to` (a no-op when the buffer already holds `to`).
fn load_as(buf: BufId, d: DType, idx: IndexExpr, to: DType) -> Expr {
    let e = Expr::load(buf, idx, 1);
    if d == to {
        e
    } else {
        Expr::cast(to, e)
    }
}

/// Rounds an f32 value to `d` (f16/bf16) and back.
fn round_to(e: Expr, d: DType) -> Expr {
    Expr::cast(DType::F32, Expr::cast(d, e))
}

/// The saturation range of a quantized dtype.
fn q_range(d: DType) -> (f64, f64) {
    match d {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        _ => (-32768.0, 32767.0),
    }
}

/// `round_half_even(q) + zp`, saturated to `[lo, hi]`; NaN goes to `lo`.
/// All in float type `ft`.
fn saturate(q: Expr, zp: Expr, lo: f64, hi: f64, ft: DType) -> Expr {
    let r = Expr::binary(BinOp::Add, Expr::unary(UnOp::Round, q.clone()), zp);
    let c = Expr::binary(
        BinOp::Max,
        Expr::binary(BinOp::Min, r, Expr::float(ft, hi)),
        Expr::float(ft, lo),
    );
    Expr::select(Expr::unary(UnOp::IsNan, q), Expr::float(ft, lo), c)
}

fn lower_linear(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let op = node.op;
    let xv = node.inputs[0].ok_or("missing x")?;
    let sv = node
        .inputs
        .get(1)
        .copied()
        .flatten()
        .ok_or("missing scale")?;
    let zv = node.inputs.get(2).copied().flatten();
    let (xd, sd) = (cx.dtype(xv), cx.dtype(sv));
    let dims = cx.dims(xv);
    let lay = layout(&node.attrs, &dims, &cx.dims(sv))?;
    let out_v = node.outputs[0];
    let out_d = cx.dtype(out_v);
    let (xb, sb) = (cx.buf(xv), cx.buf(sv));
    let zb = zv.map(|z| (cx.buf(z), cx.dtype(z)));
    let ob = cx.out_buf(out_v);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.read(sb);
    if let Some((b, _)) = zb {
        kb.read(b);
    }
    kb.write(ob);
    let total: usize = dims.iter().product();
    // Grid variable g, loop variable j, element index, parameter index.
    let g;
    let jv = kb.var();
    let (loop_start, loop_end, elem, pidx): (IndexExpr, IndexExpr, IndexExpr, IndexExpr);
    match lay {
        Layout::PerTensor => {
            let chunk = cx.opts.chunk.max(1);
            let n = total.div_ceil(chunk).max(1);
            g = kb.axis(n);
            let s = IndexExpr::var(g).mul(chunk as i64);
            loop_start = s.clone();
            loop_end = s
                .add(IndexExpr::c(chunk as i64))
                .min(IndexExpr::c(total as i64));
            elem = IndexExpr::var(jv);
            pidx = IndexExpr::c(0);
        }
        Layout::PerAxis { outer, d, inner } => {
            g = kb.axis(outer * d);
            loop_start = IndexExpr::c(0);
            loop_end = IndexExpr::c(inner as i64);
            elem = IndexExpr::var(g).mul(inner as i64).add(IndexExpr::var(jv));
            pidx = IndexExpr::var(g).rem(d as i64);
        }
        Layout::Blocked {
            outer,
            d,
            inner,
            b,
            s,
        } => {
            g = kb.axis(outer * d);
            loop_start = IndexExpr::c(0);
            loop_end = IndexExpr::c(inner as i64);
            elem = IndexExpr::var(g).mul(inner as i64).add(IndexExpr::var(jv));
            pidx = IndexExpr::var(g)
                .div(d as i64)
                .mul(s as i64)
                .add(IndexExpr::var(g).rem(d as i64).div(b as i64))
                .mul(inner as i64)
                .add(IndexExpr::var(jv));
        }
    }
    let value = if op == Op::QuantizeLinear {
        let precision = code_attr(&node.attrs, "precision")?.unwrap_or(sd);
        let (lo, hi) = q_range(out_d);
        let (ft, q) = match precision {
            DType::F32 => (
                DType::F32,
                Expr::binary(
                    BinOp::Div,
                    load_as(xb, xd, elem.clone(), DType::F32),
                    load_as(sb, sd, pidx.clone(), DType::F32),
                ),
            ),
            p @ (DType::F16 | DType::BF16) => (
                DType::F32,
                round_to(
                    Expr::binary(
                        BinOp::Div,
                        round_to(load_as(xb, xd, elem.clone(), DType::F32), p),
                        round_to(load_as(sb, sd, pidx.clone(), DType::F32), p),
                    ),
                    p,
                ),
            ),
            _ => (
                DType::F64,
                Expr::binary(
                    BinOp::Div,
                    load_as(xb, xd, elem.clone(), DType::F64),
                    load_as(sb, sd, pidx.clone(), DType::F64),
                ),
            ),
        };
        let zp = match zb {
            Some((b, d)) => load_as(b, d, pidx.clone(), ft),
            None => Expr::float(ft, 0.0),
        };
        let qv = kb.var();
        let body_q = Stmt::Let { var: qv, value: q };
        let v = Expr::cast(out_d, saturate(Expr::var(qv), zp, lo, hi, ft));
        (Some(body_q), v)
    } else {
        let zp = match zb {
            Some((b, d)) => load_as(b, d, pidx.clone(), DType::F32),
            None => Expr::f32(0.0),
        };
        let v = Expr::binary(
            BinOp::Mul,
            Expr::binary(BinOp::Sub, load_as(xb, xd, elem.clone(), DType::F32), zp),
            load_as(sb, sd, pidx.clone(), DType::F32),
        );
        (None, to_storage(v, out_d))
    };
    let (pre, v) = value;
    let mut inner_body: Vec<Stmt> = pre.into_iter().collect();
    inner_body.push(Stmt::Store {
        buf: ob,
        index: elem,
        value: v,
    });
    let body = if total > 0 {
        vec![for_(jv, loop_start, loop_end, 1, inner_body)]
    } else {
        Vec::new()
    };
    cx.push(kb.finish(body));
    Ok(())
}

fn lower_dynamic(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let xv = node.inputs[0].ok_or("missing x")?;
    let n: usize = cx.dims(xv).iter().product();
    let xb = cx.buf(xv);
    let yb = cx.out_buf(node.outputs[0]);
    let sb = cx.out_buf(node.outputs[1]);
    let zb = cx.out_buf(node.outputs[2]);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.write(yb);
    kb.write(sb);
    kb.write(zb);
    let f = Expr::f32;
    let (mx, mn, j1, j2) = (kb.var(), kb.var(), kb.var(), kb.var());
    let (scale, zp) = (kb.var(), kb.var());
    let x = |v: Var| Expr::load(xb, IndexExpr::var(v), 1);
    // nan_max(a, b) = a if a is NaN or a >= b, else b (and min likewise)
    let keep = |c: CmpOp, a: Expr, b: Expr| {
        Expr::select(
            Expr::binary(
                BinOp::Or,
                Expr::unary(UnOp::IsNan, a.clone()),
                Expr::cmp(c, a.clone(), b.clone()),
            ),
            a,
            b,
        )
    };
    let mut body = vec![
        Stmt::Local {
            var: mx,
            ty: Ty::scalar(DType::F32),
            init: f(0.0),
        },
        Stmt::Local {
            var: mn,
            ty: Ty::scalar(DType::F32),
            init: f(0.0),
        },
        for_n(
            j1,
            n,
            vec![
                Stmt::Assign {
                    var: mx,
                    value: keep(CmpOp::Ge, Expr::var(mx), x(j1)),
                },
                Stmt::Assign {
                    var: mn,
                    value: keep(CmpOp::Le, Expr::var(mn), x(j1)),
                },
            ],
        ),
    ];
    // scale = (max == min ? 1 : max - min) / 255
    let range = Expr::select(
        Expr::cmp(CmpOp::Eq, Expr::var(mx), Expr::var(mn)),
        f(1.0),
        Expr::binary(BinOp::Sub, Expr::var(mx), Expr::var(mn)),
    );
    body.push(Stmt::Let {
        var: scale,
        value: Expr::binary(BinOp::Div, range, f(255.0)),
    });
    // zp = round(clamp(0 - min / scale, 0, 255)) (clamp keeps NaN)
    let init = Expr::binary(
        BinOp::Sub,
        f(0.0),
        Expr::binary(BinOp::Div, Expr::var(mn), Expr::var(scale)),
    );
    let clamped = Expr::binary(BinOp::Max, Expr::binary(BinOp::Min, init, f(255.0)), f(0.0));
    body.push(Stmt::Let {
        var: zp,
        value: Expr::unary(UnOp::Round, clamped),
    });
    body.push(Stmt::Store {
        buf: sb,
        index: IndexExpr::c(0),
        value: Expr::var(scale),
    });
    body.push(Stmt::Store {
        buf: zb,
        index: IndexExpr::c(0),
        value: Expr::cast(DType::U8, Expr::var(zp)),
    });
    let q = Expr::binary(
        BinOp::Add,
        Expr::unary(
            UnOp::Round,
            Expr::binary(BinOp::Div, x(j2), Expr::var(scale)),
        ),
        Expr::var(zp),
    );
    let q = Expr::binary(BinOp::Max, Expr::binary(BinOp::Min, q, f(255.0)), f(0.0));
    body.push(for_n(
        j2,
        n,
        vec![Stmt::Store {
            buf: yb,
            index: IndexExpr::var(j2),
            value: Expr::cast(DType::U8, q),
        }],
    ));
    cx.push(kb.finish(body));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;

    fn q(x: &str, s: &str, z: Option<&str>, attrs: &str, out: &str) -> String {
        let (zin, zarg, o) = match z {
            Some(z) => (format!(" in %2: {z}\n"), ", %2", 3),
            None => (String::new(), "", 2),
        };
        format!(
            "graph @t {{\n in %0: {x}\n in %1: {s}\n{zin} %{o}: {out} = QuantizeLinear{attrs}(%0, %1{zarg}) @q\n out %{o}\n}}"
        )
    }

    #[test]
    fn quantize_per_tensor_axis_and_blocked() {
        // scales are random in [-2, 2): small ones saturate, NaN-free
        for (x, s, z, attrs, out) in [
            ("f32[3,5]", "f32[]", None, "", "u8[3,5]"),
            ("f32[3,5]", "f32[]", Some("i8[]"), "", "i8[3,5]"),
            ("f32[2,3,4]", "f32[3]", Some("u8[3]"), "", "u8[2,3,4]"),
            (
                "f32[2,3,4]",
                "f32[4]",
                Some("i16[4]"),
                "[axis=-1]",
                "i16[2,3,4]",
            ),
            (
                "f32[2,5]",
                "f32[2,3]",
                Some("u16[2,3]"),
                "[axis=1, block_size=2]",
                "u16[2,5]",
            ),
            ("f16[2,5]", "f16[2]", Some("i8[2]"), "[axis=0]", "i8[2,5]"),
            ("f32[4,3]", "f32[]", None, "[precision=10]", "u8[4,3]"),
            ("f64[4,3]", "f64[]", None, "", "u8[4,3]"),
            ("i32[4,3]", "f32[]", Some("i8[]"), "", "i8[4,3]"),
        ] {
            check(&q(x, s, z, attrs, out));
        }
    }

    #[test]
    fn quantize_constant_scale_rounds_half_even() {
        // x in [-2, 2) / 0.0078125 = exact multiples of 1/2 ... saturating both ends of i8
        let src = "graph @t {\n in %0: f32[64]\n const %1: f32[] = 0.0078125\n const %2: i8[] = 3\n %3: i8[64] = QuantizeLinear(%0, %1, %2) @q\n out %3\n}";
        check(src);
    }

    #[test]
    fn dequantize_all_layouts_and_dtypes() {
        for (x, s, z, attrs, out) in [
            ("u8[3,5]", "f32[]", Some("u8[]"), "", "f32[3,5]"),
            ("i8[2,3,4]", "f32[3]", Some("i8[3]"), "", "f32[2,3,4]"),
            ("i16[2,3,4]", "f32[4]", None, "[axis=2]", "f32[2,3,4]"),
            (
                "u16[2,5]",
                "f32[2,3]",
                Some("u16[2,3]"),
                "[axis=1, block_size=2]",
                "f32[2,5]",
            ),
            ("i32[6]", "f32[]", Some("i32[]"), "", "f32[6]"),
            ("u8[4]", "f16[]", None, "", "f16[4]"),
            ("u8[4]", "f32[]", None, "[output_dtype=16]", "bf16[4]"),
        ] {
            let (zin, zarg, o) = match z {
                Some(z) => (format!(" in %2: {z}\n"), ", %2", 3),
                None => (String::new(), "", 2),
            };
            check(&format!(
                "graph @t {{\n in %0: {x}\n in %1: {s}\n{zin} %{o}: {out} = DequantizeLinear{attrs}(%0, %1{zarg}) @d\n out %{o}\n}}"
            ));
        }
    }

    #[test]
    fn dynamic_quantize_three_outputs() {
        for shape in ["6", "3,4", "1"] {
            check(&format!(
                "graph @t {{\n in %0: f32[{shape}]\n %1: u8[{shape}], %2: f32[], %3: u8[] = DynamicQuantizeLinear(%0) @d\n out %1, %2, %3\n}}"
            ));
        }
    }
}
