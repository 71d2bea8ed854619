//! Interpreter for the reductions: ReduceSum, ReduceMean, ReduceMax,
//! ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp,
//! ReduceSumSquare, ArgMax/ArgMin and CumSum.
//!
//! Types are validated by inference first (see [`crate::infer`]). f16 and
//! bf16 are widened to f32, accumulated in f32 and rounded once; f32 and f64
//! accumulate in their own type, in index order; integers wrap, except
//! ReduceMean (sum in f64, then truncated) and ReduceL2 (square root in f64,
//! truncated). Reducing an empty set gives ONNX's values: 0 for sums and
//! norms, 1 for products, -inf / the type's minimum / false for max, +inf /
//! the maximum / true for min, -inf for the log-sums, NaN (0 for integers)
//! for the mean.
//!
//! ArgMax/ArgMin treat NaN as the extreme value (numpy's rule) and fail on an
//! empty axis.

use super::elementwise::num::{fmax, fmin, match_int, Float, Int};
use super::elementwise::{infer_types, narrow_to, widen_halves};
use super::util::{broadcast_indices, input, norm_axes, norm_axis, opt_input};
use crate::{Attrs, Data, Element, Error, Op, Result, Tensor};

pub(crate) fn eval(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let want = infer_types(op, attrs, inputs, n_outputs)?;
    let wide = widen_halves(inputs);
    let args: Vec<Option<&Tensor>> = inputs
        .iter()
        .zip(&wide)
        .map(|(o, w)| w.as_ref().or(*o))
        .collect();
    let x = input(op, &args, 0)?;
    let out = match op {
        Op::ArgMax | Op::ArgMin => arg_extreme(op, attrs, x)?,
        Op::CumSum => cumsum(op, attrs, x, input(op, &args, 1)?)?,
        _ => reduce(op, attrs, x, opt_input(&args, 1))?,
    };
    narrow_to(vec![out], &want)
}

