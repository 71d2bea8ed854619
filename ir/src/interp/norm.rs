//! Interpreter for the Normalization class: Softmax, LogSoftmax, Hardmax,
//! LayerNormalization, RMSNormalization, BatchNormalization (inference mode),
//! InstanceNormalization, GroupNormalization, LpNormalization and
//! MeanVarianceNormalization.
//!
//! Every op here takes float tensors. f32, f16 and bf16 compute in f32 and
//! round once on output; f64 computes in f64 (see [`Real`]). Statistics are
//! two-pass (mean, then mean of squared deviations) and accumulate in index
//! order. Softmax subtracts the lane maximum before exponentiating.

use super::linalg::num::Real;
use super::util::{broadcast_indices, input, norm_axes, norm_axis, opt_input};
use crate::{shape, Attrs, DType, Error, Op, Result, Tensor};

/// Calls `$f::<f64>` for f64 tensors and `$f::<f32>` otherwise.
macro_rules! by_real {
    ($dtype:expr, $f:ident($($a:expr),* $(,)?)) => {
        if $dtype == DType::F64 { $f::<f64>($($a),*) } else { $f::<f32>($($a),*) }
    };
}

pub(crate) fn eval(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let x = input(op, inputs, 0)?;
    if !x.dtype().is_float() {
        return Err(Error::invalid(format!(
            "{op}: input 0 must be a float tensor, found {}",
            x.ty()
        )));
    }
    if op == Op::BatchNormalization && attrs.int_or("training_mode", 0)? != 0 {
        return Err(Error::unsupported(
            "BatchNormalization with training_mode=1 (only inference mode is supported)",
        ));
    }
    let dt = x.dtype();
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Softmax | Op::LogSoftmax | Op::Hardmax => {
            let axis = norm_axis(op, attrs.int_or("axis", -1)?, x.rank())?;
            one(by_real!(dt, softmax(op, x, axis))?)
        }
        Op::LayerNormalization => layer_norm(attrs, inputs, n_outputs),
        Op::RMSNormalization => {
            let scale = input(op, inputs, 1)?;
            let axis = norm_axis(op, attrs.int_or("axis", -1)?, x.rank())?;
            let eps = attrs.float_or("epsilon", 1e-5)? as f64;
            stash_dtype(attrs)?;
            one(by_real!(dt, rms_norm(x, scale, axis, eps))?)
        }
        Op::BatchNormalization => {
            let eps = attrs.float_or("epsilon", 1e-5)? as f64;
            let p: Vec<&Tensor> = (1..5)
                .map(|i| input(op, inputs, i))
                .collect::<Result<_>>()?;
            one(by_real!(dt, batch_norm(x, &p, eps))?)
        }
        Op::InstanceNormalization => {
            let eps = attrs.float_or("epsilon", 1e-5)? as f64;
            let (s, b) = (input(op, inputs, 1)?, input(op, inputs, 2)?);
            let c = *x.shape().get(1).ok_or_else(|| {
                Error::invalid(format!(
                    "{op}: input must have rank >= 2, got {:?}",
                    x.shape()
                ))
            })?;
            one(by_real!(dt, group_norm(op, x, s, b, c, eps))?)
        }
        Op::GroupNormalization => {
            let eps = attrs.float_or("epsilon", 1e-5)? as f64;
            stash_dtype(attrs)?;
            let (s, b) = (input(op, inputs, 1)?, input(op, inputs, 2)?);
            let g = attrs.int("num_groups")?.ok_or_else(|| Error::Attr {
                attr: "num_groups".into(),
                msg: "GroupNormalization requires it".into(),
            })?;
            let c = x.shape().get(1).copied().unwrap_or(0);
            if x.rank() < 2 || g <= 0 || c % g as usize != 0 {
                return Err(Error::invalid(format!(
                    "{op}: num_groups {g} must be positive and divide the channel count of {:?}",
                    x.shape()
                )));
            }
            one(by_real!(dt, group_norm(op, x, s, b, g as usize, eps))?)
        }
        Op::LpNormalization => {
            let axis = norm_axis(op, attrs.int_or("axis", -1)?, x.rank())?;
            let p = attrs.int_or("p", 2)?;
            if p != 1 && p != 2 {
                return Err(Error::Attr {
                    attr: "p".into(),
                    msg: format!("must be 1 or 2, got {p}"),
                });
            }
            one(by_real!(dt, lp_norm(x, axis, p == 1))?)
        }
        Op::MeanVarianceNormalization => {
            let axes = attrs.ints("axes")?.unwrap_or(&[0, 2, 3]);
            let axes = norm_axes(op, axes, x.rank())?;
            one(by_real!(dt, mvn(x, &axes))?)
        }
        _ => Err(Error::unsupported(format!(
            "{op} is not a Normalization op"
        ))),
    }
}

