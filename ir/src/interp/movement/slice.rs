//! Slice(data, starts, ends, axes?, steps?): ONNX's clamping rules, negative
//! steps, and `INT_MAX` / `INT_MIN` ends meaning "to the end".

use super::{ints_of, strides, take};
use crate::interp::util::{input, norm_axes, opt_input};
use crate::{Error, Op, Result, Tensor};

/// One sliced axis: `(axis, start, end, step)` as given (unclamped).
pub(crate) type SliceAxis = (usize, i64, i64, i64);

/// Pairs Slice's operands up per axis: `axes` defaults to `0..starts.len()`,
/// `steps` to ones; lengths must agree, axes must be distinct and steps non-zero.
pub(crate) fn slice_spec(
    rank: usize,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<SliceAxis>> {
    let op = Op::Slice;
    let n = starts.len();
    let axes = match axes {
        Some(a) => norm_axes(op, a, rank)?,
        None => (0..n).collect(),
    };
    let steps = steps.map(<[i64]>::to_vec).unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(Error::invalid(format!(
            "{op}: starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} must have equal lengths"
        )));
    }
    if n > rank {
        return Err(Error::invalid(format!(
            "{op}: {n} sliced axes but the input has rank {rank}"
        )));
    }
    if steps.contains(&0) {
        return Err(Error::invalid(format!("{op}: steps {steps:?} contain 0")));
    }
    Ok((0..n)
        .map(|i| (axes[i], starts[i], ends[i], steps[i]))
        .collect())
}

/// The first index and element count of `start:end:step` on an axis of size
/// `dim`, after ONNX's clamping (negative values count from the end).
pub(crate) fn slice_range(dim: usize, start: i64, end: i64, step: i64) -> (usize, usize) {
    let d = dim as i128;
    let (mut s, mut e, st) = (start as i128, end as i128, step as i128);
    if s < 0 {
        s += d;
    }
    if e < 0 {
        e += d;
    }
    let len = if st > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        (e - s + st - 1).div_euclid(st)
    } else {
        s = s.max(0).min(d - 1);
        e = e.max(-1).min(d - 1);
        (s - e + (-st) - 1).div_euclid(-st)
    };
    if len <= 0 {
        (0, 0)
    } else {
        (s as usize, len as usize)
    }
}

pub(super) fn slice(inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Slice;
    let x = input(op, inputs, 0)?;
    let ints = |i: usize, what: &str| {
        opt_input(inputs, i)
            .map(|t| ints_of(op, t, what))
            .transpose()
    };
    let starts = ints_of(op, input(op, inputs, 1)?, "starts")?;
    let ends = ints_of(op, input(op, inputs, 2)?, "ends")?;
    let axes = ints(3, "axes")?;
    let steps = ints(4, "steps")?;
    let spec = slice_spec(x.rank(), &starts, &ends, axes.as_deref(), steps.as_deref())?;
    let st = strides(x.shape());
    let mut tables: Vec<Vec<usize>> = x
        .shape()
        .iter()
        .zip(&st)
        .map(|(&d, &s)| (0..d).map(|c| c * s).collect())
        .collect();
    let mut out = x.shape().to_vec();
    for (axis, start, end, step) in spec {
        let (first, len) = slice_range(x.shape()[axis], start, end, step);
        out[axis] = len;
        tables[axis] = (0..len)
            .map(|i| (first as i128 + i as i128 * step as i128) as usize * st[axis])
            .collect();
    }
    Tensor::new(out, take(x.data(), &super::index_product(&tables)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_clamp_like_onnx() {
        assert_eq!(slice_range(10, 1, 1000, 1), (1, 9));
        assert_eq!(slice_range(10, -3, i64::MAX, 1), (7, 3));
        assert_eq!(slice_range(10, 0, -1, 1), (0, 9));
        assert_eq!(slice_range(10, 1000, 1000, 1), (0, 0));
        assert_eq!(slice_range(10, 0, 10, 3), (0, 4)); // 0 3 6 9
                                                       // negative steps: start clamps to dim-1, end to -1
        assert_eq!(slice_range(10, -1, i64::MIN, -1), (9, 10));
        assert_eq!(slice_range(10, 20, 0, -3), (9, 3)); // 9 6 3
        assert_eq!(slice_range(4, -1, -1000, -1), (3, 4));
        assert_eq!(slice_range(0, 0, 10, 1), (0, 0));
        assert_eq!(slice_range(0, -1, i64::MIN, -1), (0, 0));
    }

    #[test]
    fn slice_reverses_with_negative_step() {
        let x = Tensor::from_vec(vec![2, 3], vec![0i64, 1, 2, 3, 4, 5]).unwrap();
        let t = |v: &[i64]| Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap();
        let (s, e, a, st) = (t(&[-1]), t(&[i64::MIN]), t(&[1]), t(&[-2]));
        let y = slice(&[Some(&x), Some(&s), Some(&e), Some(&a), Some(&st)]).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[2, 0, 5, 3]);
    }
}
