//! Integer matrix products: MatMulInteger and QLinearMatMul.
//!
//! Both subtract the zero points in i32, multiply with numpy matmul semantics
//! and accumulate in i32 (wrapping, as ONNX allows). Zero points and scales
//! are per tensor (one element), per row of A (a 1-D tensor of length M, or an
//! N-D tensor shaped `[..., M, 1]`) and per column of B (1-D of length N, or
//! `[..., 1, N]`), as the ONNX spec describes.
//!
//! QLinearMatMul then requantizes like ONNX's reference: the factor
//! `a_scale * b_scale / y_scale` is computed in f32, the product
//! `acc * factor + y_zero_point` in f64, rounded half to even and saturated to
//! the output type.

use super::{batched_matmul, matmul_dims};
use crate::interp::util::{broadcast_indices, input, opt_input};
use crate::{shape, DType, Error, Op, Result, Tensor};

fn check_int8(op: Op, t: &Tensor, what: &str) -> Result<()> {
    match t.dtype() {
        DType::U8 | DType::I8 => Ok(()),
        d => Err(Error::unsupported(format!(
            "{op}: {what} must be uint8 or int8, found {d}"
        ))),
    }
}

/// Indices broadcasting a quantization parameter of shape `p` onto `target`;
/// `row_axis` (for A's parameters) reads a 1-D parameter of length
/// `target[row_axis]` as one value per row.
fn param_indices(
    op: Op,
    what: &str,
    p: &[usize],
    target: &[usize],
    row_axis: Option<usize>,
) -> Result<Vec<usize>> {
    let n: usize = p.iter().product();
    if n == 1 {
        return Ok(vec![0; target.iter().product()]);
    }
    let mut shape = p.to_vec();
    if let (Some(ax), [len]) = (row_axis, p) {
        if target.get(ax) == Some(len) {
            // per row: [M] is [M, 1]
            shape = vec![*len, 1];
        }
    }
    if shape::broadcast_shapes(&shape, target).as_deref() != Some(target) {
        return Err(Error::invalid(format!(
            "{op}: {what} has shape {p:?}, which is neither per-tensor nor per-row/column for {target:?}"
        )));
    }
    Ok(broadcast_indices(&shape, target))
}

/// `x - zero_point` in i32, the zero point broadcast onto `x`.
fn centered(
    op: Op,
    x: &Tensor,
    zp: Option<&Tensor>,
    what: &str,
    per_row: bool,
) -> Result<Vec<i32>> {
    let v: Vec<i32> = x.to_i64_vec()?.into_iter().map(|a| a as i32).collect();
    let Some(zp) = zp else { return Ok(v) };
    if zp.dtype() != x.dtype() {
        return Err(Error::invalid(format!(
            "{op}: the zero point of {what} is {} but {what} is {}",
            zp.dtype(),
            x.dtype()
        )));
    }
    let row_axis = if per_row && x.rank() >= 2 {
        Some(x.rank() - 2)
    } else {
        None
    };
    let idx = param_indices(
        op,
        &format!("the zero point of {what}"),
        zp.shape(),
        x.shape(),
        row_axis,
    )?;
    let z: Vec<i64> = zp.to_i64_vec()?;
    Ok(v.into_iter()
        .zip(idx)
        .map(|(a, i)| a.wrapping_sub(z[i] as i32))
        .collect())
}

pub(super) fn matmul_integer(inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::MatMulInteger;
    let a = input(op, inputs, 0)?;
    let b = input(op, inputs, 1)?;
    check_int8(op, a, "A")?;
    check_int8(op, b, "B")?;
    let d = matmul_dims(op, a.shape(), b.shape())?;
    let x = centered(op, a, opt_input(inputs, 2), "A", true)?;
    let y = centered(op, b, opt_input(inputs, 3), "B", false)?;
    Tensor::from_vec(d.out_shape.clone(), batched_matmul(&d, &x, &y))
}

fn scale_values(op: Op, t: &Tensor, what: &str) -> Result<Vec<f32>> {
    if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::invalid(format!(
            "{op}: {what} must be float, float16 or bfloat16, found {}",
            t.dtype()
        )));
    }
    Ok(t.to_f64_vec().into_iter().map(|x| x as f32).collect())
}