/// `stash_type` as a dtype (default f32): the precision of the statistics and
/// the dtype of LayerNormalization's Mean and InvStdDev outputs.
pub(crate) fn stash_dtype(attrs: &Attrs) -> Result<DType> {
    let code = attrs.int_or("stash_type", 1)?;
    match i32::try_from(code).ok().and_then(DType::from_onnx_code) {
        Some(d) if d.is_float() => Ok(d),
        _ => Err(Error::Attr {
            attr: "stash_type".into(),
            msg: format!("must be a float type code, got {code}"),
        }),
    }
}

/// (product of dims before `axis`, dim at `axis`, product of dims after it).
fn lanes(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// Softmax, LogSoftmax or Hardmax along `axis`.
fn softmax<R: Real>(op: Op, x: &Tensor, axis: usize) -> Result<Tensor> {
    let (outer, n, inner) = lanes(x.shape(), axis);
    let mut v = R::read(x);
    for o in 0..outer {
        for r in 0..inner {
            let at = |k: usize| o * n * inner + k * inner + r;
            let mut m = R::NEG_INFINITY;
            for k in 0..n {
                m = m.nan_max(v[at(k)]);
            }
            match op {
                Op::Softmax => {
                    let mut s = R::ZERO;
                    for k in 0..n {
                        let e = (v[at(k)] - m).exp();
                        v[at(k)] = e;
                        s += e;
                    }
                    for k in 0..n {
                        v[at(k)] = v[at(k)] / s;
                    }
                }
                Op::LogSoftmax => {
                    let mut s = R::ZERO;
                    for k in 0..n {
                        s += (v[at(k)] - m).exp();
                    }
                    let ls = s.ln();
                    for k in 0..n {
                        v[at(k)] = (v[at(k)] - m) - ls;
                    }
                }
                _ => {
                    // Hardmax: 1 at the first maximum (the first NaN, if any)
                    let first = (0..n).find(|&k| {
                        let e = v[at(k)];
                        if m.is_nan() {
                            e.is_nan()
                        } else {
                            e == m
                        }
                    });
                    for k in 0..n {
                        v[at(k)] = if Some(k) == first { R::ONE } else { R::ZERO };
                    }
                }
            }
        }
    }
    R::write(v, x.dtype(), x.shape().to_vec())
}

/// For each element of `x_shape`, the index into parameter `p` broadcast onto
/// it (unidirectional broadcasting: `p` must broadcast to exactly `x_shape`).
fn unidirectional(op: Op, what: &str, p: &[usize], x_shape: &[usize]) -> Result<Vec<usize>> {
    if shape::broadcast_shapes(p, x_shape).as_deref() != Some(x_shape) {
        return Err(Error::invalid(format!(
            "{op}: {what} {p:?} does not broadcast to the input's shape {x_shape:?}"
        )));
    }
    Ok(broadcast_indices(p, x_shape))
}

/// Mean and 1/sqrt(var + eps) of a slice (two-pass, population variance).
fn stats<R: Real>(row: &[R], eps: R) -> (R, R) {
    let n = R::of(row.len() as f64);
    let mut s = R::ZERO;
    for &x in row {
        s += x;
    }
    let mean = s / n;
    let mut ss = R::ZERO;
    for &x in row {
        let d = x - mean;
        ss += d * d;
    }
    let var = ss / n;
    (mean, R::ONE / (var + eps).sqrt())
}

fn layer_norm(attrs: &Attrs, inputs: &[Option<&Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let op = Op::LayerNormalization;
    let x = input(op, inputs, 0)?;
    let scale = input(op, inputs, 1)?;
    let bias = opt_input(inputs, 2);
    let axis = norm_axis(op, attrs.int_or("axis", -1)?, x.rank())?;
    let eps = attrs.float_or("epsilon", 1e-5)? as f64;
    let stash = stash_dtype(attrs)?;
    let ln = LayerNorm {
        x,
        scale,
        bias,
        axis,
        eps,
        stash,
        n_outputs,
    };
    if x.dtype() == DType::F64 || stash == DType::F64 {
        ln.run::<f64>()
    } else {
        ln.run::<f32>()
    }
}

struct LayerNorm<'a> {
    x: &'a Tensor,
    scale: &'a Tensor,
    bias: Option<&'a Tensor>,
    axis: usize,
    eps: f64,
    stash: DType,
    n_outputs: usize,
}

impl LayerNorm<'_> {
    fn run<R: Real>(&self) -> Result<Vec<Tensor>> {
        let op = Op::LayerNormalization;
        let shape = self.x.shape();
        let rows: usize = shape[..self.axis].iter().product();
        let cols: usize = shape[self.axis..].iter().product();
        let xv = R::read(self.x);
        let sv = R::read(self.scale);
        let si = unidirectional(op, "Scale", self.scale.shape(), shape)?;
        let bias = match self.bias {
            Some(b) => Some((R::read(b), unidirectional(op, "B", b.shape(), shape)?)),
            None => None,
        };
        let eps = R::of(self.eps);
        let mut y = Vec::with_capacity(xv.len());
        let (mut means, mut invs) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
        for r in 0..rows {
            let row = &xv[r * cols..(r + 1) * cols];
            let (mean, inv) = stats(row, eps);
            for (j, &v) in row.iter().enumerate() {
                let e = r * cols + j;
                let mut out = (v - mean) * inv * sv[si[e]];
                if let Some((bv, bi)) = &bias {
                    out += bv[bi[e]];
                }
                y.push(out);
            }
            means.push(mean);
            invs.push(inv);
        }
        let mut stat_shape = shape[..self.axis].to_vec();
        stat_shape.resize(shape.len(), 1);
        let mut outs = vec![R::write(y, self.x.dtype(), shape.to_vec())?];
        if self.n_outputs > 1 {
            outs.push(R::write(means, self.stash, stat_shape.clone())?);
        }
        if self.n_outputs > 2 {
            outs.push(R::write(invs, self.stash, stat_shape)?);
        }
        Ok(outs)
    }
}

