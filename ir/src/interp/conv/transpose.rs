//! ConvTranspose, the adjoint of Conv: `X` is `[N, C, in...]`, `W` is
//! `[C, M / group, k...]`, `Y` is `[N, M, out...]`, and input position `i`
//! with kernel tap `t` adds `X * W` into output position
//! `i * stride - pad_begin + t * dilation` (sizes and pads: see
//! [`conv_transpose_axis`]).
//!
//! Per image and group, the `[M/group * taps, in]` column matrix
//! `W_gᵀ · X_g` is computed with the shared GEMM, then scattered into the
//! output (col2im), and the bias is added last.

use super::{add_bias, check_float_operands, gemm, read_group, Acc};
use crate::interp::util::{input, opt_input};
use crate::interp::window::{
    checked_numel, conv_transpose_axis, f32_values, from_f32, next_index, valid_range, Axis,
    TransposeAttrs, WindowAttrs,
};
use crate::{shape, Attrs, Data, Error, Op, Result, Tensor};

pub(super) fn conv_transpose(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::ConvTranspose;
    let x = input(op, inputs, 0)?;
    let w = input(op, inputs, 1)?;
    let b = opt_input(inputs, 2);
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(Error::invalid(format!(
            "{op} needs X of rank >= 3 and W of the same rank, found X {xs:?} and W {ws:?}"
        )));
    }
    let group = read_group(op, attrs)?;
    let c = xs[1];
    if ws[0] != c || c % group != 0 {
        return Err(Error::invalid(format!(
            "{op}: X {xs:?} and W {ws:?} do not match with group {group} (need W[0] = C, divisible by group)"
        )));
    }
    let m = ws[1]
        .checked_mul(group)
        .ok_or_else(|| Error::invalid(format!("{op}: W {ws:?} with group {group} is too large")))?;
    let r = xs.len() - 2;
    let wa = WindowAttrs::read(op, attrs, r, Some(&ws[2..]))?;
    let ta = TransposeAttrs::read(op, attrs, r)?;
    let axes = xs[2..]
        .iter()
        .enumerate()
        .map(|(i, &n)| conv_transpose_axis(op, &wa, &ta, i, n))
        .collect::<Result<Vec<_>>>()?;
    check_float_operands(op, x, w, b, m)?;
    let mut shape = vec![xs[0], m];
    shape.extend(axes.iter().map(|a| a.output));
    checked_numel(op, &shape)?;
    // the column buffer: [M/group * taps, in]
    let mut cols = vec![ws[1]];
    cols.extend(axes.iter().flat_map(|a| [a.kernel, a.input]));
    checked_numel(op, &cols)?;
    let out_size: usize = shape[2..].iter().product();
    let dims = Dims {
        batch: xs[0],
        in_channels: c,
        out_channels: m,
        group,
    };
    let data = match (x.data(), w.data()) {
        (Data::F64(xv), Data::F64(wv)) => {
            let mut y = conv_transpose_nd(xv, wv, &dims, &axes);
            if let Some(Data::F64(bv)) = b.map(Tensor::data) {
                add_bias(&mut y, bv, out_size);
            }
            Data::F64(y)
        }
        _ => {
            let mut y = conv_transpose_nd(&f32_values(op, x)?, &f32_values(op, w)?, &dims, &axes);
            if let Some(b) = b {
                add_bias(&mut y, &f32_values(op, b)?, out_size);
            }
            from_f32(x.dtype(), y)
        }
    };
    Tensor::new(shape, data)
}

struct Dims {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    group: usize,
}

/// The transposed-convolution sums without bias.
fn conv_transpose_nd<T: Acc>(x: &[T], w: &[T], d: &Dims, axes: &[Axis]) -> Vec<T> {
    let in_size: usize = axes.iter().map(|a| a.input).product();
    let out_size: usize = axes.iter().map(|a| a.output).product();
    let taps: usize = axes.iter().map(|a| a.kernel).product();
    let (cg, mg) = (d.in_channels / d.group, d.out_channels / d.group);
    let rows = mg * taps;
    let mut y = vec![T::default(); d.batch * d.out_channels * out_size];
    if y.is_empty() || in_size == 0 || rows == 0 {
        return y;
    }
    let mut wt = vec![T::default(); rows * cg];
    let mut cols = vec![T::default(); rows * in_size];
    for g in 0..d.group {
        // W_gᵀ: [rows, cg]
        let wg = &w[g * cg * rows..][..cg * rows];
        for (ci, wrow) in wg.chunks_exact(rows).enumerate() {
            for (r, &v) in wrow.iter().enumerate() {
                wt[r * cg + ci] = v;
            }
        }
        for n in 0..d.batch {
            let xg = &x[(n * d.in_channels + g * cg) * in_size..][..cg * in_size];
            cols.fill(T::default());
            gemm(&wt, xg, &mut cols, rows, cg, in_size);
            let yg = &mut y[(n * d.out_channels + g * mg) * out_size..][..mg * out_size];
            col2im(&cols, mg, axes, yg);
        }
    }
    y
}

/// Adds `cols[(channel, tap), input position]` into the `channels` output planes of `y`.
fn col2im<T: Acc>(cols: &[T], channels: usize, axes: &[Axis], y: &mut [T]) {
    let r = axes.len();
    let in_dims: Vec<usize> = axes.iter().map(|a| a.input).collect();
    let out_dims: Vec<usize> = axes.iter().map(|a| a.output).collect();
    let k_dims: Vec<usize> = axes.iter().map(|a| a.kernel).collect();
    let out_strides = shape::strides(&out_dims);
    let in_size: usize = in_dims.iter().product();
    let out_size: usize = out_dims.iter().product();
    let last = axes[r - 1];
    let row_len = last.input;
    let outer_dims = &in_dims[..r - 1];
    let mut tap = vec![0usize; r];
    let mut i = vec![0usize; r - 1];
    let mut row = 0;
    for c in 0..channels {
        let yc = &mut y[c * out_size..][..out_size];
        loop {
            let src = &cols[row * in_size..][..in_size];
            let off = (tap[r - 1] * last.dilation) as i64 - last.pad_begin;
            let (lo, hi) = valid_range(off, last.stride, last.output, row_len);
            for seg in src.chunks_exact(row_len) {
                let mut base = Some(0usize);
                for d in 0..r - 1 {
                    let a = &axes[d];
                    let pos = (i[d] * a.stride + tap[d] * a.dilation) as i64 - a.pad_begin;
                    if pos < 0 || pos >= a.output as i64 {
                        base = None;
                        break;
                    }
                    base = base.map(|b| b + pos as usize * out_strides[d]);
                }
                if let Some(b) = base.filter(|_| lo < hi) {
                    let start = b + (lo as i64 * last.stride as i64 + off) as usize;
                    let dst = yc[start..].iter_mut().step_by(last.stride);
                    for (v, &s) in dst.zip(&seg[lo..hi]) {
                        *v = v.add(s);
                    }
                }
                next_index(&mut i, outer_dims);
            }
            row += 1;
            if !next_index(&mut tap, &k_dims) {
                break;
            }
        }
    }
}
