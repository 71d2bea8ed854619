//! Interpreter for the ops that compute or materialise shapes and index
//! ranges: Shape, Size, ConstantOfShape, Range, EyeLike.

use super::movement::{ints_of, to_i64};
use crate::interp::util::input;
use crate::{Attrs, DType, Data, Element, Error, Op, Result, Tensor};

pub(crate) fn eval(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    _n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let out = match op {
        Op::Shape => {
            let x = input(op, inputs, 0)?;
            let (s, e) = shape_range(attrs, x.rank())?;
            let dims: Vec<i64> = x.shape()[s..e].iter().map(|&d| to_i64(d)).collect();
            Tensor::from_vec(vec![dims.len()], dims)?
        }
        Op::Size => Tensor::scalar(to_i64(input(op, inputs, 0)?.numel())),
        Op::ConstantOfShape => constant_of_shape(attrs, input(op, inputs, 0)?)?,
        Op::Range => range(attrs, inputs)?,
        Op::EyeLike => eye_like(attrs, input(op, inputs, 0)?)?,
        _ => return Err(Error::invalid(format!("{op} is not a shape op"))),
    };
    Ok(vec![out])
}

/// The `[start, end)` range of axes that Shape returns: negative values count
/// from the end, then both clamp to `[0, rank]`; `start > end` is empty.
pub(crate) fn shape_range(attrs: &Attrs, rank: usize) -> Result<(usize, usize)> {
    let r = to_i64(rank);
    let clamp = |a: i64| (if a < 0 { a.saturating_add(r) } else { a }).clamp(0, r) as usize;
    let s = clamp(attrs.int_or("start", 0)?);
    let e = clamp(attrs.int_or("end", r)?);
    Ok((s, e.max(s)))
}

/// ConstantOfShape's fill: the one-element `value` attribute (default f32 zero).
pub(crate) fn constant_of_shape_value(attrs: &Attrs) -> Result<Tensor> {
    match attrs.tensor("value")? {
        None => Ok(Tensor::scalar(0.0f32)),
        Some(t) if t.numel() == 1 => Ok(t.clone()),
        Some(t) => Err(Error::Attr {
            attr: "value".into(),
            msg: format!(
                "ConstantOfShape value must have one element, found {}",
                t.ty()
            ),
        }),
    }
}

/// A shape operand's values as dimensions (each must be non-negative).
pub(crate) fn dims_from_values(op: Op, vals: &[i64]) -> Result<Vec<usize>> {
    vals.iter()
        .map(|&v| {
            usize::try_from(v).map_err(|_| {
                Error::invalid(format!("{op}: shape {vals:?} has a negative dimension {v}"))
            })
        })
        .collect()
}

fn constant_of_shape(attrs: &Attrs, shape: &Tensor) -> Result<Tensor> {
    let op = Op::ConstantOfShape;
    if shape.rank() != 1 {
        return Err(Error::invalid(format!(
            "{op}: the shape must be 1-D, found {}",
            shape.ty()
        )));
    }
    let dims = dims_from_values(op, &ints_of(op, shape, "input")?)?;
    let value = constant_of_shape_value(attrs)?;
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n as f64 <= MAX_RANGE);
    let n = n.ok_or_else(|| Error::invalid(format!("{op}: shape {dims:?} is too large")))?;
    let data = crate::map_data!(value.data(), v => vec![v[0]; n]);
    Tensor::new(dims, data)
}

/// The single element of a Range operand.
fn scalar_of<T: Element>(op: Op, t: &Tensor, what: &str) -> Result<T> {
    match t.as_slice::<T>() {
        Some([x]) => Ok(*x),
        _ => Err(Error::invalid(format!(
            "{op}: `{what}` must be one {} element, found {}",
            T::DTYPE,
            t.ty()
        ))),
    }
}

