//! Interpreter for the Pool class: MaxPool (with its optional `Indices`
//! output), AveragePool, LpPool, GlobalAveragePool and GlobalMaxPool.
//!
//! `X` is `[N, C, in...]` with any number (>= 1) of spatial axes; output
//! `o` along an axis covers input positions `o * stride - pad_begin + t * dilation`
//! for kernel taps `t` (sizes: [`pool_axis`], with `ceil_mode` and auto_pad).
//! Taps outside the input are skipped:
//!
//! - MaxPool takes the largest tap (the first, in row-major tap order, among
//!   equals; NaN only if every tap is NaN; −∞, saturated for 8-bit types, if
//!   the window holds no input at all). `Indices` is the flat index into `X`
//!   of that tap: `(n * C + c) * in_size + spatial`, where `spatial` is
//!   row-major, or column-major over the spatial axes with `storage_order = 1`;
//!   −1 for an empty window.
//! - AveragePool divides the sum by the number of taps inside the input, or
//!   with `count_include_pad` by the number inside the explicitly padded input
//!   (never counting the extra room that `ceil_mode` adds); 0 / 0 is NaN.
//! - LpPool is `(Σ |x|^p)^(1/p)` over the taps inside the input.
//!
//! f64 computes in f64; f32, f16, bf16 (and MaxPool's i8 and u8, exactly) in
//! f32, rounding once to the storage type.

use super::util::input;
use super::window::{
    as_f32, checked_numel, from_f32, next_index, pool_axis, valid_range, Axis, WindowAttrs,
};
use crate::{shape, Attrs, DType, Data, Error, Op, Result, Tensor};

pub(crate) fn eval(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let x = input(op, inputs, 0)?;
    let dt = x.dtype();
    if !(dt.is_float() || (op == Op::MaxPool && matches!(dt, DType::I8 | DType::U8))) {
        return Err(Error::invalid(format!(
            "{op}: unsupported input dtype {dt}"
        )));
    }
    let global = matches!(op, Op::GlobalAveragePool | Op::GlobalMaxPool);
    if x.rank() < if global { 2 } else { 3 } {
        return Err(Error::invalid(format!(
            "{op} needs an input of shape [N, C, spatial...], found {:?}",
            x.shape()
        )));
    }
    let kind = match op {
        Op::MaxPool | Op::GlobalMaxPool => Kind::Max,
        Op::AveragePool | Op::GlobalAveragePool => Kind::Avg {
            include_pad: attrs.int_or("count_include_pad", 0)? != 0,
        },
        Op::LpPool => {
            let p = attrs.int_or("p", 2)?;
            if !(1..=i32::MAX as i64).contains(&p) {
                return Err(Error::Attr {
                    attr: "p".into(),
                    msg: format!("{op}: must be positive, found {p}"),
                });
            }
            Kind::Lp(p as i32)
        }
        _ => return Err(Error::invalid(format!("{op} is not a pool"))),
    };
    let spatial = &x.shape()[2..];
    let axes: Vec<Axis> = if global {
        // One window covering the whole plane.
        spatial
            .iter()
            .map(|&n| Axis {
                input: n,
                output: 1,
                kernel: n,
                stride: 1,
                dilation: 1,
                pad_begin: 0,
                pad_end: 0,
            })
            .collect()
    } else {
        let wa = WindowAttrs::read(op, attrs, spatial.len(), None)?;
        let ceil_mode = attrs.int_or("ceil_mode", 0)? != 0;
        spatial
            .iter()
            .enumerate()
            .map(|(i, &n)| pool_axis(op, &wa, i, n, ceil_mode))
            .collect::<Result<_>>()?
    };
    let storage_order = attrs.int_or("storage_order", 0)?;
    if op == Op::MaxPool && !(0..=1).contains(&storage_order) {
        return Err(Error::Attr {
            attr: "storage_order".into(),
            msg: format!("{op}: must be 0 or 1, found {storage_order}"),
        });
    }
    let mut shape = x.shape()[..2].to_vec();
    shape.extend(axes.iter().map(|a| a.output));
    checked_numel(op, &shape)?;
    let planes = shape[0] * shape[1];
    let want_indices = n_outputs == 2;
    let (data, indices) = match x.data() {
        Data::F64(v) => {
            let (y, i) = pool(v, planes, &axes, kind, want_indices, storage_order == 1);
            (Data::F64(y), i)
        }
        _ => {
            let v = as_f32(x)
                .ok_or_else(|| Error::invalid(format!("{op}: unsupported input dtype {dt}")))?;
            let (y, i) = pool(&v, planes, &axes, kind, want_indices, storage_order == 1);
            (from_f32(dt, y), i)
        }
    };
    let mut out = vec![Tensor::new(shape.clone(), data)?];
    if want_indices {
        out.push(Tensor::new(shape, Data::I64(indices))?);
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Max,
    Avg { include_pad: bool },
    Lp(i32),
}

/// The float types pools compute in.
trait Real: Copy + PartialOrd + Default {
    const NEG_INF: Self;
    fn add(self, o: Self) -> Self;
    fn div_count(self, n: usize) -> Self;
    fn is_nan(self) -> bool;
    fn abs_pow(self, p: i32) -> Self;
    fn root(self, p: i32) -> Self;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            const NEG_INF: $t = <$t>::NEG_INFINITY;
            fn add(self, o: $t) -> $t {
                self + o
            }
            fn div_count(self, n: usize) -> $t {
                if n == 0 {
                    <$t>::NAN
                } else {
                    self / n as $t
                }
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn abs_pow(self, p: i32) -> $t {
                self.abs().powi(p)
            }
            fn root(self, p: i32) -> $t {
                match p {
                    1 => self,
                    2 => self.sqrt(),
                    _ => self.powf(1.0 / p as $t),
                }
            }
        }
    };
}
real!(f32);
real!(f64);

