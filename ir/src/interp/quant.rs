//! Interpreter for the Quantization class: QuantizeLinear, DequantizeLinear
//! and DynamicQuantizeLinear.
//!
//! Scales and zero points are per tensor (one element), per axis (1-D, the
//! length of `axis`) or blocked (`block_size` > 0: the input's shape with the
//! `axis` dimension divided by the block size, rounded up).
//!
//! QuantizeLinear divides in the precision named by `precision` (else the
//! scale's dtype): f16 and bf16 division is emulated exactly by rounding the
//! f32 quotient of the rounded operands. It then rounds half to even, adds the
//! zero point and saturates to the target range (u8, i8, u16, i16; the 2- and
//! 4-bit and float8 targets are unsupported). +inf saturates high, -inf low,
//! and NaN goes to the low end of the range, as ONNX's reference does on x86.
//! DequantizeLinear computes `(x - zero_point) * scale` in f32 and rounds once
//! to the output dtype, like the reference.

use super::util::{input, norm_axis, opt_input};
use crate::{Attrs, DType, Error, Op, Result, Tensor};

pub(crate) fn eval(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
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
    match op {
        Op::QuantizeLinear => Ok(vec![quantize(attrs, inputs)?]),
        Op::DequantizeLinear => Ok(vec![dequantize(attrs, inputs)?]),
        Op::DynamicQuantizeLinear => dynamic_quantize(input(op, inputs, 0)?),
        _ => Err(Error::unsupported(format!("{op} is not a Quantization op"))),
    }
}

/// A dtype from an ONNX type-code attribute, or an error naming the type.
pub(crate) fn dtype_attr(op: Op, attr: &str, code: i64) -> Result<DType> {
    i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx_code)
        .ok_or_else(|| {
            let name = i32::try_from(code).map_or("unknown", DType::onnx_code_name);
            Error::unsupported(format!(
                "{op}: {attr} = {code} ({name}) is not a type kiln supports"
            ))
        })
}

/// QuantizeLinear's output dtype: the zero point's, else `output_dtype`, else u8.
pub(crate) fn quantize_output_dtype(attrs: &Attrs, zero_point: Option<DType>) -> Result<DType> {
    let op = Op::QuantizeLinear;
    let code = attrs.int_or("output_dtype", 0)?;
    let attr = if code != 0 {
        Some(dtype_attr(op, "output_dtype", code)?)
    } else {
        None
    };
    let dtype = match (zero_point, attr) {
        (Some(z), Some(a)) if z != a => {
            return Err(Error::invalid(format!(
                "{op}: output_dtype is {a} but the zero point is {z}; they must agree"
            )))
        }
        (Some(z), _) => z,
        (None, Some(a)) => a,
        (None, None) => DType::U8,
    };
    match dtype {
        DType::U8 | DType::I8 | DType::U16 | DType::I16 => Ok(dtype),
        d => Err(Error::unsupported(format!(
            "{op}: quantizing to {d} (supported: u8, i8, u16, i16)"
        ))),
    }
}

/// DequantizeLinear's output dtype: `output_dtype`, else the scale's.
pub(crate) fn dequantize_output_dtype(attrs: &Attrs, scale: DType) -> Result<DType> {
    let op = Op::DequantizeLinear;
    let code = attrs.int_or("output_dtype", 0)?;
    let dtype = if code != 0 {
        dtype_attr(op, "output_dtype", code)?
    } else {
        scale
    };
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(dtype),
        d => Err(Error::invalid(format!(
            "{op}: output type {d} must be float, float16 or bfloat16"
        ))),
    }
}