/// `start, start + delta, ...` below `limit` (above it for a negative delta),
/// `max(ceil((limit - start) / delta), 0)` elements. Integers are exact;
/// floats compute in f64 (f16 and bf16 in f32 with `stash_type` 1, as ONNX says).
fn range(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Range;
    let s = input(op, inputs, 0)?;
    let l = input(op, inputs, 1)?;
    let d = input(op, inputs, 2)?;
    let dtype = s.dtype();
    if l.dtype() != dtype || d.dtype() != dtype {
        return Err(Error::invalid(format!(
            "{op}: start, limit and delta must share a type, found {}, {}, {}",
            s.dtype(),
            l.dtype(),
            d.dtype()
        )));
    }
    fn ints<T: Element + Into<i128> + TryFrom<i128>>(
        s: &Tensor,
        l: &Tensor,
        d: &Tensor,
    ) -> Result<Data> {
        let op = Op::Range;
        let (s, l, d): (i128, i128, i128) = (
            scalar_of::<T>(op, s, "start")?.into(),
            scalar_of::<T>(op, l, "limit")?.into(),
            scalar_of::<T>(op, d, "delta")?.into(),
        );
        if d == 0 {
            return Err(Error::invalid(format!("{op}: delta must not be zero")));
        }
        let diff = l - s;
        let n = if d > 0 {
            (diff + d - 1).div_euclid(d)
        } else {
            (-diff - d - 1).div_euclid(-d)
        };
        let n = range_len(n.max(0) as f64)?;
        let v: Vec<T> = (0..n)
            .map(|i| T::try_from(s + i as i128 * d).ok())
            .collect::<Option<_>>()
            .ok_or_else(|| Error::invalid(format!("{op}: a value does not fit the type")))?;
        Ok(T::wrap(v))
    }
    fn floats<T: Element>(s: &Tensor, l: &Tensor, d: &Tensor, f32_steps: bool) -> Result<Data> {
        let op = Op::Range;
        let (s, l, d) = (
            scalar_of::<T>(op, s, "start")?.to_f64(),
            scalar_of::<T>(op, l, "limit")?.to_f64(),
            scalar_of::<T>(op, d, "delta")?.to_f64(),
        );
        if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
            return Err(Error::invalid(format!(
                "{op}: start {s}, limit {l} and delta {d} must be finite, delta non-zero"
            )));
        }
        let n = range_len(((l - s) / d).ceil().max(0.0))?;
        let v = (0..n).map(|i| {
            if f32_steps {
                T::from_f64((s as f32 + i as f32 * d as f32) as f64)
            } else {
                T::from_f64(s + i as f64 * d)
            }
        });
        Ok(T::wrap(v.collect()))
    }
    let stash = attrs.int_or("stash_type", 1)?;
    let data = match dtype {
        DType::F32 => floats::<f32>(s, l, d, false)?,
        DType::F64 => floats::<f64>(s, l, d, false)?,
        DType::F16 => floats::<half::f16>(s, l, d, stash == 1)?,
        DType::BF16 => floats::<half::bf16>(s, l, d, stash == 1)?,
        DType::I8 => ints::<i8>(s, l, d)?,
        DType::U8 => ints::<u8>(s, l, d)?,
        DType::I16 => ints::<i16>(s, l, d)?,
        DType::U16 => ints::<u16>(s, l, d)?,
        DType::I32 => ints::<i32>(s, l, d)?,
        DType::U32 => ints::<u32>(s, l, d)?,
        DType::I64 => ints::<i64>(s, l, d)?,
        DType::U64 => ints::<u64>(s, l, d)?,
        DType::Bool => return Err(Error::invalid(format!("{op}: bool ranges are not defined"))),
    };
    Tensor::new(vec![data.len()], data)
}

/// The number of elements `Range(start, limit, delta)` produces, computed
/// from the scalars alone (so inference never materialises the range): the
/// same arithmetic as [`range`], exact for integers, `ceil((limit - start) / delta)`
/// for floats. Errors as `range` does (zero delta, non-finite values, too many elements).
pub(crate) fn range_len_of(start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<usize> {
    let op = Op::Range;
    let one = |t: &Tensor, what: &str| -> Result<f64> {
        match t.to_f64_vec().as_slice() {
            [x] => Ok(*x),
            _ => Err(Error::invalid(format!("{op}: {what} must be a scalar, found {}", t.ty()))),
        }
    };
    if start.dtype().is_int() {
        let int = |t: &Tensor, what: &str| -> Result<i128> {
            match t.to_i64_vec()?.as_slice() {
                [x] if t.dtype() == DType::U64 => Ok(*x as u64 as i128),
                [x] => Ok(*x as i128),
                _ => Err(Error::invalid(format!("{op}: {what} must be a scalar, found {}", t.ty()))),
            }
        };
        let (s, l, d) = (int(start, "start")?, int(limit, "limit")?, int(delta, "delta")?);
        if d == 0 {
            return Err(Error::invalid(format!("{op}: delta must not be zero")));
        }
        let diff = l - s;
        let n = if d > 0 { (diff + d - 1).div_euclid(d) } else { (-diff - d - 1).div_euclid(-d) };
        return range_len(n.max(0) as f64);
    }
    let (s, l, d) = (one(start, "start")?, one(limit, "limit")?, one(delta, "delta")?);
    if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
        return Err(Error::invalid(format!(
            "{op}: start {s}, limit {l} and delta {d} must be finite, delta non-zero"
        )));
    }
    range_len(((l - s) / d).ceil().max(0.0))
}

