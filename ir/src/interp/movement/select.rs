//! Element selections by position: Trilu (keep a triangle, zero the rest),
//! ReverseSequence (reverse a prefix of each sequence), OneHot (pick the on
//! or off value per position).

use super::{ints_of, take, take_or_fill, to_i64, FILL};
use crate::interp::util::{input, norm_axis, opt_input};
use crate::{Attrs, Data, Error, Op, Result, Tensor};

/// ReverseSequence's `(batch_axis, time_axis)`, which must be 0 and 1 in some order.
pub(crate) fn reverse_sequence_axes(attrs: &Attrs, rank: usize) -> Result<(usize, usize)> {
    let op = Op::ReverseSequence;
    let b = attrs.int_or("batch_axis", 1)?;
    let t = attrs.int_or("time_axis", 0)?;
    if rank < 2 || !matches!((b, t), (0, 1) | (1, 0)) {
        return Err(Error::invalid(format!(
            "{op}: batch_axis {b} and time_axis {t} must be 0 and 1, on an input of rank >= 2 (rank {rank})"
        )));
    }
    Ok((b as usize, t as usize))
}

/// OneHot's depth operand: one element, any numeric type, converted to an integer.
pub(crate) fn one_hot_depth(t: &Tensor) -> Result<usize> {
    let op = Op::OneHot;
    let v = t.to_f64_vec();
    match v.as_slice() {
        [d] if *d >= 0.0 && d.is_finite() => Ok(*d as usize),
        _ => Err(Error::invalid(format!(
            "{op}: depth must be one non-negative number, found {} {v:?}",
            t.ty()
        ))),
    }
}

/// OneHot's `axis`, which indexes the output (rank `indices_rank + 1`).
pub(crate) fn one_hot_axis(attrs: &Attrs, indices_rank: usize) -> Result<usize> {
    norm_axis(Op::OneHot, attrs.int_or("axis", -1)?, indices_rank + 1)
}

pub(super) fn trilu(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Trilu;
    let x = input(op, inputs, 0)?;
    let upper = attrs.int_or("upper", 1)? != 0;
    let k = match opt_input(inputs, 1) {
        Some(t) => match ints_of(op, t, "k")?.as_slice() {
            [k] => *k,
            v => {
                return Err(Error::invalid(format!(
                    "{op}: k must be one integer, found {v:?}"
                )))
            }
        },
        None => 0,
    };
    let r = x.rank();
    if r < 2 {
        return Err(Error::invalid(format!(
            "{op}: input must have rank >= 2, found {}",
            x.ty()
        )));
    }
    let (n, m) = (x.shape()[r - 2], x.shape()[r - 1]);
    let batch: usize = x.shape()[..r - 2].iter().product();
    let keep = |i: usize, j: usize| {
        let d = j as i128 - i as i128;
        if upper {
            d >= k as i128
        } else {
            d <= k as i128
        }
    };
    let mut idx = Vec::with_capacity(x.numel());
    for b in 0..batch {
        for i in 0..n {
            for j in 0..m {
                idx.push(if keep(i, j) {
                    (b * n + i) * m + j
                } else {
                    FILL
                });
            }
        }
    }
    let zero = Data::zeros(x.dtype(), 1);
    Tensor::new(x.shape().to_vec(), take_or_fill(op, x.data(), &idx, &zero)?)
}

pub(super) fn reverse_sequence(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::ReverseSequence;
    let x = input(op, inputs, 0)?;
    let (ba, ta) = reverse_sequence_axes(attrs, x.rank())?;
    let lens = ints_of(op, input(op, inputs, 1)?, "sequence_lens")?;
    let (nb, nt) = (x.shape()[ba], x.shape()[ta]);
    if lens.len() != nb || lens.iter().any(|&l| l < 0 || l > to_i64(nt)) {
        return Err(Error::invalid(format!(
            "{op}: sequence_lens {lens:?} must have {nb} entries in [0, {nt}]"
        )));
    }
    let st = super::strides(x.shape());
    let idx: Vec<usize> = (0..x.numel())
        .map(|p| {
            let b = (p / st[ba]) % nb;
            let t = (p / st[ta]) % nt;
            let len = lens[b] as usize;
            if t < len {
                p - t * st[ta] + (len - 1 - t) * st[ta]
            } else {
                p
            }
        })
        .collect();
    Tensor::new(x.shape().to_vec(), take(x.data(), &idx))
}