fn rms_norm<R: Real>(x: &Tensor, scale: &Tensor, axis: usize, eps: f64) -> Result<Tensor> {
    let shape = x.shape();
    let cols: usize = shape[axis..].iter().product();
    let xv = R::read(x);
    let sv = R::read(scale);
    let si = unidirectional(Op::RMSNormalization, "scale", scale.shape(), shape)?;
    let mut y = Vec::with_capacity(xv.len());
    let (eps, n) = (R::of(eps), R::of(cols as f64));
    for (r, row) in xv.chunks(cols.max(1)).enumerate() {
        let mut ss = R::ZERO;
        for &v in row {
            ss += v * v;
        }
        let inv = R::ONE / (ss / n + eps).sqrt();
        for (j, &v) in row.iter().enumerate() {
            y.push(v * inv * sv[si[r * cols + j]]);
        }
    }
    R::write(y, x.dtype(), shape.to_vec())
}

/// Reads a per-channel parameter, checking it has `c` elements.
fn per_channel<R: Real>(op: Op, what: &str, p: &Tensor, c: usize) -> Result<Vec<R>> {
    if p.numel() != c || p.rank() > 1 {
        return Err(Error::invalid(format!(
            "{op}: {what} must be a 1-D tensor of {c} elements (one per channel), got {:?}",
            p.shape()
        )));
    }
    Ok(R::read(p))
}

