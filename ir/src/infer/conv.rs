//! Shape and dtype inference for the Conv class (Conv, ConvTranspose,
//! ConvInteger, QLinearConv), using the interpreter's window geometry
//! ([`crate::interp::window`]) so the two agree.
//!
//! Output: `[N, M, out...]` with `N` passed through (symbolic or not), `M`
//! from W (`W[0]`, or `W[1] * group` for ConvTranspose), and each spatial
//! size from the attributes where the input's size is static (a symbolic
//! spatial size gives an unknown `?<op>` dimension). The kernel comes from
//! `kernel_shape` or W's spatial dimensions, which must then be static.
//! Dtypes: Conv and ConvTranspose keep X's float type, ConvInteger gives i32,
//! QLinearConv gives `y_zero_point`'s type.

use super::util::{operand, opt_operand, ty};
use super::{unknown_dim, Operand};
use crate::interp::window::{conv_axis, conv_transpose_axis, TransposeAttrs, WindowAttrs};
use crate::{Attrs, DType, Dim, Error, Op, Result, Shape, TensorType};

pub(crate) fn infer(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    _n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let (xi, wi) = if op == Op::QLinearConv {
        (0, 3)
    } else {
        (0, 1)
    };
    let x = operand(op, inputs, xi)?;
    let w = operand(op, inputs, wi)?;
    let dtype = check_dtypes(op, inputs, x.ty.dtype, w.ty.dtype)?;
    let (xs, ws) = (&x.ty.shape, &w.ty.shape);
    if xs.rank() < 3 || ws.rank() != xs.rank() {
        return Err(Error::invalid(format!(
            "{op} needs X of rank >= 3 and W of the same rank, found X {xs} and W {ws}"
        )));
    }
    let r = xs.rank() - 2;
    let g = attrs.int_or("group", 1)?;
    let group = usize::try_from(g)
        .ok()
        .filter(|&g| g >= 1)
        .ok_or_else(|| Error::Attr {
            attr: "group".into(),
            msg: format!("{op}: must be positive, found {g}"),
        })?;
    let (c, w0, w1) = (xs.0[1].fixed(), ws.0[0].fixed(), ws.0[1].fixed());
    let mismatch = || {
        Error::invalid(format!(
            "{op}: X {xs} and W {ws} do not match with group {group}"
        ))
    };
    let kernel_from_w: Option<Vec<usize>> = ws.0[2..].iter().map(Dim::fixed).collect();
    let wa = WindowAttrs::read(op, attrs, r, kernel_from_w.as_deref())?;
    let mut dims = vec![xs.0[0].clone()];
    if op == Op::ConvTranspose {
        if matches!((c, w0), (Some(c), Some(w0)) if c != w0) || c.is_some_and(|c| c % group != 0) {
            return Err(mismatch());
        }
        dims.push(match (w1, group) {
            (Some(m), _) => Dim::Fixed(m.checked_mul(group).ok_or_else(mismatch)?),
            (None, 1) => ws.0[1].clone(),
            (None, _) => unknown_dim(op),
        });
        let ta = TransposeAttrs::read(op, attrs, r)?;
        for i in 0..r {
            dims.push(match xs.0[i + 2].fixed() {
                Some(n) => Dim::Fixed(conv_transpose_axis(op, &wa, &ta, i, n)?.output),
                None => unknown_dim(op),
            });
        }
    } else {
        if matches!((c, w1), (Some(c), Some(w1)) if Some(c) != w1.checked_mul(group))
            || w0.is_some_and(|m| m % group != 0)
        {
            return Err(mismatch());
        }
        dims.push(ws.0[0].clone());
        for i in 0..r {
            dims.push(match xs.0[i + 2].fixed() {
                Some(n) => Dim::Fixed(conv_axis(op, &wa, i, n)?.output),
                None => unknown_dim(op),
            });
        }
    }
    let bias = match op {
        Op::Conv | Op::ConvTranspose => opt_operand(inputs, 2),
        Op::QLinearConv => opt_operand(inputs, 8),
        _ => None,
    };
    if let Some(b) = bias {
        let ok = b.ty.shape.rank() == 1
            && match (&b.ty.shape.0[0], &dims[1]) {
                (Dim::Fixed(a), Dim::Fixed(m)) => a == m,
                _ => true,
            };
        if !ok {
            return Err(Error::invalid(format!(
                "{op}: B must have one element per output channel ({}), found {}",
                dims[1], b.ty
            )));
        }
    }
    Ok(vec![ty(dtype, Shape(dims))])
}

