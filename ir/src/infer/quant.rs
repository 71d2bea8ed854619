//! Shape and dtype inference for the Quantization class. Outputs keep the
//! input's shape; QuantizeLinear's dtype is the zero point's (else
//! `output_dtype`, else u8), DequantizeLinear's is `output_dtype` (else the
//! scale's), and DynamicQuantizeLinear gives (u8 tensor, f32 scalar, u8 scalar).

use super::util::{operand, opt_operand, ty};
use super::Operand;
use crate::interp::quant::{dequantize_output_dtype, quantize_output_dtype};
use crate::{Attrs, DType, Error, Op, Result, Shape, TensorType};

pub(crate) fn infer(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let want = if op == Op::DynamicQuantizeLinear {
        3
    } else {
        1
    };
    if n_outputs != want {
        return Err(Error::invalid(format!(
            "{op} has {want} output(s) but the node has {n_outputs}"
        )));
    }
    let x = operand(op, inputs, 0)?.ty;
    match op {
        Op::QuantizeLinear => {
            operand(op, inputs, 1)?;
            let dtype = quantize_output_dtype(attrs, opt_operand(inputs, 2).map(|z| z.ty.dtype))?;
            if !(x.dtype.is_float() || x.dtype == DType::I32) {
                return Err(Error::invalid(format!(
                    "{op}: x must be float or int32, found {}",
                    x.dtype
                )));
            }
            Ok(vec![ty(dtype, x.shape.clone())])
        }
        Op::DequantizeLinear => {
            let scale = operand(op, inputs, 1)?.ty;
            if !matches!(
                x.dtype,
                DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::I32
            ) {
                return Err(Error::unsupported(format!(
                    "{op}: dequantizing {} (supported: i8, u8, i16, u16, i32)",
                    x.dtype
                )));
            }
            Ok(vec![ty(
                dequantize_output_dtype(attrs, scale.dtype)?,
                x.shape.clone(),
            )])
        }
        Op::DynamicQuantizeLinear => {
            if x.dtype != DType::F32 {
                return Err(Error::invalid(format!(
                    "{op}: x must be float, found {}",
                    x.dtype
                )));
            }
            Ok(vec![
                ty(DType::U8, x.shape.clone()),
                ty(DType::F32, Shape::scalar()),
                ty(DType::U8, Shape::scalar()),
            ])
        }
        _ => Err(Error::unsupported(format!("{op} is not a Quantization op"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;

    fn op(t: &TensorType) -> Option<Operand<'_>> {
        Some(Operand { ty: t, value: None })
    }

    #[test]
    fn output_types() {
        let x = TensorType::new(DType::F32, vec![2, 3]);
        let s = TensorType::new(DType::F16, vec![]);
        let z = TensorType::new(DType::I8, vec![]);
        let q = |attrs: &Attrs, ins: &[Option<Operand>]| infer(Op::QuantizeLinear, attrs, ins, 1);
        assert_eq!(
            q(&Attrs::new(), &[op(&x), op(&s)]).unwrap()[0].dtype,
            DType::U8
        );
        assert_eq!(
            q(&Attrs::new(), &[op(&x), op(&s), op(&z)]).unwrap()[0].dtype,
            DType::I8
        );
        let i16 = Attrs::new().with("output_dtype", Attr::Int(5));
        assert_eq!(q(&i16, &[op(&x), op(&s)]).unwrap()[0].dtype, DType::I16);
        assert!(
            q(&i16, &[op(&x), op(&s), op(&z)]).is_err(),
            "output_dtype and zero point disagree"
        );
        let int4 = Attrs::new().with("output_dtype", Attr::Int(22));
        assert!(matches!(
            q(&int4, &[op(&x), op(&s)]),
            Err(Error::Unsupported(_))
        ));
        let xq = TensorType::new(DType::I8, vec![2, 3]);
        let y = infer(Op::DequantizeLinear, &Attrs::new(), &[op(&xq), op(&s)], 1).unwrap();
        assert_eq!(y[0], TensorType::new(DType::F16, vec![2, 3]));
        let y = infer(Op::DynamicQuantizeLinear, &Attrs::new(), &[op(&x)], 3).unwrap();
        assert_eq!(y[1], TensorType::new(DType::F32, vec![]));
    }
}