/// Inference-mode BatchNormalization; `p` = [scale, B, input_mean, input_var].
fn batch_norm<R: Real>(x: &Tensor, p: &[&Tensor], eps: f64) -> Result<Tensor> {
    let op = Op::BatchNormalization;
    let shape = x.shape();
    // rank 1: (N), with one channel
    let (c, inner) = match shape {
        [_] => (1, 1),
        [_, c, rest @ ..] => (*c, rest.iter().product()),
        _ => {
            return Err(Error::invalid(format!(
                "{op}: input must have rank >= 1, got {shape:?}"
            )))
        }
    };
    let names = ["scale", "B", "input_mean", "input_var"];
    let v: Vec<Vec<R>> = p
        .iter()
        .zip(names)
        .map(|(t, n)| per_channel(op, n, t, c))
        .collect::<Result<_>>()?;
    let (s, b, mean, var) = (&v[0], &v[1], &v[2], &v[3]);
    let eps = R::of(eps);
    let den: Vec<R> = var.iter().map(|&v| (v + eps).sqrt()).collect();
    let xv = R::read(x);
    let y: Vec<R> = xv
        .iter()
        .enumerate()
        .map(|(e, &v)| {
            let ch = (e / inner.max(1)) % c;
            s[ch] * (v - mean[ch]) / den[ch] + b[ch]
        })
        .collect();
    R::write(y, x.dtype(), shape.to_vec())
}

/// GroupNormalization with `groups` groups; InstanceNormalization is the case
/// groups = channels. Input (N, C, D...), scale and bias per channel.
fn group_norm<R: Real>(
    op: Op,
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
) -> Result<Tensor> {
    let shape = x.shape();
    let c = shape[1];
    let inner: usize = shape[2..].iter().product();
    let s: Vec<R> = per_channel(op, "scale", scale, c)?;
    let b: Vec<R> = per_channel(op, "bias", bias, c)?;
    let xv = R::read(x);
    let block = c
        .checked_div(groups)
        .map_or(0, |per_group| per_group * inner);
    let eps = R::of(eps);
    let mut y = Vec::with_capacity(xv.len());
    for (gi, chunk) in xv.chunks(block.max(1)).enumerate() {
        let (mean, inv) = stats(chunk, eps);
        let den = R::ONE / inv;
        for (j, &v) in chunk.iter().enumerate() {
            let ch = ((gi * block + j) / inner.max(1)) % c;
            // the two references order the operations differently
            y.push(if op == Op::InstanceNormalization {
                s[ch] * (v - mean) / den + b[ch]
            } else {
                (v - mean) / den * s[ch] + b[ch]
            });
        }
    }
    R::write(y, x.dtype(), shape.to_vec())
}

fn lp_norm<R: Real>(x: &Tensor, axis: usize, l1: bool) -> Result<Tensor> {
    let (outer, n, inner) = lanes(x.shape(), axis);
    let mut v = R::read(x);
    for o in 0..outer {
        for r in 0..inner {
            let at = |k: usize| o * n * inner + k * inner + r;
            let mut s = R::ZERO;
            for k in 0..n {
                let e = v[at(k)];
                s += if l1 { e.abs() } else { e * e };
            }
            let norm = if l1 { s } else { s.sqrt() };
            for k in 0..n {
                v[at(k)] = if norm == R::ZERO {
                    R::ZERO
                } else {
                    v[at(k)] / norm
                };
            }
        }
    }
    R::write(v, x.dtype(), x.shape().to_vec())
}

