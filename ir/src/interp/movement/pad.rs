//! Pad(data, pads, constant_value?, axes?) with modes `constant`, `reflect`,
//! `edge` and `wrap`. Negative pads remove elements first; the other side's
//! padding then reflects, repeats or wraps what remains (onnxruntime's
//! reading; ONNX's reference implementation has no negative pads). Each
//! output coordinate maps to a source coordinate per axis (or to the fill
//! value), so the whole op is one index map.

use super::{index_product, ints_of, strides, take_or_fill, FILL};
use crate::interp::util::{input, norm_axes, opt_input};
use crate::{Attrs, Data, Error, Op, Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

pub(crate) fn pad_mode(attrs: &Attrs) -> Result<PadMode> {
    Ok(match attrs.str_or("mode", "constant")? {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => {
            return Err(Error::Attr {
                attr: "mode".into(),
                msg: format!("Pad mode must be constant, reflect, edge or wrap, found {m:?}"),
            })
        }
    })
}

/// `(begin, end)` padding per axis of a rank-`rank` input: `pads` holds all
/// begins then all ends for `axes` (default: every axis).
pub(crate) fn pad_spec(rank: usize, pads: &[i64], axes: Option<&[i64]>) -> Result<Vec<(i64, i64)>> {
    let op = Op::Pad;
    let axes = match axes {
        Some(a) => norm_axes(op, a, rank)?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(Error::invalid(format!(
            "{op}: pads {pads:?} must have two entries per padded axis ({} axes)",
            axes.len()
        )));
    }
    let mut out = vec![(0, 0); rank];
    for (i, &a) in axes.iter().enumerate() {
        out[a] = (pads[i], pads[axes.len() + i]);
    }
    Ok(out)
}

/// The padded size of a dimension `dim`, or an error if it would be negative.
pub(crate) fn padded_dim(dim: usize, (b, e): (i64, i64)) -> Result<usize> {
    let n = dim as i128 + b as i128 + e as i128;
    usize::try_from(n).map_err(|_| {
        Error::invalid(format!(
            "Pad: pads ({b}, {e}) remove more than the dimension {dim}"
        ))
    })
}

/// The source coordinate of output coordinate `c` on an axis of size `dim`
/// padded by `(begin, end)`, or `None` for the constant fill. Negative pads
/// crop the axis to `kept` first; positive ones pad what is kept.
fn source(c: usize, dim: usize, (begin, end): (i64, i64), mode: PadMode) -> Option<usize> {
    let lo = (-(begin as i128)).max(0);
    let d = dim as i128 - lo - (-(end as i128)).max(0);
    let s = c as i128 - (begin as i128).max(0);
    if (0..d).contains(&s) {
        return Some((lo + s) as usize);
    }
    if d <= 0 {
        return None;
    }
    let m = match mode {
        PadMode::Constant => return None,
        PadMode::Edge => s.clamp(0, d - 1),
        PadMode::Wrap => s.rem_euclid(d),
        PadMode::Reflect if d == 1 => 0,
        PadMode::Reflect => {
            let p = 2 * (d - 1);
            let m = s.rem_euclid(p);
            if m >= d {
                p - m
            } else {
                m
            }
        }
    };
    Some((lo + m) as usize)
}

pub(super) fn pad(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Pad;
    let x = input(op, inputs, 0)?;
    let pads = ints_of(op, input(op, inputs, 1)?, "pads")?;
    let axes = opt_input(inputs, 3)
        .map(|t| ints_of(op, t, "axes"))
        .transpose()?;
    let mode = pad_mode(attrs)?;
    let spec = pad_spec(x.rank(), &pads, axes.as_deref())?;
    let st = strides(x.shape());
    let mut out = Vec::with_capacity(x.rank());
    let mut tables = Vec::with_capacity(x.rank());
    for (k, (&d, &p)) in x.shape().iter().zip(&spec).enumerate() {
        let n = padded_dim(d, p)?;
        let kept = d as i128 - (-(p.0 as i128)).max(0) - (-(p.1 as i128)).max(0);
        if kept <= 0 && n > 0 && mode != PadMode::Constant {
            return Err(Error::invalid(format!(
                "{op}: cannot pad axis {k} in {mode:?} mode: no elements are left to repeat"
            )));
        }
        out.push(n);
        super::check_numel(op, &out)?;
        tables.push(
            (0..n)
                .map(|c| source(c, d, p, mode).map_or(FILL, |s| s * st[k]))
                .collect::<Vec<usize>>(),
        );
    }
    let fill = match opt_input(inputs, 2) {
        Some(v) => v.data().clone(),
        None => Data::zeros(x.dtype(), 1),
    };
    Tensor::new(
        out,
        take_or_fill(op, x.data(), &index_product(&tables), &fill)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_coordinates_per_mode() {
        // dim 3 ([a b c]) padded by 2 in front: reflect c b | a b c
        let m = |mode| {
            (0..7)
                .map(|c| source(c, 3, (2, 2), mode))
                .collect::<Vec<_>>()
        };
        let s = |v: &[usize]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        assert_eq!(m(PadMode::Reflect), s(&[2, 1, 0, 1, 2, 1, 0]));
        assert_eq!(m(PadMode::Edge), s(&[0, 0, 0, 1, 2, 2, 2]));
        assert_eq!(m(PadMode::Wrap), s(&[1, 2, 0, 1, 2, 0, 1]));
        assert_eq!(m(PadMode::Constant)[..3], [None, None, Some(0)]);
        // crop one in front, then wrap what is left ([b c]) by 2 at the end: b c b c
        let w: Vec<_> = (0..4)
            .map(|c| source(c, 3, (-1, 2), PadMode::Wrap))
            .collect();
        assert_eq!(w, s(&[1, 2, 1, 2]));
        // crop two at the end ([a]), then repeat its edge twice in front: a a a
        let e: Vec<_> = (0..3)
            .map(|c| source(c, 3, (2, -2), PadMode::Edge))
            .collect();
        assert_eq!(e, s(&[0, 0, 0]));
    }

    #[test]
    fn negative_pads_crop_and_constant_fills() {
        let x = Tensor::from_vec(vec![4], vec![1i32, 2, 3, 4]).unwrap();
        let p = Tensor::from_vec(vec![2], vec![-1i64, 2]).unwrap();
        let v = Tensor::scalar(7i32);
        let y = pad(&Attrs::new(), &[Some(&x), Some(&p), Some(&v)]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[2, 3, 4, 7, 7]);
        let p = Tensor::from_vec(vec![2], vec![-3i64, -2]).unwrap();
        assert!(pad(&Attrs::new(), &[Some(&x), Some(&p)]).is_err());
    }
}
