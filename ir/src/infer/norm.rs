//! Shape and dtype inference for the Normalization class. Every output has
//! the input's type, except LayerNormalization's optional Mean and InvStdDev:
//! the input's leading dimensions up to `axis`, then 1s, in `stash_type`'s
//! dtype (f32 by default).

use super::util::{operand, ty};
use super::Operand;
use crate::interp::norm::stash_dtype;
use crate::interp::util::{norm_axes, norm_axis};
use crate::{Attrs, Dim, Error, Op, Result, Shape, TensorType};

pub(crate) fn infer(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let x = operand(op, inputs, 0)?.ty;
    if !x.dtype.is_float() {
        return Err(Error::invalid(format!(
            "{op}: input 0 must be a float tensor, found {x}"
        )));
    }
    if op == Op::BatchNormalization && attrs.int_or("training_mode", 0)? != 0 {
        return Err(Error::unsupported(
            "BatchNormalization with training_mode=1 (only inference mode is supported)",
        ));
    }
    let rank = x.shape.rank();
    let channels = || {
        if rank < 2 {
            return Err(Error::invalid(format!(
                "{op}: input must have rank >= 2, got {x}"
            )));
        }
        Ok(())
    };
    match op {
        Op::Softmax | Op::LogSoftmax | Op::Hardmax | Op::LpNormalization => {
            norm_axis(op, attrs.int_or("axis", -1)?, rank)?;
        }
        Op::LayerNormalization => {
            operand(op, inputs, 1)?;
            let axis = norm_axis(op, attrs.int_or("axis", -1)?, rank)?;
            let stash = stash_dtype(attrs)?;
            let mut dims: Vec<Dim> = x.shape.0[..axis].to_vec();
            dims.resize(rank, Dim::Fixed(1));
            let stat = ty(stash, Shape(dims));
            let mut outs = vec![x.clone()];
            outs.extend(vec![stat; n_outputs - 1]);
            return Ok(outs);
        }
        Op::RMSNormalization => {
            operand(op, inputs, 1)?;
            norm_axis(op, attrs.int_or("axis", -1)?, rank)?;
            stash_dtype(attrs)?;
        }
        Op::BatchNormalization => {
            for i in 1..5 {
                operand(op, inputs, i)?;
            }
            if rank == 0 {
                return Err(Error::invalid(format!(
                    "{op}: input must have rank >= 1, got {x}"
                )));
            }
        }
        Op::InstanceNormalization => {
            operand(op, inputs, 2)?;
            channels()?;
        }
        Op::GroupNormalization => {
            operand(op, inputs, 2)?;
            channels()?;
            stash_dtype(attrs)?;
            let g = attrs.int("num_groups")?.ok_or_else(|| Error::Attr {
                attr: "num_groups".into(),
                msg: "GroupNormalization requires it".into(),
            })?;
            let c = x.shape.0[1].fixed();
            if g <= 0 || c.is_some_and(|c| c % g as usize != 0) {
                return Err(Error::invalid(format!(
                    "{op}: num_groups {g} must be positive and divide the channel count of {x}"
                )));
            }
        }
        Op::MeanVarianceNormalization => {
            norm_axes(op, attrs.ints("axes")?.unwrap_or(&[0, 2, 3]), rank)?;
        }
        _ => {
            return Err(Error::unsupported(format!(
                "{op} is not a Normalization op"
            )))
        }
    }
    Ok(vec![x.clone()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attr, DType};

    fn op(t: &TensorType) -> Option<Operand<'_>> {
        Some(Operand { ty: t, value: None })
    }

    #[test]
    fn layer_norm_statistics_types() {
        let x = TensorType {
            dtype: DType::F16,
            shape: Shape(vec![Dim::Sym("b".into()), 4.into(), 8.into()]),
        };
        let s = TensorType::new(DType::F16, vec![8]);
        let attrs = Attrs::new().with("axis", Attr::Int(1));
        let out = infer(Op::LayerNormalization, &attrs, &[op(&x), op(&s)], 3).unwrap();
        assert_eq!(out[0], x);
        let stat = TensorType {
            dtype: DType::F32,
            shape: Shape(vec![Dim::Sym("b".into()), 1.into(), 1.into()]),
        };
        assert_eq!(out[1], stat);
        assert_eq!(out[2], stat);
        assert!(infer(
            Op::Softmax,
            &Attrs::new().with("axis", Attr::Int(3)),
            &[op(&x)],
            1
        )
        .is_err());
        let i = TensorType::new(DType::I32, vec![2]);
        assert!(infer(Op::Softmax, &Attrs::new(), &[op(&i)], 1).is_err());
    }
}