/// Largest tensor Range and ConstantOfShape will build.
const MAX_RANGE: f64 = super::movement::MAX_ELEMENTS as f64;

fn range_len(n: f64) -> Result<usize> {
    if n > MAX_RANGE {
        return Err(Error::invalid(format!("Range: {n} elements is too many")));
    }
    Ok(n as usize)
}

fn eye_like(attrs: &Attrs, x: &Tensor) -> Result<Tensor> {
    let op = Op::EyeLike;
    let dtype = eye_like_dtype(attrs, x.dtype())?;
    let &[n, m] = x.shape() else {
        return Err(Error::invalid(format!(
            "{op}: input must be 2-D, found {}",
            x.ty()
        )));
    };
    let k = attrs.int_or("k", 0)? as i128;
    let vals: Vec<f64> = (0..n * m)
        .map(|p| {
            if (p % m) as i128 - (p / m) as i128 == k {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_f64s(dtype, vec![n, m], &vals)
}

/// EyeLike's output dtype: the `dtype` attribute (an ONNX code), else the input's.
pub(crate) fn eye_like_dtype(attrs: &Attrs, input: DType) -> Result<DType> {
    match attrs.int("dtype")? {
        None => Ok(input),
        Some(c) => i32::try_from(c)
            .ok()
            .and_then(DType::from_onnx_code)
            .ok_or_else(|| Error::Attr {
                attr: "dtype".into(),
                msg: format!("EyeLike cannot produce ONNX type {c}"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: Op, attrs: &Attrs, inputs: &[&Tensor]) -> Result<Tensor> {
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|&t| Some(t)).collect();
        eval(op, attrs, &inputs, 1).map(|mut v| v.remove(0))
    }

    #[test]
    fn shape_clamps_start_and_end() {
        let x = Tensor::zeros(DType::F32, vec![2, 3, 4]);
        let a = |s: i64, e: i64| {
            Attrs::new()
                .with("start", crate::Attr::Int(s))
                .with("end", crate::Attr::Int(e))
        };
        let y = run(Op::Shape, &a(-1, 10), &[&x]).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[4]);
        let y = run(Op::Shape, &a(-10, -1), &[&x]).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[2, 3]);
        let y = run(Op::Shape, &a(2, 1), &[&x]).unwrap();
        assert_eq!(y.shape(), &[0]);
    }

    #[test]
    fn range_counts_like_onnx() {
        let s = |v: i32| Tensor::scalar(v);
        let y = run(Op::Range, &Attrs::new(), &[&s(10), &s(4), &s(-3)]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[10, 7]);
        let y = run(Op::Range, &Attrs::new(), &[&s(0), &s(-3), &s(1)]).unwrap();
        assert_eq!(y.shape(), &[0]);
        let f = |v: f32| Tensor::scalar(v);
        let y = run(Op::Range, &Attrs::new(), &[&f(1.0), &f(5.0), &f(2.0)]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 3.0]);
        assert!(run(Op::Range, &Attrs::new(), &[&s(0), &s(3), &s(0)]).is_err());
        let u = |v: u64| Tensor::scalar(v);
        let y = run(
            Op::Range,
            &Attrs::new(),
            &[&u(u64::MAX - 2), &u(u64::MAX), &u(1)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<u64>().unwrap(), &[u64::MAX - 2, u64::MAX - 1]);
    }

    #[test]
    fn constant_of_shape_and_eye_like() {
        let shape = Tensor::from_vec(vec![2], vec![2i64, 3]).unwrap();
        let a = Attrs::new().with("value", crate::Attr::Tensor(Tensor::scalar(7i32)));
        let y = run(Op::ConstantOfShape, &a, &[&shape]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[7; 6]);
        let empty = Tensor::from_vec(vec![0], Vec::<i64>::new()).unwrap();
        let y = run(Op::ConstantOfShape, &Attrs::new(), &[&empty]).unwrap();
        assert_eq!(y, Tensor::scalar(0.0f32));
        let x = Tensor::zeros(DType::I32, vec![2, 3]);
        let a = Attrs::new()
            .with("k", crate::Attr::Int(1))
            .with("dtype", crate::Attr::Int(11));
        let y = run(Op::EyeLike, &a, &[&x]).unwrap();
        assert_eq!(y.as_slice::<f64>().unwrap(), &[0., 1., 0., 0., 0., 1.]);
    }
}