pub(super) fn qlinear_matmul(inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::QLinearMatMul;
    let a = input(op, inputs, 0)?;
    let a_scale = input(op, inputs, 1)?;
    let b = input(op, inputs, 3)?;
    let b_scale = input(op, inputs, 4)?;
    let y_scale = input(op, inputs, 6)?;
    let y_zp = opt_input(inputs, 7);
    check_int8(op, a, "a")?;
    check_int8(op, b, "b")?;
    let out_dtype = y_zp.map_or(a.dtype(), |z| z.dtype());
    let (lo, hi) = match out_dtype {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        d => {
            return Err(Error::unsupported(format!(
                "{op}: output type {d} (expected uint8 or int8)"
            )))
        }
    };
    let d = matmul_dims(op, a.shape(), b.shape())?;
    let x = centered(op, a, opt_input(inputs, 2), "a", true)?;
    let y = centered(op, b, opt_input(inputs, 5), "b", false)?;
    let acc = batched_matmul(&d, &x, &y);

    let full = &d.full_shape;
    let row_axis = Some(full.len() - 2);
    let (sa, sb, sy) = (
        scale_values(op, a_scale, "a_scale")?,
        scale_values(op, b_scale, "b_scale")?,
        scale_values(op, y_scale, "y_scale")?,
    );
    let ia = param_indices(op, "a_scale", a_scale.shape(), full, row_axis)?;
    let ib = param_indices(op, "b_scale", b_scale.shape(), full, None)?;
    let iy = param_indices(op, "y_scale", y_scale.shape(), full, None)?;
    let (zy, iz) = match y_zp {
        Some(z) => (
            z.to_i64_vec()?,
            param_indices(op, "y_zero_point", z.shape(), full, None)?,
        ),
        None => (vec![0], vec![0; acc.len()]),
    };
    let vals: Vec<f64> = acc
        .iter()
        .enumerate()
        .map(|(e, &c)| {
            let factor = sa[ia[e]] * sb[ib[e]] / sy[iy[e]];
            let v = c as f64 * factor as f64 + zy[iz[e]] as f64;
            v.round_ties_even().clamp(lo, hi)
        })
        .collect();
    Tensor::from_f64s(out_dtype, d.out_shape.clone(), &vals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some<'a>(ts: &[&'a Tensor]) -> Vec<Option<&'a Tensor>> {
        ts.iter().map(|t| Some(*t)).collect()
    }

    #[test]
    fn matmul_integer_with_per_row_and_per_column_zero_points() {
        // A = [[11, 12], [13, 14]] - [10, 12] per row = [[1, 2], [1, 2]]
        let a = Tensor::from_vec(vec![2, 2], vec![11u8, 12, 13, 14]).unwrap();
        let azp = Tensor::from_vec(vec![2], vec![10u8, 12]).unwrap();
        // B = [[1, 2], [3, 4]] - [1, 2] per column = [[0, 0], [2, 2]]
        let b = Tensor::from_vec(vec![2, 2], vec![1i8, 2, 3, 4]).unwrap();
        let bzp = Tensor::from_vec(vec![2], vec![1i8, 2]).unwrap();
        let y = matmul_integer(&some(&[&a, &b, &azp, &bzp])).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[4, 4, 4, 4]);
        let y = matmul_integer(&some(&[&a, &b])).unwrap();
        // [[11*1+12*3, 11*2+12*4], [13+42, 26+56]]
        assert_eq!(y.as_slice::<i32>().unwrap(), &[47, 70, 55, 82]);
        let bad = Tensor::from_vec(vec![3], vec![0u8; 3]).unwrap();
        assert!(matmul_integer(&some(&[&a, &b, &bad])).is_err());
    }

    #[test]
    fn qlinear_matmul_rounds_half_even_and_saturates() {
        let s = |x: f32| Tensor::scalar(x);
        let a = Tensor::from_vec(vec![1, 2], vec![2u8, 3]).unwrap();
        let b = Tensor::from_vec(vec![2, 3], vec![1u8, 5, 200, 0, 0, 0]).unwrap();
        let zp = Tensor::scalar(0u8);
        // acc = [2, 10, 400]; factor 0.25 -> 0.5, 2.5, 100 -> 0, 2, 100; + zp 10
        let y = qlinear_matmul(&some(&[
            &a,
            &s(0.5),
            &zp,
            &b,
            &s(1.0),
            &zp,
            &s(2.0),
            &Tensor::scalar(10u8),
        ]))
        .unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[10, 12, 110]);
        assert_eq!(y.shape(), &[1, 3]);
        // i8 output saturates: 400 * 1 = 400 -> 127
        let y = qlinear_matmul(&some(&[
            &a,
            &s(1.0),
            &zp,
            &b,
            &s(1.0),
            &zp,
            &s(1.0),
            &Tensor::scalar(0i8),
        ]))
        .unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[2, 10, 127]);
    }
}