/// MeanVarianceNormalization, as ONNX's function body defines it:
/// `(X - E[X]) / (sqrt(E[X²] - E[X]²) + 1e-9)` over `axes`.
fn mvn<R: Real>(x: &Tensor, axes: &[usize]) -> Result<Tensor> {
    let shape = x.shape();
    let mut kept = shape.to_vec();
    for &a in axes {
        kept[a] = 1;
    }
    let groups: usize = kept.iter().product();
    let count = R::of((shape.iter().product::<usize>() / groups.max(1)) as f64);
    let idx = broadcast_indices(&kept, shape);
    let xv = R::read(x);
    let (mut m, mut m2) = (vec![R::ZERO; groups], vec![R::ZERO; groups]);
    for (&v, &g) in xv.iter().zip(&idx) {
        m[g] += v;
        m2[g] += v * v;
    }
    let std: Vec<R> = m
        .iter_mut()
        .zip(&m2)
        .map(|(mean, &sq)| {
            *mean = *mean / count;
            (sq / count - *mean * *mean).sqrt() + R::of(1e-9)
        })
        .collect();
    let y: Vec<R> = xv
        .iter()
        .zip(&idx)
        .map(|(&v, &g)| (v - m[g]) / std[g])
        .collect();
    R::write(y, x.dtype(), shape.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;

    fn run(op: Op, attrs: Attrs, ins: &[&Tensor], n_out: usize) -> Result<Vec<Tensor>> {
        let ins: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        eval(op, &attrs, &ins, n_out)
    }

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn close(a: &Tensor, b: &[f32]) {
        let av = a.to_f64_vec();
        assert_eq!(av.len(), b.len(), "{av:?} vs {b:?}");
        for (x, y) in av.iter().zip(b) {
            assert!((x - *y as f64).abs() < 1e-4, "{av:?} vs {b:?}");
        }
    }

    #[test]
    fn softmax_family() {
        let x = t(&[2, 2], &[0., 0., 1000., 1000. + 2f32.ln()]);
        let y = &run(Op::Softmax, Attrs::new(), &[&x], 1).unwrap()[0];
        close(y, &[0.5, 0.5, 1. / 3., 2. / 3.]);
        // along axis 0: columns
        let y = &run(
            Op::Softmax,
            Attrs::new().with("axis", Attr::Int(0)),
            &[&x],
            1,
        )
        .unwrap()[0];
        close(y, &[0., 0., 1., 1.]);
        let y = &run(Op::LogSoftmax, Attrs::new(), &[&x], 1).unwrap()[0];
        close(
            y,
            &[-(2f32.ln()), -(2f32.ln()), -(3f32.ln()), (2f32 / 3.).ln()],
        );
        let h = t(&[2, 3], &[1., 3., 3., -1., -2., -3.]);
        let y = &run(Op::Hardmax, Attrs::new(), &[&h], 1).unwrap()[0];
        assert_eq!(y, &t(&[2, 3], &[0., 1., 0., 1., 0., 0.]));
        assert!(run(
            Op::Softmax,
            Attrs::new().with("axis", Attr::Int(2)),
            &[&x],
            1
        )
        .is_err());
        let e = t(&[0, 3], &[]);
        assert_eq!(
            run(Op::Softmax, Attrs::new(), &[&e], 1).unwrap()[0].shape(),
            &[0, 3]
        );
    }

    #[test]
    fn layer_norm_outputs_mean_and_inv_std() {
        // row [1, 3]: mean 2, var 1, inv ~ 1/sqrt(1 + 1e-5)
        let x = t(&[2, 2], &[1., 3., 5., 5.]);
        let s = t(&[2], &[1., 2.]);
        let b = t(&[2], &[0., 1.]);
        let y = run(Op::LayerNormalization, Attrs::new(), &[&x, &s, &b], 3).unwrap();
        let inv = 1.0 / (1.0f32 + 1e-5).sqrt();
        close(&y[0], &[-inv, 2. * inv + 1., 0., 1.]);
        assert_eq!(y[1], t(&[2, 1], &[2., 5.]));
        close(&y[2], &[inv, 1. / 1e-5f32.sqrt()]);
        // axis 0 normalises everything; statistics shape [1, 1]
        let s = t(&[2, 2], &[1.; 4]);
        let y = run(
            Op::LayerNormalization,
            Attrs::new().with("axis", Attr::Int(0)),
            &[&x, &s],
            2,
        )
        .unwrap();
        assert_eq!(y[1], t(&[1, 1], &[3.5]));
        let bad = t(&[3], &[1.; 3]);
        assert!(run(Op::LayerNormalization, Attrs::new(), &[&x, &bad], 1).is_err());
    }

    #[test]
    fn rms_norm() {
        // [3, 4]: mean square 12.5 -> rms sqrt(12.5 + eps)
        let x = t(&[1, 2], &[3., 4.]);
        let s = t(&[2], &[1., 2.]);
        let y = &run(Op::RMSNormalization, Attrs::new(), &[&x, &s], 1).unwrap()[0];
        let r = (12.5f32 + 1e-5).sqrt();
        close(y, &[3. / r, 8. / r]);
    }

    #[test]
    fn batch_instance_and_group_norm() {
        // N=1, C=2, 2 elements per channel
        let x = t(&[1, 2, 2], &[1., 3., 10., 20.]);
        let p = |v: [f32; 2]| t(&[2], &v);
        let attrs = Attrs::new().with("epsilon", Attr::Float(0.0));
        let y = &run(
            Op::BatchNormalization,
            attrs.clone(),
            &[&x, &p([2., 1.]), &p([1., 0.]), &p([1., 10.]), &p([4., 25.])],
            1,
        )
        .unwrap()[0];
        // ch0: 2*(x-1)/2 + 1 -> 1, 3; ch1: (x-10)/5 -> 0, 2
        close(y, &[1., 3., 0., 2.]);
        let training = attrs.clone().with("training_mode", Attr::Int(1));
        let e = run(
            Op::BatchNormalization,
            training,
            &[&x, &p([1., 1.]), &p([0., 0.]), &p([0., 0.]), &p([1., 1.])],
            1,
        );
        assert!(matches!(e, Err(Error::Unsupported(_))));
        // instance: per channel mean 2 / 15, std 1 / 5
        let y = &run(
            Op::InstanceNormalization,
            attrs.clone(),
            &[&x, &p([1., 2.]), &p([0., 1.])],
            1,
        )
        .unwrap()[0];
        close(y, &[-1., 1., -1., 3.]);
        // one group: mean 8.5, var = (7.5² + 5.5² + 1.5² + 11.5²) / 4 = 55.25
        let g = attrs.with("num_groups", Attr::Int(1));
        let y = &run(
            Op::GroupNormalization,
            g.clone(),
            &[&x, &p([1., 1.]), &p([0., 0.])],
            1,
        )
        .unwrap()[0];
        let sd = 55.25f32.sqrt();
        close(y, &[-7.5 / sd, -5.5 / sd, 1.5 / sd, 11.5 / sd]);
        let g3 = g.with("num_groups", Attr::Int(3));
        assert!(run(
            Op::GroupNormalization,
            g3,
            &[&x, &p([1., 1.]), &p([0., 0.])],
            1
        )
        .is_err());
    }

    #[test]
    fn lp_norm_and_mvn() {
        let x = t(&[2, 2], &[3., -4., 0., 0.]);
        let y = &run(Op::LpNormalization, Attrs::new(), &[&x], 1).unwrap()[0];
        close(y, &[0.6, -0.8, 0., 0.]);
        let y = &run(
            Op::LpNormalization,
            Attrs::new().with("p", Attr::Int(1)),
            &[&x],
            1,
        )
        .unwrap()[0];
        close(y, &[3. / 7., -4. / 7., 0., 0.]);
        assert!(run(
            Op::LpNormalization,
            Attrs::new().with("p", Attr::Int(3)),
            &[&x],
            1
        )
        .is_err());
        // MVN over axis 1: row [3, -4] -> mean -0.5, std 3.5
        let attrs = Attrs::new().with("axes", Attr::Ints(vec![1]));
        let y = &run(Op::MeanVarianceNormalization, attrs, &[&x], 1).unwrap()[0];
        close(y, &[1., -1., 0., 0.]);
        // default axes [0, 2, 3] need rank 4
        assert!(run(Op::MeanVarianceNormalization, Attrs::new(), &[&x], 1).is_err());
    }
}