/// ReduceX(data, axes?).
fn reduce(op: Op, attrs: &Attrs, x: &Tensor, axes: Option<&Tensor>) -> Result<Tensor> {
    let keep = attrs.int_or("keepdims", 1)? != 0;
    let noop = attrs.int_or("noop_with_empty_axes", 0)? != 0;
    let axes = match axes {
        Some(a) => a.to_i64_vec()?,
        None => Vec::new(),
    };
    if axes.is_empty() && noop {
        return Ok(x.clone());
    }
    let axes = if axes.is_empty() {
        (0..x.rank()).collect()
    } else {
        norm_axes(op, &axes, x.rank())?
    };
    // shape with the reduced axes set to 1, and the output element each input element folds into
    let kept: Vec<usize> = x
        .shape()
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let out_shape: Vec<usize> = if keep {
        kept.clone()
    } else {
        x.shape()
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    let n_out: usize = kept.iter().product();
    let count: usize = axes.iter().map(|&a| x.shape()[a]).product();
    let r = Reducer {
        op,
        map: broadcast_indices(&kept, x.shape()),
        n_out,
        count,
    };
    let data = match x.data() {
        Data::F32(v) => Data::F32(r.float(v)?),
        Data::F64(v) => Data::F64(r.float(v)?),
        Data::Bool(v) => Data::Bool(r.bool(v)?),
        d => match_int!(d, v => r.int(v)?, _ => return Err(not_defined(op, x))),
    };
    Tensor::new(out_shape, data)
}

fn not_defined(op: Op, x: &Tensor) -> Error {
    Error::invalid(format!("{op} is not defined for {}", x.dtype()))
}

/// One reduction: `map[i]` is the output element that input element `i` folds into.
struct Reducer {
    op: Op,
    map: Vec<usize>,
    n_out: usize,
    /// Elements per output (the product of the reduced dimensions).
    count: usize,
}

impl Reducer {
    fn fold<T: Copy, A: Copy>(&self, x: &[T], init: A, f: impl Fn(A, T) -> A) -> Vec<A> {
        let mut acc = vec![init; self.n_out];
        for (&v, &o) in x.iter().zip(&self.map) {
            acc[o] = f(acc[o], v);
        }
        acc
    }

    fn float<F: Float>(&self, x: &[F]) -> Result<Vec<F>> {
        let z = F::ZERO;
        Ok(match self.op {
            Op::ReduceSum => self.fold(x, z, |a, v| a + v),
            Op::ReduceMean => {
                let n = F::of(self.count as f64);
                self.fold(x, z, |a, v| a + v)
                    .into_iter()
                    .map(|s| s / n)
                    .collect()
            }
            Op::ReduceProd => self.fold(x, F::ONE, |a, v| a * v),
            Op::ReduceMax => self.fold(x, F::NEG_INFINITY, fmax),
            Op::ReduceMin => self.fold(x, F::INFINITY, fmin),
            Op::ReduceL1 => self.fold(x, z, |a, v| a + v.abs()),
            Op::ReduceL2 => self
                .fold(x, z, |a, v| a + v * v)
                .into_iter()
                .map(F::sqrt)
                .collect(),
            Op::ReduceSumSquare => self.fold(x, z, |a, v| a + v * v),
            Op::ReduceLogSum => self
                .fold(x, z, |a, v| a + v)
                .into_iter()
                .map(F::ln)
                .collect(),
            Op::ReduceLogSumExp => {
                // m + ln(sum(exp(x - m))) with m the maximum; an infinite or NaN m is the result.
                let m = self.fold(x, F::NEG_INFINITY, fmax);
                let mut s = vec![z; self.n_out];
                for (&v, &o) in x.iter().zip(&self.map) {
                    s[o] = s[o] + (v - m[o]).exp();
                }
                m.iter()
                    .zip(s)
                    .map(|(&m, s)| {
                        if m.is_nan() || m == F::INFINITY || m == F::NEG_INFINITY {
                            m
                        } else {
                            m + s.ln()
                        }
                    })
                    .collect()
            }
            _ => return Err(Error::invalid(format!("{} is not a reduction", self.op))),
        })
    }

    fn int<I: Int>(&self, x: &[I]) -> Result<Data> {
        let z = I::ZERO;
        let out: Vec<I> = match self.op {
            Op::ReduceSum => self.fold(x, z, |a, v| a.wadd(v)),
            Op::ReduceMean => {
                let n = self.count as f64;
                let s = self.fold(x, 0.0f64, |a, v| a + v.to_f64());
                s.into_iter().map(|s| I::from_f64(s / n)).collect()
            }
            Op::ReduceProd => self.fold(x, I::ONE, |a, v| a.wmul(v)),
            Op::ReduceMax => self.fold(x, I::MIN, |a, v| a.max(v)),
            Op::ReduceMin => self.fold(x, I::MAX, |a, v| a.min(v)),
            Op::ReduceL1 => self.fold(x, z, |a, v| a.wadd(v.wabs())),
            Op::ReduceL2 => {
                let s = self.fold(x, z, |a, v| a.wadd(v.wmul(v)));
                s.into_iter()
                    .map(|s| I::from_f64(s.to_f64().sqrt()))
                    .collect()
            }
            Op::ReduceSumSquare => self.fold(x, z, |a, v| a.wadd(v.wmul(v))),
            _ => {
                return Err(Error::invalid(format!(
                    "{} is not defined for {}",
                    self.op,
                    I::DTYPE
                )))
            }
        };
        Ok(I::wrap(out))
    }

    fn bool(&self, x: &[bool]) -> Result<Vec<bool>> {
        Ok(match self.op {
            Op::ReduceMax => self.fold(x, false, |a, v| a | v),
            Op::ReduceMin => self.fold(x, true, |a, v| a & v),
            _ => {
                return Err(Error::invalid(format!(
                    "{} is not defined for bool",
                    self.op
                )))
            }
        })
    }
}

/// `(outer, n, inner)`: the sizes before, at and after `axis`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// ArgMax / ArgMin along `axis`, as i64.
fn arg_extreme(op: Op, attrs: &Attrs, x: &Tensor) -> Result<Tensor> {
    let axis = norm_axis(op, attrs.int_or("axis", 0)?, x.rank())?;
    let keep = attrs.int_or("keepdims", 1)? != 0;
    let last = attrs.int_or("select_last_index", 0)? != 0;
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    if n == 0 && outer * inner > 0 {
        return Err(Error::invalid(format!(
            "{op}: axis {axis} of shape {:?} is empty, so there is no extreme element",
            x.shape()
        )));
    }
    fn go<T: Element + PartialOrd>(
        v: &[T],
        max: bool,
        last: bool,
        (outer, n, inner): (usize, usize, usize),
    ) -> Vec<i64> {
        #[allow(clippy::eq_op)]
        let nan = |a: T| a != a;
        // Whether `a` replaces the current best `b`: NaN beats everything (first NaN wins
        // unless `last`); otherwise strictly better, or equal when `last`.
        let better = |a: T, b: T| {
            if nan(b) {
                last && nan(a)
            } else if nan(a) {
                true
            } else if max {
                a > b || (last && a == b)
            } else {
                a < b || (last && a == b)
            }
        };
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let base = o * n * inner + i;
                let mut best = 0;
                for k in 1..n {
                    if better(v[base + k * inner], v[base + best * inner]) {
                        best = k;
                    }
                }
                out.push(best as i64);
            }
        }
        out
    }
    let max = op == Op::ArgMax;
    let idx = crate::with_data!(x.data(), v => go(v, max, last, (outer, n, inner)));
    let mut shape = x.shape().to_vec();
    if keep {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Tensor::from_vec(shape, idx)
}

