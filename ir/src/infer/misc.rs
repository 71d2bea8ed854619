//! Shape and dtype inference for Resize, TopK and NonZero.

use super::movement::ints_value;
use super::util::{operand, opt_operand, ty};
use super::{unknown_dim, Operand};
use crate::interp::misc::{resize, top_k_k};
use crate::interp::util::norm_axis;
use crate::{Attrs, DType, Dim, Error, Op, Result, Shape, TensorType};

pub(crate) fn infer(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let x = operand(op, inputs, 0)?;
    let dims = &x.ty.shape.0;
    match op {
        Op::Resize => Ok(vec![ty(
            x.ty.dtype,
            Shape(resize_dims(attrs, inputs, dims)?),
        )]),
        Op::TopK => {
            let axis = norm_axis(op, attrs.int_or("axis", -1)?, dims.len())?;
            let k = match operand(op, inputs, 1)?.value {
                Some(k) => Dim::Fixed(top_k_k(k)?),
                None => unknown_dim(op),
            };
            if let (Dim::Fixed(k), Dim::Fixed(d)) = (&k, &dims[axis]) {
                if k > d {
                    return Err(Error::invalid(format!(
                        "{op}: K = {k} exceeds the axis size {d}"
                    )));
                }
            }
            let mut out = dims.clone();
            out[axis] = k;
            let mut tys = vec![
                ty(x.ty.dtype, Shape(out.clone())),
                ty(DType::I64, Shape(out)),
            ];
            tys.truncate(n_outputs.max(1));
            Ok(tys)
        }
        Op::NonZero => Ok(vec![ty(
            DType::I64,
            Shape(vec![Dim::Fixed(dims.len()), unknown_dim(op)]),
        )]),
        _ => Err(Error::invalid(format!("{op} is not a misc op"))),
    }
}

/// Whether an optional operand is given: present and not statically empty.
fn given<'a>(inputs: &[Option<Operand<'a>>], i: usize) -> Option<Operand<'a>> {
    opt_operand(inputs, i).filter(|o| o.ty.shape.numel() != Some(0))
}

fn resize_dims(attrs: &Attrs, inputs: &[Option<Operand>], dims: &[Dim]) -> Result<Vec<Dim>> {
    let op = Op::Resize;
    let axes = resize::resize_axes(attrs, dims.len())?;
    let policy = resize::aspect_policy(attrs)?;
    let scales = given(inputs, 2);
    let sizes = given(inputs, 3);
    let sizes_v = sizes
        .map(|o| ints_value(op, o, "sizes"))
        .transpose()?
        .flatten();
    let scales_v: Option<Vec<f32>> = match scales {
        Some(o) => match o.value {
            Some(t) => Some(
                t.as_slice::<f32>()
                    .ok_or_else(|| {
                        Error::invalid(format!("{op}: scales must be f32, found {}", t.ty()))
                    })?
                    .to_vec(),
            ),
            None => None,
        },
        None => None,
    };
    let target = match (scales.is_some(), sizes.is_some()) {
        (true, false) => scales_v.as_deref().map(resize::Target::Scales),
        (false, true) => sizes_v.as_deref().map(resize::Target::Sizes),
        _ => {
            return Err(Error::invalid(format!(
                "{op}: exactly one of scales and sizes must be given"
            )))
        }
    };
    let mut out = dims.to_vec();
    let Some(target) = target else {
        axes.iter().for_each(|&a| out[a] = unknown_dim(op));
        return Ok(out);
    };
    // Symbolic dimensions stand in as 1 and are fixed up below.
    let stand_in: Vec<usize> = dims.iter().map(|d| d.fixed().unwrap_or(1)).collect();
    let (scale, size) = resize::resize_plan(&stand_in, &axes, &target, policy)?;
    let all_fixed = axes.iter().all(|&a| dims[a].fixed().is_some());
    for &a in &axes {
        out[a] = match (&target, &dims[a]) {
            (resize::Target::Sizes(_), _) if policy == resize::AspectPolicy::Stretch => {
                Dim::Fixed(size[a])
            }
            (_, Dim::Fixed(_)) if all_fixed || matches!(target, resize::Target::Scales(_)) => {
                Dim::Fixed(size[a])
            }
            (resize::Target::Scales(_), d @ Dim::Sym(_)) if scale[a] == 1.0 => d.clone(),
            _ => unknown_dim(op),
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    #[test]
    fn resize_sizes_fix_the_shape_even_for_symbolic_inputs() {
        let x = ty(
            DType::F32,
            Shape(vec![
                Dim::Sym("n".into()),
                Dim::Fixed(3),
                Dim::Sym("h".into()),
            ]),
        );
        let sizes = Tensor::from_vec(vec![1], vec![8i64]).unwrap();
        let st = sizes.ty();
        let a = Attrs::new().with("axes", crate::Attr::Ints(vec![2]));
        let ins = [
            Some(Operand {
                ty: &x,
                value: None,
            }),
            None,
            None,
            Some(Operand {
                ty: &st,
                value: Some(&sizes),
            }),
        ];
        let out = infer(Op::Resize, &a, &ins, 1).unwrap();
        assert_eq!(
            out[0].shape.0,
            vec![Dim::Sym("n".into()), Dim::Fixed(3), Dim::Fixed(8)]
        );
        let scales = Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 2.0]).unwrap();
        let sc = scales.ty();
        let ins = [
            Some(Operand {
                ty: &x,
                value: None,
            }),
            None,
            Some(Operand {
                ty: &sc,
                value: Some(&scales),
            }),
        ];
        let out = infer(Op::Resize, &Attrs::new(), &ins, 1).unwrap();
        assert_eq!(
            out[0].shape.0,
            vec![Dim::Sym("n".into()), Dim::Fixed(6), unknown_dim(Op::Resize)]
        );
    }

    #[test]
    fn top_k_and_non_zero_types() {
        let x = TensorType::new(DType::F16, vec![4, 5]);
        let k = Tensor::from_vec(vec![1], vec![2i64]).unwrap();
        let kt = k.ty();
        let ins = [
            Some(Operand {
                ty: &x,
                value: None,
            }),
            Some(Operand {
                ty: &kt,
                value: Some(&k),
            }),
        ];
        let out = infer(Op::TopK, &Attrs::new(), &ins, 2).unwrap();
        assert_eq!(
            out,
            vec![
                TensorType::new(DType::F16, vec![4, 2]),
                TensorType::new(DType::I64, vec![4, 2])
            ]
        );
        let out = infer(Op::NonZero, &Attrs::new(), &ins[..1], 1).unwrap();
        assert_eq!(
            out[0].shape.0,
            vec![Dim::Fixed(2), unknown_dim(Op::NonZero)]
        );
    }
}