/// For each element of `x_shape`, the index of its scale (and zero point)
/// in a parameter of shape `p`.
pub(crate) fn param_indices(
    op: Op,
    x_shape: &[usize],
    p: &[usize],
    axis: i64,
    block_size: i64,
) -> Result<Vec<usize>> {
    let n: usize = x_shape.iter().product();
    if p.iter().product::<usize>() == 1 {
        return Ok(vec![0; n]);
    }
    let ax = norm_axis(op, axis, x_shape.len())?;
    let d = x_shape[ax];
    let inner: usize = x_shape[ax + 1..].iter().product();
    let bad = || {
        Error::invalid(format!(
            "{op}: scale shape {p:?} fits neither per-axis (axis {axis}) nor blocked \
             (block_size {block_size}) quantization of an input of shape {x_shape:?}"
        ))
    };
    if block_size < 0 {
        return Err(Error::Attr {
            attr: "block_size".into(),
            msg: format!("must be >= 0, got {block_size}"),
        });
    }
    if block_size == 0 {
        if p != [d] {
            return Err(bad());
        }
        return Ok((0..n).map(|e| (e / inner.max(1)) % d.max(1)).collect());
    }
    let b = block_size as usize;
    let s = d.div_ceil(b);
    let ok = p.len() == x_shape.len()
        && p.iter()
            .zip(x_shape)
            .enumerate()
            .all(|(i, (&pd, &xd))| if i == ax { pd == s } else { pd == xd });
    if !ok {
        return Err(bad());
    }
    // element (o, a, r) -> parameter (o, a / b, r)
    let mut idx = Vec::with_capacity(n);
    for e in 0..n {
        let r = e % inner.max(1);
        let a = (e / inner.max(1)) % d.max(1);
        let o = e / (inner * d).max(1);
        idx.push((o * s + a / b) * inner + r);
    }
    Ok(idx)
}

/// Checks that the zero point has the scale's shape.
fn check_zero_point(op: Op, scale: &Tensor, zp: Option<&Tensor>) -> Result<()> {
    match zp {
        Some(z) if z.shape() != scale.shape() => Err(Error::invalid(format!(
            "{op}: the zero point's shape {:?} differs from the scale's {:?}",
            z.shape(),
            scale.shape()
        ))),
        _ => Ok(()),
    }
}

fn quantize(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::QuantizeLinear;
    let x = input(op, inputs, 0)?;
    let scale = input(op, inputs, 1)?;
    let zp = opt_input(inputs, 2);
    let out = quantize_output_dtype(attrs, zp.map(Tensor::dtype))?;
    if !(x.dtype().is_float() || x.dtype() == DType::I32) {
        return Err(Error::invalid(format!(
            "{op}: x must be float or int32, found {}",
            x.dtype()
        )));
    }
    check_zero_point(op, scale, zp)?;
    let idx = param_indices(
        op,
        x.shape(),
        scale.shape(),
        attrs.int_or("axis", 1)?,
        attrs.int_or("block_size", 0)?,
    )?;
    let precision = match attrs.int_or("precision", 0)? {
        0 => scale.dtype(),
        code => dtype_attr(op, "precision", code)?,
    };
    let (lo, hi) = match out {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        _ => (-32768.0, 32767.0),
    };
    let xs = x.to_f64_vec();
    let ss = scale.to_f64_vec();
    let zs = match zp {
        Some(z) => z.to_f64_vec(),
        None => vec![0.0; ss.len()],
    };
    let vals: Vec<f64> = xs
        .iter()
        .zip(&idx)
        .map(|(&v, &i)| {
            let q = divide(v, ss[i], precision);
            if q.is_nan() {
                lo
            } else {
                (q.round_ties_even() + zs[i]).clamp(lo, hi)
            }
        })
        .collect();
    Tensor::from_f64s(out, x.shape().to_vec(), &vals)
}

/// `x / s` in `precision` (f64 for anything but f32, f16 and bf16).
fn divide(x: f64, s: f64, precision: DType) -> f64 {
    use half::{bf16, f16};
    match precision {
        DType::F32 => (x as f32 / s as f32) as f64,
        DType::F16 => {
            let r = |v: f32| f16::from_f32(v).to_f32();
            r(r(x as f32) / r(s as f32)) as f64
        }
        DType::BF16 => {
            let r = |v: f32| bf16::from_f32(v).to_f32();
            r(r(x as f32) / r(s as f32)) as f64
        }
        _ => x / s,
    }
}