/// CumSum(x, axis) with `exclusive` and `reverse`.
fn cumsum(op: Op, attrs: &Attrs, x: &Tensor, axis: &Tensor) -> Result<Tensor> {
    let a = match axis.to_i64_vec()?.as_slice() {
        [a] => *a,
        _ => {
            return Err(Error::invalid(format!(
                "{op}: the axis must be a scalar, but has shape {:?}",
                axis.shape()
            )))
        }
    };
    let axis = norm_axis(op, a, x.rank())?;
    let exclusive = attrs.int_or("exclusive", 0)? != 0;
    let reverse = attrs.int_or("reverse", 0)? != 0;
    let dims = split_at_axis(x.shape(), axis);
    fn go<T: Copy>(
        v: &[T],
        zero: T,
        add: impl Fn(T, T) -> T,
        ex: bool,
        rev: bool,
        (outer, n, inner): (usize, usize, usize),
    ) -> Vec<T> {
        let mut out = vec![zero; v.len()];
        for o in 0..outer {
            for i in 0..inner {
                let mut acc = zero;
                for step in 0..n {
                    let k = if rev { n - 1 - step } else { step };
                    let at = o * n * inner + k * inner + i;
                    if ex {
                        out[at] = acc;
                        acc = add(acc, v[at]);
                    } else {
                        acc = add(acc, v[at]);
                        out[at] = acc;
                    }
                }
            }
        }
        out
    }
    fn ints<I: Int>(v: &[I], ex: bool, rev: bool, dims: (usize, usize, usize)) -> Data {
        I::wrap(go(v, I::ZERO, |a, b| a.wadd(b), ex, rev, dims))
    }
    let data = match x.data() {
        Data::F32(v) => Data::F32(go(v, 0.0, |a, b| a + b, exclusive, reverse, dims)),
        Data::F64(v) => Data::F64(go(v, 0.0, |a, b| a + b, exclusive, reverse, dims)),
        d => {
            match_int!(d, v => ints(v, exclusive, reverse, dims), _ => return Err(not_defined(op, x)))
        }
    };
    Tensor::new(x.shape().to_vec(), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;

    fn t<T: Element>(shape: &[usize], v: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    fn axes(v: &[i64]) -> Tensor {
        t(&[v.len()], v.to_vec())
    }

    fn red(op: Op, attrs: &Attrs, x: &Tensor, ax: Option<&Tensor>) -> Tensor {
        eval(op, attrs, &[Some(x), ax], 1).unwrap().remove(0)
    }

    #[test]
    fn sum_and_mean_over_axes() {
        let x = t(&[2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let r = red(Op::ReduceSum, &Attrs::new(), &x, Some(&axes(&[1])));
        assert_eq!(
            (r.shape(), r.as_slice::<f32>().unwrap()),
            (&[2usize, 1][..], &[6.0f32, 15.0][..])
        );
        let drop = Attrs::new().with("keepdims", Attr::Int(0));
        let r = red(Op::ReduceMean, &drop, &x, Some(&axes(&[-2])));
        assert_eq!(
            (r.shape(), r.as_slice::<f32>().unwrap()),
            (&[3usize][..], &[2.5f32, 3.5, 4.5][..])
        );
        let r = red(Op::ReduceProd, &drop, &x, None);
        assert_eq!(
            (r.shape(), r.as_slice::<f32>().unwrap()),
            (&[][..], &[720.0f32][..])
        );
        let noop = Attrs::new().with("noop_with_empty_axes", Attr::Int(1));
        assert_eq!(red(Op::ReduceSum, &noop, &x, Some(&axes(&[]))), x);
    }

    #[test]
    fn norms_and_log_sums() {
        let x = t(&[1, 2], vec![3.0f64, -4.0]);
        let a = Attrs::new();
        assert_eq!(
            red(Op::ReduceL1, &a, &x, None).as_slice::<f64>().unwrap(),
            &[7.0]
        );
        assert_eq!(
            red(Op::ReduceL2, &a, &x, None).as_slice::<f64>().unwrap(),
            &[5.0]
        );
        assert_eq!(
            red(Op::ReduceSumSquare, &a, &x, None)
                .as_slice::<f64>()
                .unwrap(),
            &[25.0]
        );
        let y = t(&[2], vec![1000.0f32, 1000.0]);
        let lse = red(Op::ReduceLogSumExp, &a, &y, None);
        assert!((lse.as_slice::<f32>().unwrap()[0] - (1000.0 + 2f32.ln())).abs() < 1e-3);
        let z = t(&[2], vec![f32::NEG_INFINITY, f32::NEG_INFINITY]);
        assert_eq!(
            red(Op::ReduceLogSumExp, &a, &z, None)
                .as_slice::<f32>()
                .unwrap(),
            &[f32::NEG_INFINITY]
        );
        let l = red(Op::ReduceLogSum, &a, &t(&[2], vec![1.0f32, 2.0]), None);
        assert!((l.as_slice::<f32>().unwrap()[0] - 3f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn empty_sets_follow_onnx() {
        let x = t(&[2, 0, 4], Vec::<f32>::new());
        let ax = axes(&[1]);
        let a = Attrs::new();
        let val = |op| {
            red(op, &a, &x, Some(&ax))
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(val(Op::ReduceSum), vec![0.0; 8]);
        assert_eq!(val(Op::ReduceProd), vec![1.0; 8]);
        assert_eq!(val(Op::ReduceMax), vec![f32::NEG_INFINITY; 8]);
        assert_eq!(val(Op::ReduceMin), vec![f32::INFINITY; 8]);
        assert_eq!(val(Op::ReduceLogSumExp), vec![f32::NEG_INFINITY; 8]);
        assert_eq!(val(Op::ReduceLogSum), vec![f32::NEG_INFINITY; 8]);
        assert_eq!(val(Op::ReduceL2), vec![0.0; 8]);
        let xi = t(&[0, 2], Vec::<i32>::new());
        let r = red(Op::ReduceMax, &Attrs::new(), &xi, Some(&axes(&[0])));
        assert_eq!(r.as_slice::<i32>().unwrap(), &[i32::MIN, i32::MIN]);
    }

    #[test]
    fn integers_wrap_and_bools_reduce() {
        let x = t(&[3], vec![100i8, 100, 100]);
        assert_eq!(
            red(Op::ReduceSum, &Attrs::new(), &x, None)
                .as_slice::<i8>()
                .unwrap(),
            &[44]
        );
        let m = red(
            Op::ReduceMean,
            &Attrs::new(),
            &t(&[2], vec![-3i32, 0]),
            None,
        );
        assert_eq!(m.as_slice::<i32>().unwrap(), &[-1]);
        let b = t(&[2, 2], vec![true, false, false, false]);
        let r = red(Op::ReduceMax, &Attrs::new(), &b, Some(&axes(&[1])));
        assert_eq!(r.as_slice::<bool>().unwrap(), &[true, false]);
        let r = red(Op::ReduceMin, &Attrs::new(), &b, Some(&axes(&[0])));
        assert_eq!(r.as_slice::<bool>().unwrap(), &[false, false]);
    }

    #[test]
    fn half_precision_accumulates_in_f32() {
        // 2048 + 1 + 1 in f16 step by step stays 2048; accumulated in f32 it is 2050.
        let x = Tensor::from_vec(
            vec![3],
            vec![half::f16::from_f32(2048.0), half::f16::ONE, half::f16::ONE],
        )
        .unwrap();
        let r = red(Op::ReduceSum, &Attrs::new(), &x, None);
        assert_eq!(r.as_slice::<half::f16>().unwrap()[0].to_f32(), 2050.0);
    }

    #[test]
    fn argmax_argmin_with_ties_and_nan() {
        let x = t(&[2, 3], vec![1.0f32, 3.0, 3.0, f32::NAN, 0.0, f32::NAN]);
        let a = Attrs::new().with("axis", Attr::Int(1));
        let r = eval(Op::ArgMax, &a, &[Some(&x)], 1).unwrap().remove(0);
        assert_eq!(
            (r.shape(), r.as_slice::<i64>().unwrap()),
            (&[2usize, 1][..], &[1i64, 0][..])
        );
        let last = a
            .clone()
            .with("select_last_index", Attr::Int(1))
            .with("keepdims", Attr::Int(0));
        let r = eval(Op::ArgMax, &last, &[Some(&x)], 1).unwrap().remove(0);
        assert_eq!(
            (r.shape(), r.as_slice::<i64>().unwrap()),
            (&[2usize][..], &[2i64, 2][..])
        );
        let y = t(&[3], vec![2u8, 1, 1]);
        let r = eval(Op::ArgMin, &Attrs::new(), &[Some(&y)], 1)
            .unwrap()
            .remove(0);
        assert_eq!(r.as_slice::<i64>().unwrap(), &[1]);
        let e = t(&[0, 2], Vec::<f32>::new());
        assert!(eval(Op::ArgMax, &Attrs::new(), &[Some(&e)], 1).is_err());
    }

    #[test]
    fn cumsum_variants() {
        let x = t(&[3], vec![1.0f64, 2.0, 3.0]);
        let ax = Tensor::scalar(0i32);
        let run = |attrs: Attrs| {
            eval(Op::CumSum, &attrs, &[Some(&x), Some(&ax)], 1)
                .unwrap()
                .remove(0)
                .as_slice::<f64>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(run(Attrs::new()), vec![1.0, 3.0, 6.0]);
        assert_eq!(
            run(Attrs::new().with("exclusive", Attr::Int(1))),
            vec![0.0, 1.0, 3.0]
        );
        assert_eq!(
            run(Attrs::new().with("reverse", Attr::Int(1))),
            vec![6.0, 5.0, 3.0]
        );
        let both = Attrs::new()
            .with("reverse", Attr::Int(1))
            .with("exclusive", Attr::Int(1));
        assert_eq!(run(both), vec![5.0, 3.0, 0.0]);
        let m = t(&[2, 2], vec![1i64, 2, 3, 4]);
        let r = eval(
            Op::CumSum,
            &Attrs::new(),
            &[Some(&m), Some(&Tensor::scalar(-1i64))],
            1,
        )
        .unwrap()
        .remove(0);
        assert_eq!(r.as_slice::<i64>().unwrap(), &[1, 3, 3, 7]);
    }
}
