//! Concat and Split: joining tensors along an axis and cutting one apart.
//! Both copy contiguous runs (`axis size × inner size` elements per outer
//! index), so they are fast on the large activations they usually see.

use super::to_i64;
use crate::interp::util::{input, norm_axis, opt_input};
use crate::{with_data, Attrs, Data, Element, Error, Op, Result, Tensor};

/// Concat's `axis` attribute, which ONNX requires.
pub(crate) fn concat_axis(attrs: &Attrs, rank: usize) -> Result<usize> {
    let axis = attrs.int("axis")?.ok_or_else(|| Error::Attr {
        attr: "axis".into(),
        msg: "Concat needs it".into(),
    })?;
    norm_axis(Op::Concat, axis, rank)
}

/// Split's part sizes along an axis of size `dim`: the `split` operand if
/// given, else `num_outputs` (or `n_outputs`) parts of `ceil(dim / n)` with a
/// smaller last part (opset 18).
pub(crate) fn split_sizes(
    dim: usize,
    split: Option<&[i64]>,
    num_outputs: Option<i64>,
    n_outputs: usize,
) -> Result<Vec<usize>> {
    let op = Op::Split;
    if let Some(split) = split {
        if num_outputs.is_some() {
            return Err(Error::invalid(format!(
                "{op}: give either the `split` input or the `num_outputs` attribute, not both"
            )));
        }
        if split.len() != n_outputs {
            return Err(Error::invalid(format!(
                "{op}: split {split:?} has {} parts but the node has {n_outputs} outputs",
                split.len()
            )));
        }
        let sizes: Vec<usize> = split
            .iter()
            .map(|&s| usize::try_from(s))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::invalid(format!("{op}: split {split:?} has a negative size")))?;
        if sizes.iter().sum::<usize>() != dim {
            return Err(Error::invalid(format!(
                "{op}: split {split:?} does not add up to the axis size {dim}"
            )));
        }
        return Ok(sizes);
    }
    let n = match num_outputs {
        Some(k) => {
            if usize::try_from(k).ok() != Some(n_outputs) {
                return Err(Error::Attr {
                    attr: "num_outputs".into(),
                    msg: format!("{op} num_outputs is {k} but the node has {n_outputs} outputs"),
                });
            }
            n_outputs
        }
        None => n_outputs,
    };
    if n == 0 {
        return Err(Error::invalid(format!("{op}: needs at least one output")));
    }
    if dim.is_multiple_of(n) {
        return Ok(vec![dim / n; n]);
    }
    let chunk = dim / n + 1;
    let last = to_i64(dim) - to_i64(chunk) * to_i64(n - 1);
    let last = usize::try_from(last).map_err(|_| {
        Error::invalid(format!(
            "{op}: an axis of size {dim} cannot be split into {n} parts"
        ))
    })?;
    let mut sizes = vec![chunk; n - 1];
    sizes.push(last);
    Ok(sizes)
}