pub(super) fn one_hot(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::OneHot;
    let ind = input(op, inputs, 0)?;
    let depth = one_hot_depth(input(op, inputs, 1)?)?;
    let values = input(op, inputs, 2)?;
    if values.numel() != 2 {
        return Err(Error::invalid(format!(
            "{op}: values must be [off, on] (two elements), found {}",
            values.ty()
        )));
    }
    let axis = one_hot_axis(attrs, ind.rank())?;
    let mut out = ind.shape().to_vec();
    out.insert(axis, depth);
    super::check_numel(op, &out)?;
    let outer: usize = ind.shape()[..axis].iter().product();
    let inner: usize = ind.shape()[axis..].iter().product();
    let d = to_i64(depth);
    let hot: Vec<Option<usize>> = ind
        .to_f64_vec()
        .into_iter()
        .map(|v| {
            // Indices may be floats; they truncate toward zero like a cast to int64.
            let i = v as i64;
            let i = if i < 0 { i + d } else { i };
            (0..d).contains(&i).then_some(i as usize)
        })
        .collect();
    let mut idx = Vec::with_capacity(outer * depth * inner);
    for o in 0..outer {
        for k in 0..depth {
            for i in 0..inner {
                idx.push(usize::from(hot[o * inner + i] == Some(k)));
            }
        }
    }
    Tensor::new(out, take(values.data(), &idx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trilu_keeps_upper_and_lower_triangles() {
        let x = Tensor::from_vec(vec![3, 3], (1..=9).collect::<Vec<i32>>()).unwrap();
        let k = Tensor::scalar(1i64);
        let y = trilu(&Attrs::new(), &[Some(&x), Some(&k)]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[0, 2, 3, 0, 0, 6, 0, 0, 0]);
        let lower = Attrs::new().with("upper", crate::Attr::Int(0));
        let y = trilu(&lower, &[Some(&x), None]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[1, 0, 0, 4, 5, 0, 7, 8, 9]);
    }

    #[test]
    fn reverse_sequence_example_2() {
        let x = Tensor::from_vec(vec![4, 4], (0..16).map(|i| i as f32).collect()).unwrap();
        let l = Tensor::from_vec(vec![4], vec![1i64, 2, 3, 4]).unwrap();
        let a = Attrs::new()
            .with("batch_axis", crate::Attr::Int(0))
            .with("time_axis", crate::Attr::Int(1));
        let y = reverse_sequence(&a, &[Some(&x), Some(&l)]).unwrap();
        let want = [
            0., 1., 2., 3., 5., 4., 6., 7., 10., 9., 8., 11., 15., 14., 13., 12.,
        ];
        assert_eq!(y.as_slice::<f32>().unwrap(), &want);
    }

    #[test]
    fn one_hot_on_axis_0_with_negative_and_out_of_range() {
        let i = Tensor::from_vec(vec![3], vec![-1i64, 5, 1]).unwrap();
        let d = Tensor::scalar(3.0f32);
        let v = Tensor::from_vec(vec![2], vec![0i32, 9]).unwrap();
        let a = Attrs::new().with("axis", crate::Attr::Int(0));
        let y = one_hot(&a, &[Some(&i), Some(&d), Some(&v)]).unwrap();
        assert_eq!(y.shape(), &[3, 3]);
        // column j is index j's one-hot: [2, none, 1]
        assert_eq!(y.as_slice::<i32>().unwrap(), &[0, 0, 0, 0, 0, 9, 9, 0, 0]);
    }
}
