//! Shape and dtype inference for the Pool class (MaxPool, AveragePool,
//! LpPool, GlobalAveragePool, GlobalMaxPool), using the interpreter's window
//! geometry ([`crate::interp::window`]) so the two agree.
//!
//! Output: `[N, C, out...]` in X's dtype, `N` and `C` passed through, each
//! spatial size from the attributes where the input's is static (an unknown
//! `?<op>` dimension otherwise), all ones for the global pools. MaxPool's
//! optional second output (Indices) is i64 of the same shape.

use super::util::{operand, ty};
use super::{unknown_dim, Operand};
use crate::interp::window::{pool_axis, WindowAttrs};
use crate::{Attrs, DType, Dim, Error, Op, Result, Shape, TensorType};

pub(crate) fn infer(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let x = operand(op, inputs, 0)?;
    let dt = x.ty.dtype;
    if !(dt.is_float() || (op == Op::MaxPool && matches!(dt, DType::I8 | DType::U8))) {
        return Err(Error::invalid(format!(
            "{op}: unsupported input dtype {dt}"
        )));
    }
    let xs = &x.ty.shape;
    let global = matches!(op, Op::GlobalAveragePool | Op::GlobalMaxPool);
    if xs.rank() < if global { 2 } else { 3 } {
        return Err(Error::invalid(format!(
            "{op} needs an input of shape [N, C, spatial...], found {xs}"
        )));
    }
    let r = xs.rank() - 2;
    let mut dims = xs.0[..2].to_vec();
    if global {
        dims.extend(std::iter::repeat_n(Dim::Fixed(1), r));
    } else {
        let wa = WindowAttrs::read(op, attrs, r, None)?;
        let ceil_mode = attrs.int_or("ceil_mode", 0)? != 0;
        for i in 0..r {
            dims.push(match xs.0[i + 2].fixed() {
                Some(n) => Dim::Fixed(pool_axis(op, &wa, i, n, ceil_mode)?.output),
                None => unknown_dim(op),
            });
        }
    }
    if op == Op::MaxPool && !(0..=1).contains(&attrs.int_or("storage_order", 0)?) {
        return Err(Error::Attr {
            attr: "storage_order".into(),
            msg: format!("{op}: must be 0 or 1"),
        });
    }
    if op == Op::LpPool && attrs.int_or("p", 2)? < 1 {
        return Err(Error::Attr {
            attr: "p".into(),
            msg: format!("{op}: must be positive"),
        });
    }
    let shape = Shape(dims);
    let mut out = vec![ty(dt, shape.clone())];
    if n_outputs == 2 {
        out.push(ty(DType::I64, shape));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attr, Tensor};

    fn run(op: Op, attrs: &Attrs, x: &TensorType, n: usize) -> Result<Vec<TensorType>> {
        crate::infer::infer_op(op, attrs, &[Some(Operand { ty: x, value: None })], n)
    }

    #[test]
    fn pool_shapes() {
        let x = TensorType {
            dtype: DType::F32,
            shape: Shape(vec![
                Dim::Sym("n".into()),
                Dim::Fixed(64),
                Dim::Fixed(112),
                Dim::Fixed(112),
            ]),
        };
        let a = Attrs::new()
            .with("kernel_shape", Attr::Ints(vec![3, 3]))
            .with("strides", Attr::Ints(vec![2, 2]))
            .with("pads", Attr::Ints(vec![1, 1, 1, 1]));
        let out = run(Op::MaxPool, &a, &x, 2).unwrap();
        assert_eq!(out[0].shape.to_string(), "[n,64,56,56]");
        assert_eq!(out[1].dtype, DType::I64);
        let out = run(Op::GlobalAveragePool, &Attrs::new(), &x, 1).unwrap();
        assert_eq!(out[0].shape.to_string(), "[n,64,1,1]");
        assert!(run(Op::AveragePool, &a, &x, 2).is_err());
        assert!(
            run(Op::AveragePool, &Attrs::new(), &x, 1).is_err(),
            "kernel_shape is required"
        );
    }

    #[test]
    fn agrees_with_the_interpreter() {
        let x = Tensor::zeros(DType::F32, vec![1, 2, 7, 6, 5]);
        for (ceil, pad) in [
            (0, "NOTSET"),
            (1, "NOTSET"),
            (0, "SAME_UPPER"),
            (0, "VALID"),
        ] {
            let a = Attrs::new()
                .with("kernel_shape", Attr::Ints(vec![3, 2, 2]))
                .with("strides", Attr::Ints(vec![2, 3, 1]))
                .with("dilations", Attr::Ints(vec![1, 1, 2]))
                .with("pads", Attr::Ints(vec![1, 0, 1, 0, 1, 1]))
                .with("ceil_mode", Attr::Int(ceil))
                .with("auto_pad", Attr::Str(pad.into()));
            for op in [Op::MaxPool, Op::AveragePool, Op::LpPool] {
                let y = crate::interp::eval_op(op, &a, &[Some(&x)], 1).unwrap();
                assert_eq!(
                    run(op, &a, &x.ty(), 1).unwrap()[0],
                    y[0].ty(),
                    "{op} {ceil} {pad}"
                );
            }
        }
    }
}