fn dequantize(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::DequantizeLinear;
    let x = input(op, inputs, 0)?;
    let scale = input(op, inputs, 1)?;
    let zp = opt_input(inputs, 2);
    if !matches!(
        x.dtype(),
        DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::I32
    ) {
        return Err(Error::unsupported(format!(
            "{op}: dequantizing {} (supported: i8, u8, i16, u16, i32)",
            x.dtype()
        )));
    }
    if let Some(z) = zp {
        if z.dtype() != x.dtype() {
            return Err(Error::invalid(format!(
                "{op}: the zero point is {} but x is {}; they must agree",
                z.dtype(),
                x.dtype()
            )));
        }
    }
    let out = dequantize_output_dtype(attrs, scale.dtype())?;
    check_zero_point(op, scale, zp)?;
    let idx = param_indices(
        op,
        x.shape(),
        scale.shape(),
        attrs.int_or("axis", 1)?,
        attrs.int_or("block_size", 0)?,
    )?;
    let xs = x.to_f64_vec();
    let ss = scale.to_f64_vec();
    let zs = match zp {
        Some(z) => z.to_f64_vec(),
        None => vec![0.0; ss.len()],
    };
    let vals: Vec<f32> = xs
        .iter()
        .zip(&idx)
        .map(|(&v, &i)| (v as f32 - zs[i] as f32) * ss[i] as f32)
        .collect();
    use super::linalg::num::Real;
    f32::write(vals, out, x.shape().to_vec())
}