/// Per axis and output position: the valid taps `lo..hi` and the number of
/// taps inside the explicitly padded input.
fn tap_ranges(axes: &[Axis]) -> Vec<Vec<(usize, usize, usize)>> {
    axes.iter()
        .map(|a| {
            (0..a.output)
                .map(|o| {
                    let start = (o * a.stride) as i64 - a.pad_begin;
                    let (lo, hi) = valid_range(start, a.dilation, a.input, a.kernel);
                    let padded = a.input as i64 + a.pad_begin + a.pad_end;
                    let (plo, phi) = valid_range(
                        (o * a.stride) as i64,
                        a.dilation,
                        padded.max(0) as usize,
                        a.kernel,
                    );
                    (lo, hi, phi - plo)
                })
                .collect()
        })
        .collect()
}

/// Pools `planes` planes of `x`; returns the values and (if asked) MaxPool's indices.
fn pool<F: Real>(
    x: &[F],
    planes: usize,
    axes: &[Axis],
    kind: Kind,
    want_indices: bool,
    column_major: bool,
) -> (Vec<F>, Vec<i64>) {
    let r = axes.len();
    let in_dims: Vec<usize> = axes.iter().map(|a| a.input).collect();
    let out_dims: Vec<usize> = axes.iter().map(|a| a.output).collect();
    let in_strides = shape::strides(&in_dims);
    // column-major strides over the spatial axes, for storage_order = 1
    let col_strides: Vec<usize> = (0..r).map(|d| in_dims[..d].iter().product()).collect();
    let in_size: usize = in_dims.iter().product();
    let out_size: usize = out_dims.iter().product();
    let ranges = tap_ranges(axes);
    let mut y = vec![F::default(); planes * out_size];
    let mut idx = if want_indices {
        vec![-1i64; planes * out_size]
    } else {
        Vec::new()
    };
    if y.is_empty() {
        return (y, idx);
    }
    let mut o = vec![0usize; r];
    let mut taps: Vec<usize> = Vec::new();
    let (mut t, mut lo, mut hi) = (vec![0usize; r], vec![0usize; r], vec![0usize; r]);
    for op in 0..out_size {
        // the window's taps inside the input, as offsets within a plane
        taps.clear();
        let mut padded_count = 1;
        for d in 0..r {
            let (l, h, p) = ranges[d][o[d]];
            (lo[d], hi[d]) = (l, h);
            padded_count *= p;
        }
        if lo.iter().zip(&hi).all(|(l, h)| l < h) {
            t.copy_from_slice(&lo);
            loop {
                let mut off = 0;
                for d in 0..r {
                    let a = &axes[d];
                    off += (((o[d] * a.stride + t[d] * a.dilation) as i64 - a.pad_begin) as usize)
                        * in_strides[d];
                }
                taps.push(off);
                // advance t within lo..hi, row-major
                let mut d = r;
                let more = loop {
                    if d == 0 {
                        break false;
                    }
                    d -= 1;
                    t[d] += 1;
                    if t[d] < hi[d] {
                        break true;
                    }
                    t[d] = lo[d];
                };
                if !more {
                    break;
                }
            }
        }
        for plane in 0..planes {
            let xp = &x[plane * in_size..][..in_size];
            let out = plane * out_size + op;
            y[out] = match kind {
                Kind::Max => {
                    let mut best: Option<(F, usize)> = None;
                    for &tp in &taps {
                        let v = xp[tp];
                        if best.is_none_or(|(b, _)| v > b || b.is_nan()) {
                            best = Some((v, tp));
                        }
                    }
                    if want_indices {
                        if let Some((_, tp)) = best {
                            let spatial = if column_major {
                                (0..r)
                                    .map(|d| (tp / in_strides[d]) % in_dims[d] * col_strides[d])
                                    .sum()
                            } else {
                                tp
                            };
                            idx[out] = (plane * in_size + spatial) as i64;
                        }
                    }
                    best.map_or(F::NEG_INF, |(b, _)| b)
                }
                Kind::Avg { include_pad } => {
                    let sum = taps.iter().fold(F::default(), |s, &tp| s.add(xp[tp]));
                    sum.div_count(if include_pad {
                        padded_count
                    } else {
                        taps.len()
                    })
                }
                Kind::Lp(p) => taps
                    .iter()
                    .fold(F::default(), |s, &tp| s.add(xp[tp].abs_pow(p)))
                    .root(p),
            };
        }
        next_index(&mut o, &out_dims);
    }
    (y, idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;

    fn eval(op: Op, attrs: &Attrs, inputs: &[Option<&Tensor>], n: usize) -> Result<Vec<Tensor>> {
        // through eval_op, so the arity check every node gets applies here too
        crate::interp::eval_op(op, attrs, inputs, n)
    }

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    fn run(op: Op, attrs: &Attrs, x: &Tensor, n_outputs: usize) -> Vec<Tensor> {
        eval(op, attrs, &[Some(x)], n_outputs).unwrap()
    }

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec()
    }

    fn ints(v: &[i64]) -> Attr {
        Attr::Ints(v.to_vec())
    }

    fn x5() -> Tensor {
        t(&[1, 1, 5, 5], (1..=25).map(|v| v as f32).collect())
    }

    #[test]
    fn maxpool_pads_and_indices() {
        // ONNX test_maxpool_with_argmax_2d_precomputed_pads
        let a = Attrs::new()
            .with("kernel_shape", ints(&[5, 5]))
            .with("pads", ints(&[2, 2, 2, 2]));
        let out = run(Op::MaxPool, &a, &x5(), 2);
        assert_eq!(out[0].shape(), &[1, 1, 5, 5]);
        assert_eq!(
            vals(&out[0]),
            [
                13, 14, 15, 15, 15, 18, 19, 20, 20, 20, 23, 24, 25, 25, 25, 23, 24, 25, 25, 25, 23,
                24, 25, 25, 25
            ]
            .map(|v| v as f64)
        );
        assert_eq!(
            out[1].as_slice::<i64>().unwrap(),
            &[
                12, 13, 14, 14, 14, 17, 18, 19, 19, 19, 22, 23, 24, 24, 24, 22, 23, 24, 24, 24, 22,
                23, 24, 24, 24
            ]
        );
    }

    #[test]
    fn maxpool_storage_order() {
        // ONNX test_maxpool_with_argmax_2d_precomputed_strides
        let a = Attrs::new()
            .with("kernel_shape", ints(&[2, 2]))
            .with("strides", ints(&[2, 2]))
            .with("storage_order", Attr::Int(1));
        let out = run(Op::MaxPool, &a, &x5(), 2);
        assert_eq!(vals(&out[0]), vec![7.0, 9.0, 17.0, 19.0]);
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[6, 16, 8, 18]);
    }

    #[test]
    fn maxpool_same_upper_ceil_and_dilation() {
        let a = Attrs::new()
            .with("kernel_shape", ints(&[3, 3]))
            .with("strides", ints(&[2, 2]))
            .with("auto_pad", Attr::Str("SAME_UPPER".into()));
        assert_eq!(
            vals(&run(Op::MaxPool, &a, &x5(), 1)[0]),
            [7, 9, 10, 17, 19, 20, 22, 24, 25].map(|v| v as f64)
        );
        let x4 = t(&[1, 1, 4, 4], (1..=16).map(|v| v as f32).collect());
        let a = Attrs::new()
            .with("kernel_shape", ints(&[3, 3]))
            .with("strides", ints(&[2, 2]))
            .with("ceil_mode", Attr::Int(1));
        assert_eq!(
            vals(&run(Op::MaxPool, &a, &x4, 1)[0]),
            vec![11.0, 12.0, 15.0, 16.0]
        );
        let a = Attrs::new()
            .with("kernel_shape", ints(&[2, 2]))
            .with("dilations", ints(&[2, 2]));
        assert_eq!(
            vals(&run(Op::MaxPool, &a, &x4, 1)[0]),
            vec![11.0, 12.0, 15.0, 16.0]
        );
        // ceil mode dropping a window that would start past the input
        let x2 = t(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let a = Attrs::new()
            .with("kernel_shape", ints(&[1, 1]))
            .with("strides", ints(&[2, 2]))
            .with("ceil_mode", Attr::Int(1));
        let y = &run(Op::MaxPool, &a, &x2, 1)[0];
        assert_eq!((y.shape(), vals(y)), (&[1usize, 1, 1, 1][..], vec![1.0]));
    }

    #[test]
    fn maxpool_int8_nan_and_ties() {
        let x = Tensor::from_vec(vec![1, 1, 4], vec![-5i8, 7, 7, -128]).unwrap();
        let a = Attrs::new().with("kernel_shape", ints(&[2]));
        let out = run(Op::MaxPool, &a, &x, 2);
        assert_eq!(out[0].as_slice::<i8>().unwrap(), &[7, 7, 7]);
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[1, 1, 2]);
        let x = t(&[1, 1, 3], vec![f32::NAN, 1.0, f32::NAN]);
        let y = &run(Op::MaxPool, &a, &x, 1)[0];
        assert_eq!(vals(y), vec![1.0, 1.0]);
        let x = t(&[1, 1, 2], vec![f32::NAN, f32::NAN]);
        assert!(vals(&run(Op::MaxPool, &a, &x, 1)[0])[0].is_nan());
    }

    #[test]
    fn averagepool_pads_and_count_include_pad() {
        let x3 = t(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
        let a = Attrs::new()
            .with("kernel_shape", ints(&[2, 2]))
            .with("pads", ints(&[1, 1, 0, 0]));
        // windows at the corner: [1] / 1, [1, 2] / 2, ...
        let y = &run(Op::AveragePool, &a, &x3, 1)[0];
        assert_eq!(vals(y), vec![1.0, 1.5, 2.5, 2.5, 3.0, 4.0, 5.5, 6.0, 7.0]);
        let a = a.with("count_include_pad", Attr::Int(1));
        let y = &run(Op::AveragePool, &a, &x3, 1)[0];
        assert_eq!(
            vals(y),
            vec![0.25, 0.75, 1.25, 1.25, 3.0, 4.0, 2.75, 6.0, 7.0]
        );
    }

    #[test]
    fn averagepool_ceil_mode() {
        // ONNX test_averagepool_2d_ceil: the ceil-mode extra room is not counted
        let x4 = t(&[1, 1, 4, 4], (1..=16).map(|v| v as f32).collect());
        let a = Attrs::new()
            .with("kernel_shape", ints(&[3, 3]))
            .with("strides", ints(&[2, 2]))
            .with("ceil_mode", Attr::Int(1));
        assert_eq!(
            vals(&run(Op::AveragePool, &a, &x4, 1)[0]),
            vec![6.0, 7.5, 12.0, 13.5]
        );
        // ONNX test_averagepool_2d_ceil_last_window_starts_on_pad: explicit pads are counted
        let x = t(&[1, 1, 2, 2], vec![0.8580, 0.0786, 0.2692, 0.1537]);
        let a = Attrs::new()
            .with("kernel_shape", ints(&[3, 3]))
            .with("strides", ints(&[3, 3]))
            .with("pads", ints(&[1, 1, 1, 1]))
            .with("ceil_mode", Attr::Int(1))
            .with("count_include_pad", Attr::Int(1));
        let y = &run(Op::AveragePool, &a, &x, 1)[0];
        assert_eq!(y.shape(), &[1, 1, 1, 1]);
        assert!((vals(y)[0] - 1.3595 / 9.0).abs() < 1e-6);
        // dilations with ceil mode: ONNX test_averagepool_2d_dilations
        let a = Attrs::new()
            .with("kernel_shape", ints(&[2, 2]))
            .with("dilations", ints(&[2, 2]))
            .with("ceil_mode", Attr::Int(1));
        assert_eq!(
            vals(&run(Op::AveragePool, &a, &x4, 1)[0]),
            vec![6.0, 7.0, 10.0, 11.0]
        );
    }

    #[test]
    fn lppool_and_half_types() {
        let x4 = t(&[1, 1, 4, 4], (1..=16).map(|v| v as f32).collect());
        let a = Attrs::new()
            .with("kernel_shape", ints(&[2, 2]))
            .with("dilations", ints(&[2, 2]));
        let y = vals(&run(Op::LpPool, &a, &x4, 1)[0]);
        // sqrt(1 + 9 + 81 + 121) = 14.5602...
        assert!(
            (y[0] - 14.560219778561036).abs() < 1e-5 && (y[3] - 23.49468024894146).abs() < 1e-5
        );
        let a = Attrs::new()
            .with("kernel_shape", ints(&[2]))
            .with("p", Attr::Int(1));
        let x = Tensor::from_vec(
            vec![1, 1, 3],
            vec![
                half::f16::from_f32(-1.0),
                half::f16::from_f32(2.0),
                half::f16::from_f32(0.5),
            ],
        )
        .unwrap();
        let y = &run(Op::LpPool, &a, &x, 1)[0];
        assert_eq!(y.dtype(), DType::F16);
        assert_eq!(vals(y), vec![3.0, 2.5]);
    }

    #[test]
    fn global_pools() {
        let x = Tensor::from_vec(
            vec![1, 2, 2, 2],
            vec![1.0f64, 2.0, 3.0, 6.0, -1.0, -2.0, -3.0, -4.0],
        )
        .unwrap();
        let y = &run(Op::GlobalAveragePool, &Attrs::new(), &x, 1)[0];
        assert_eq!(
            (y.shape(), vals(y)),
            (&[1usize, 2, 1, 1][..], vec![3.0, -2.5])
        );
        let y = &run(Op::GlobalMaxPool, &Attrs::new(), &x, 1)[0];
        assert_eq!(vals(y), vec![6.0, -1.0]);
    }

    #[test]
    fn bad_input_is_an_error() {
        let a = Attrs::new().with("kernel_shape", ints(&[2, 2]));
        let x = t(&[1, 1, 3], vec![1.0; 3]);
        assert!(
            eval(Op::MaxPool, &a, &[Some(&x)], 1).is_err(),
            "kernel rank vs input rank"
        );
        let a = Attrs::new().with("kernel_shape", ints(&[4]));
        assert!(
            eval(Op::MaxPool, &a, &[Some(&x)], 1).is_err(),
            "kernel larger than the input"
        );
        let a = Attrs::new().with("kernel_shape", ints(&[2]));
        assert!(
            eval(Op::AveragePool, &a, &[Some(&x)], 2).is_err(),
            "AveragePool has one output"
        );
        let xi = Tensor::from_vec(vec![1, 1, 3], vec![1i8; 3]).unwrap();
        assert!(
            eval(Op::AveragePool, &a, &[Some(&xi)], 1).is_err(),
            "AveragePool is float only"
        );
        assert!(eval(Op::MaxPool, &a, &[None], 1).is_err());
    }
}