/// Checks the operands' dtypes; returns the output dtype.
fn check_dtypes(op: Op, inputs: &[Option<Operand>], x: DType, w: DType) -> Result<DType> {
    let bad = |what: &str, found: DType| Error::invalid(format!("{op}: {what}, found {found}"));
    let int8 = |d: DType| matches!(d, DType::I8 | DType::U8);
    let same = |i: usize, name: &str, want: DType| -> Result<()> {
        match opt_operand(inputs, i) {
            Some(o) if o.ty.dtype != want => {
                Err(bad(&format!("{name} must be {want}"), o.ty.dtype))
            }
            _ => Ok(()),
        }
    };
    match op {
        Op::Conv | Op::ConvTranspose => {
            if !x.is_float() {
                return Err(bad("X must be f32, f64, f16 or bf16", x));
            }
            same(1, "W", x)?;
            same(2, "B", x)?;
            Ok(x)
        }
        Op::ConvInteger => {
            if !int8(x) || !int8(w) {
                return Err(Error::invalid(format!(
                    "{op}: x and w must be i8 or u8, found {x} and {w}"
                )));
            }
            same(2, "x_zero_point", x)?;
            same(3, "w_zero_point", w)?;
            Ok(DType::I32)
        }
        Op::QLinearConv => {
            if !int8(x) || !int8(w) {
                return Err(Error::invalid(format!(
                    "{op}: x and w must be i8 or u8, found {x} and {w}"
                )));
            }
            for (i, name) in [(1, "x_scale"), (4, "w_scale"), (6, "y_scale")] {
                same(i, name, DType::F32)?;
            }
            same(2, "x_zero_point", x)?;
            same(5, "w_zero_point", w)?;
            same(8, "B", DType::I32)?;
            let y = operand(op, inputs, 7)?.ty.dtype;
            if !int8(y) {
                return Err(bad("y_zero_point must be i8 or u8", y));
            }
            Ok(y)
        }
        _ => Err(Error::invalid(format!("{op} is not a convolution"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attr, Tensor};

    fn tt(dtype: DType, dims: &[Dim]) -> TensorType {
        TensorType {
            dtype,
            shape: Shape(dims.to_vec()),
        }
    }

    fn f(n: usize) -> Dim {
        Dim::Fixed(n)
    }

    fn run(op: Op, attrs: &Attrs, types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
        let ops: Vec<Option<Operand>> = types
            .iter()
            .map(|t| t.map(|ty| Operand { ty, value: None }))
            .collect();
        infer(op, attrs, &ops, 1)
    }

    #[test]
    fn conv_shapes() {
        let x = tt(
            DType::F32,
            &[Dim::Sym("batch".into()), f(3), f(224), f(224)],
        );
        let w = tt(DType::F32, &[f(64), f(3), f(7), f(7)]);
        let b = tt(DType::F32, &[f(64)]);
        let a = Attrs::new()
            .with("strides", Attr::Ints(vec![2, 2]))
            .with("pads", Attr::Ints(vec![3, 3, 3, 3]));
        let out = run(Op::Conv, &a, &[Some(&x), Some(&w), Some(&b)]).unwrap();
        assert_eq!(
            out[0],
            tt(
                DType::F32,
                &[Dim::Sym("batch".into()), f(64), f(112), f(112)]
            )
        );
        // symbolic spatial size: unknown output size
        let xs = tt(DType::F16, &[f(1), f(3), Dim::Sym("h".into()), f(8)]);
        let ws = tt(DType::F16, &[f(4), f(3), f(3), f(3)]);
        let out = run(Op::Conv, &Attrs::new(), &[Some(&xs), Some(&ws)]).unwrap();
        assert_eq!(
            out[0],
            tt(DType::F16, &[f(1), f(4), unknown_dim(Op::Conv), f(6)])
        );
        // channel mismatch, dtype mismatch, wrong bias
        let w2 = tt(DType::F32, &[f(64), f(2), f(7), f(7)]);
        assert!(run(Op::Conv, &a, &[Some(&x), Some(&w2)]).is_err());
        let wd = tt(DType::F64, &[f(64), f(3), f(7), f(7)]);
        assert!(run(Op::Conv, &a, &[Some(&x), Some(&wd)]).is_err());
        let b2 = tt(DType::F32, &[f(32)]);
        assert!(run(Op::Conv, &a, &[Some(&x), Some(&w), Some(&b2)]).is_err());
    }

    #[test]
    fn conv_transpose_and_integer_shapes() {
        let x = tt(DType::F32, &[f(1), f(4), f(3), f(3)]);
        let w = tt(DType::F32, &[f(4), f(3), f(3), f(3)]);
        let a = Attrs::new()
            .with("group", Attr::Int(2))
            .with("strides", Attr::Ints(vec![2, 2]));
        let out = run(Op::ConvTranspose, &a, &[Some(&x), Some(&w)]).unwrap();
        assert_eq!(out[0], tt(DType::F32, &[f(1), f(6), f(7), f(7)]));
        let xi = tt(DType::U8, &[f(1), f(1), f(3), f(3)]);
        let wi = tt(DType::I8, &[f(2), f(1), f(2), f(2)]);
        let out = run(Op::ConvInteger, &Attrs::new(), &[Some(&xi), Some(&wi)]).unwrap();
        assert_eq!(out[0], tt(DType::I32, &[f(1), f(2), f(2), f(2)]));
        let s = tt(DType::F32, &[]);
        let xz = tt(DType::U8, &[]);
        let wz = tt(DType::I8, &[]);
        let yz = tt(DType::I8, &[]);
        let q = [
            Some(&xi),
            Some(&s),
            Some(&xz),
            Some(&wi),
            Some(&s),
            Some(&wz),
            Some(&s),
            Some(&yz),
        ];
        let out = run(Op::QLinearConv, &Attrs::new(), &q).unwrap();
        assert_eq!(out[0], tt(DType::I8, &[f(1), f(2), f(2), f(2)]));
    }

    #[test]
    fn agrees_with_the_interpreter() {
        let x = Tensor::zeros(DType::F32, vec![2, 4, 9, 7]);
        let w = Tensor::zeros(DType::F32, vec![6, 2, 3, 2]);
        let a = Attrs::new()
            .with("group", Attr::Int(2))
            .with("strides", Attr::Ints(vec![2, 3]))
            .with("dilations", Attr::Ints(vec![2, 1]))
            .with("auto_pad", Attr::Str("SAME_LOWER".into()));
        let y = crate::interp::eval_op(Op::Conv, &a, &[Some(&x), Some(&w)], 1).unwrap();
        let out = run(Op::Conv, &a, &[Some(&x.ty()), Some(&w.ty())]).unwrap();
        assert_eq!(out[0], y[0].ty());
        let wt = Tensor::zeros(DType::F32, vec![4, 3, 3, 2]);
        let a = a.with("output_padding", Attr::Ints(vec![1, 0]));
        let y = crate::interp::eval_op(Op::ConvTranspose, &a, &[Some(&x), Some(&wt)], 1).unwrap();
        let out = run(Op::ConvTranspose, &a, &[Some(&x.ty()), Some(&wt.ty())]).unwrap();
        assert_eq!(out[0], y[0].ty());
    }
}