/// DynamicQuantizeLinear, step by step as the ONNX spec (and reference) do it, in f32.
fn dynamic_quantize(x: &Tensor) -> Result<Vec<Tensor>> {
    let op = Op::DynamicQuantizeLinear;
    let Some(xs) = x.as_slice::<f32>() else {
        return Err(Error::invalid(format!(
            "{op}: x must be float, found {}",
            x.dtype()
        )));
    };
    let (qmin, qmax) = (0.0f32, 255.0f32);
    let nan_max = |a: f32, b: f32| if a.is_nan() || a >= b { a } else { b };
    let nan_min = |a: f32, b: f32| if a.is_nan() || a <= b { a } else { b };
    let maxx = xs.iter().copied().fold(0.0f32, nan_max);
    let minx = xs.iter().copied().fold(0.0f32, nan_min);
    let scale = (if maxx == minx { 1.0 } else { maxx - minx }) / (qmax - qmin);
    let initial_zp = qmin - minx / scale;
    let zp = initial_zp.clamp(qmin, qmax).round_ties_even();
    let y: Vec<u8> = xs
        .iter()
        .map(|&v| ((v / scale).round_ties_even() + zp).clamp(qmin, qmax) as u8)
        .collect();
    Ok(vec![
        Tensor::from_vec(x.shape().to_vec(), y)?,
        Tensor::scalar(scale),
        Tensor::scalar(zp as u8),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;

    fn run(op: Op, attrs: Attrs, ins: &[&Tensor], n_out: usize) -> Result<Vec<Tensor>> {
        let ins: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        eval(op, &attrs, &ins, n_out)
    }

    fn f(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let x = f(&[8], &[0.5, 1.5, 2.5, -0.5, -1.5, 300., -300., f32::NAN]);
        let y = &run(
            Op::QuantizeLinear,
            Attrs::new(),
            &[&x, &Tensor::scalar(1.0f32)],
            1,
        )
        .unwrap()[0];
        assert_eq!(y.as_slice::<u8>().unwrap(), &[0, 2, 2, 0, 0, 255, 0, 0]);
        let zp = Tensor::scalar(-10i8);
        let y = &run(
            Op::QuantizeLinear,
            Attrs::new(),
            &[&x, &Tensor::scalar(1.0f32), &zp],
            1,
        )
        .unwrap()[0];
        assert_eq!(
            y.as_slice::<i8>().unwrap(),
            &[-10, -8, -8, -10, -12, 127, -128, -128]
        );
        let attrs = Attrs::new().with("output_dtype", Attr::Int(5));
        let y = &run(Op::QuantizeLinear, attrs, &[&x, &Tensor::scalar(0.5f32)], 1).unwrap()[0];
        assert_eq!(
            y.as_slice::<i16>().unwrap(),
            &[1, 3, 5, -1, -3, 600, -600, -32768]
        );
    }

    #[test]
    fn quantize_per_axis_matches_the_onnx_example() {
        // onnx backend test `quantizelinear_axis`
        let x = f(
            &[1, 3, 3, 2],
            &[
                -162., 10., -100., 232., -20., -50., -76., 0., 0., 252., 32., -44., 245., -485.,
                -960., -270., -375., -470.,
            ],
        );
        let s = f(&[3], &[2., 4., 5.]);
        let zp = Tensor::from_vec(vec![3], vec![84u8, 24, 196]).unwrap();
        let y = &run(Op::QuantizeLinear, Attrs::new(), &[&x, &s, &zp], 1).unwrap()[0];
        assert_eq!(
            y.as_slice::<u8>().unwrap(),
            &[3, 89, 34, 200, 74, 59, 5, 24, 24, 87, 32, 13, 245, 99, 4, 142, 121, 102]
        );
    }

    #[test]
    fn blocked_quantize_and_dequantize() {
        // x [2, 3], blocks of 2 along axis 1 -> scale [2, 2]
        let x = f(&[2, 3], &[2., 4., 6., 30., 60., 90.]);
        let s = f(&[2, 2], &[2., 3., 10., 30.]);
        let attrs = Attrs::new()
            .with("block_size", Attr::Int(2))
            .with("axis", Attr::Int(1));
        let y = &run(Op::QuantizeLinear, attrs.clone(), &[&x, &s], 1).unwrap()[0];
        assert_eq!(y.as_slice::<u8>().unwrap(), &[1, 2, 2, 3, 6, 3]);
        let back = &run(Op::DequantizeLinear, attrs.clone(), &[y, &s], 1).unwrap()[0];
        assert_eq!(back, &f(&[2, 3], &[2., 4., 6., 30., 60., 90.]));
        let bad = f(&[2, 1], &[1., 1.]);
        assert!(run(Op::QuantizeLinear, attrs, &[&x, &bad], 1).is_err());
    }

    #[test]
    fn dequantize_with_zero_point_and_output_dtype() {
        let x = Tensor::from_vec(vec![4], vec![0u8, 3, 128, 255]).unwrap();
        let zp = Tensor::scalar(128u8);
        let y = &run(
            Op::DequantizeLinear,
            Attrs::new(),
            &[&x, &Tensor::scalar(2.0f32), &zp],
            1,
        )
        .unwrap()[0];
        assert_eq!(y, &f(&[4], &[-256., -250., 0., 254.]));
        let attrs = Attrs::new().with("output_dtype", Attr::Int(10));
        let y = &run(
            Op::DequantizeLinear,
            attrs,
            &[&x, &Tensor::scalar(2.0f32), &zp],
            1,
        )
        .unwrap()[0];
        assert_eq!(y.dtype(), DType::F16);
        let wrong_zp = Tensor::scalar(1i8);
        assert!(run(
            Op::DequantizeLinear,
            Attrs::new(),
            &[&x, &Tensor::scalar(1.0f32), &wrong_zp],
            1
        )
        .is_err());
    }

    #[test]
    fn unsupported_targets_are_named() {
        let x = f(&[1], &[1.]);
        let attrs = Attrs::new().with("output_dtype", Attr::Int(22));
        let e = run(Op::QuantizeLinear, attrs, &[&x, &Tensor::scalar(1.0f32)], 1).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported(_)) && e.to_string().contains("INT4"),
            "{e}"
        );
    }

    #[test]
    fn dynamic_quantize_matches_the_onnx_example() {
        // onnx backend test `dynamicquantizelinear`
        let x = f(&[6], &[0., 2., -3., -2.5, 1.34, 0.5]);
        let y = run(Op::DynamicQuantizeLinear, Attrs::new(), &[&x], 3).unwrap();
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[153, 255, 0, 26, 221, 179]);
        assert_eq!(y[1], Tensor::scalar(5.0f32 / 255.0));
        assert_eq!(y[2], Tensor::scalar(153u8));
        // all-positive input: the range still includes 0, so the zero point is 0
        let x = f(&[3], &[1., 2., 3.]);
        let y = run(Op::DynamicQuantizeLinear, Attrs::new(), &[&x], 3).unwrap();
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[85, 170, 255]);
        assert_eq!(y[2], Tensor::scalar(0u8));
    }
}