pub(super) fn concat(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Concat;
    let xs: Vec<&Tensor> = (0..inputs.len())
        .map(|i| input(op, inputs, i))
        .collect::<Result<_>>()?;
    let first = *xs
        .first()
        .ok_or_else(|| Error::invalid(format!("{op} needs inputs")))?;
    let rank = first.rank();
    if rank == 0 {
        return Err(Error::invalid(format!(
            "{op}: inputs must have rank 1 or more"
        )));
    }
    let axis = concat_axis(attrs, rank)?;
    let mut out = first.shape().to_vec();
    out[axis] = 0;
    for (i, x) in xs.iter().enumerate() {
        let compatible = x.rank() == rank
            && x.dtype() == first.dtype()
            && x.shape()
                .iter()
                .zip(first.shape())
                .enumerate()
                .all(|(k, (a, b))| k == axis || a == b);
        if !compatible {
            return Err(Error::invalid(format!(
                "{op}: input {i} is {} but input 0 is {} (axis {axis})",
                x.ty(),
                first.ty()
            )));
        }
        out[axis] += x.shape()[axis];
    }
    let outer: usize = out[..axis].iter().product();
    let inner: usize = out[axis + 1..].iter().product();
    fn go<T: Element>(
        _first: &[T],
        xs: &[&Tensor],
        axis: usize,
        outer: usize,
        inner: usize,
    ) -> Option<Data> {
        let parts: Vec<(&[T], usize)> = xs
            .iter()
            .map(|x| Some((x.as_slice::<T>()?, x.shape()[axis] * inner)))
            .collect::<Option<_>>()?;
        let total: usize = parts.iter().map(|(v, _)| v.len()).sum();
        let mut out = Vec::with_capacity(total);
        for o in 0..outer {
            for (v, run) in &parts {
                out.extend_from_slice(&v[o * run..(o + 1) * run]);
            }
        }
        Some(T::wrap(out))
    }
    let data = with_data!(first.data(), v => go(v, &xs, axis, outer, inner))
        .ok_or_else(|| Error::invalid(format!("{op}: inputs have different dtypes")))?;
    Tensor::new(out, data)
}

pub(super) fn split(
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let op = Op::Split;
    let x = input(op, inputs, 0)?;
    let axis = norm_axis(op, attrs.int_or("axis", 0)?, x.rank())?;
    let split = opt_input(inputs, 1)
        .map(|t| super::ints_of(op, t, "split"))
        .transpose()?;
    let sizes = split_sizes(
        x.shape()[axis],
        split.as_deref(),
        attrs.int("num_outputs")?,
        n_outputs,
    )?;
    let outer: usize = x.shape()[..axis].iter().product();
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let run_in = x.shape()[axis] * inner;
    let mut start = 0;
    let mut outs = Vec::with_capacity(sizes.len());
    for &s in &sizes {
        let run = s * inner;
        let data = crate::map_data!(x.data(), v => {
            let mut out = Vec::with_capacity(outer * run);
            for o in 0..outer {
                let b = o * run_in + start;
                out.extend_from_slice(&v[b..b + run]);
            }
            out
        });
        let mut shape = x.shape().to_vec();
        shape[axis] = s;
        outs.push(Tensor::new(shape, data)?);
        start += run;
    }
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sizes_follow_opset_18() {
        assert_eq!(split_sizes(6, None, None, 3).unwrap(), vec![2, 2, 2]);
        assert_eq!(split_sizes(7, None, Some(4), 4).unwrap(), vec![2, 2, 2, 1]);
        assert_eq!(split_sizes(7, None, Some(2), 2).unwrap(), vec![4, 3]);
        assert_eq!(split_sizes(6, Some(&[2, 4]), None, 2).unwrap(), vec![2, 4]);
        assert_eq!(split_sizes(0, Some(&[0, 0]), None, 2).unwrap(), vec![0, 0]);
        assert!(split_sizes(6, Some(&[2, 3]), None, 2).is_err());
        assert!(split_sizes(5, None, Some(4), 4).is_err());
        assert!(split_sizes(6, None, Some(3), 2).is_err());
    }

    #[test]
    fn concat_and_split_round_trip_on_axis_1() {
        let a = Tensor::from_vec(vec![2, 1], vec![1i32, 2]).unwrap();
        let b = Tensor::from_vec(vec![2, 2], vec![3i32, 4, 5, 6]).unwrap();
        let e = Tensor::from_vec(vec![2, 0], Vec::<i32>::new()).unwrap();
        let attrs = Attrs::new().with("axis", crate::Attr::Int(-1));
        let c = concat(&attrs, &[Some(&a), Some(&e), Some(&b)]).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.as_slice::<i32>().unwrap(), &[1, 3, 4, 2, 5, 6]);
        let sp = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
        let parts = split(&attrs, &[Some(&c), Some(&sp)], 2).unwrap();
        assert_eq!(parts, vec![a, b]);
    }
}
