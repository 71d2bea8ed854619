//! Tests of the Conv class: hand-checked values (several from ONNX's node
//! tests) and comparisons with direct, definition-following loops.

use super::*;
use crate::{Attr, Attrs};
use half::f16;

fn eval(op: Op, attrs: &Attrs, inputs: &[Option<&Tensor>], n: usize) -> Result<Vec<Tensor>> {
    // through eval_op, so the arity check every node gets applies here too
    crate::interp::eval_op(op, attrs, inputs, n)
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

fn f32t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn run(op: Op, attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Tensor {
    eval(op, attrs, inputs, 1).unwrap().remove(0)
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec()
}

fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    f32t(shape, (0..n).map(|v| v as f32).collect())
}

#[test]
fn conv_padding_and_strides() {
    // ONNX test_basic_conv_with_padding / _without_padding
    let x = iota(&[1, 1, 5, 5]);
    let w = f32t(&[1, 1, 3, 3], vec![1.0; 9]);
    let a = Attrs::new()
        .with("kernel_shape", ints(&[3, 3]))
        .with("pads", ints(&[1, 1, 1, 1]));
    let y = run(Op::Conv, &a, &[Some(&x), Some(&w)]);
    assert_eq!(y.shape(), &[1, 1, 5, 5]);
    let want = [
        12, 21, 27, 33, 24, 33, 54, 63, 72, 51, 63, 99, 108, 117, 81, 93, 144, 153, 162, 111, 72,
        111, 117, 123, 84,
    ];
    assert_eq!(vals(&y), want.map(|v| v as f64));
    let y = run(Op::Conv, &Attrs::new(), &[Some(&x), Some(&w)]);
    assert_eq!(
        vals(&y),
        [54, 63, 72, 99, 108, 117, 144, 153, 162].map(|v| v as f64)
    );
    // ONNX test_conv_with_strides_padding / _no_padding
    let x = iota(&[1, 1, 7, 5]);
    let a = Attrs::new()
        .with("strides", ints(&[2, 2]))
        .with("pads", ints(&[1, 1, 1, 1]));
    let y = run(Op::Conv, &a, &[Some(&x), Some(&w)]);
    assert_eq!(y.shape(), &[1, 1, 4, 3]);
    assert_eq!(
        vals(&y),
        [12, 27, 24, 63, 108, 81, 123, 198, 141, 112, 177, 124].map(|v| v as f64)
    );
    let a = Attrs::new().with("strides", ints(&[2, 2]));
    let y = run(Op::Conv, &a, &[Some(&x), Some(&w)]);
    assert_eq!(vals(&y), [54, 72, 144, 162, 234, 252].map(|v| v as f64));
}

#[test]
fn conv_dilation_groups_bias() {
    // y[o] = x[o] + 10 * x[o + 2]
    let x = f32t(&[1, 1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let w = f32t(&[1, 1, 2], vec![1.0, 10.0]);
    let a = Attrs::new().with("dilations", ints(&[2]));
    assert_eq!(
        vals(&run(Op::Conv, &a, &[Some(&x), Some(&w)])),
        vec![31.0, 42.0, 53.0]
    );
    // two groups of one channel: y0 = 2 * x0 + 1, y1 = 3 * x1 - 1
    let x = f32t(&[1, 2, 3], vec![1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
    let w = f32t(&[2, 1, 1], vec![2.0, 3.0]);
    let b = f32t(&[2], vec![1.0, -1.0]);
    let a = Attrs::new().with("group", Attr::Int(2));
    let y = run(Op::Conv, &a, &[Some(&x), Some(&w), Some(&b)]);
    assert_eq!(vals(&y), vec![3.0, 5.0, 7.0, 29.0, 59.0, 89.0]);
    // SAME_LOWER puts the odd pad first: kernel 2 over [1, 2, 3] reads [0, 1], [1, 2], [2, 3]
    let x = f32t(&[1, 1, 3], vec![1.0, 2.0, 3.0]);
    let w = f32t(&[1, 1, 2], vec![1.0, 100.0]);
    let a = Attrs::new().with("auto_pad", Attr::Str("SAME_LOWER".into()));
    assert_eq!(
        vals(&run(Op::Conv, &a, &[Some(&x), Some(&w)])),
        vec![100.0, 201.0, 302.0]
    );
    let a = Attrs::new().with("auto_pad", Attr::Str("SAME_UPPER".into()));
    assert_eq!(
        vals(&run(Op::Conv, &a, &[Some(&x), Some(&w)])),
        vec![201.0, 302.0, 3.0]
    );
}

#[test]
fn conv_half_types_round_once() {
    let x: Vec<f16> = [1.0f32, 2.0, 3.0]
        .iter()
        .map(|&v| f16::from_f32(v))
        .collect();
    let w: Vec<f16> = [0.5f32, 0.25].iter().map(|&v| f16::from_f32(v)).collect();
    let x = Tensor::from_vec(vec![1, 1, 3], x).unwrap();
    let w = Tensor::from_vec(vec![1, 1, 2], w).unwrap();
    let y = run(Op::Conv, &Attrs::new(), &[Some(&x), Some(&w)]);
    assert_eq!(y.dtype(), DType::F16);
    assert_eq!(vals(&y), vec![1.0, 1.75]);
}

#[test]
fn conv_errors() {
    let x = iota(&[1, 2, 4]);
    let w = f32t(&[1, 1, 3], vec![1.0; 3]);
    assert!(
        eval(Op::Conv, &Attrs::new(), &[Some(&x), Some(&w)], 1).is_err(),
        "channels"
    );
    let a = Attrs::new().with("group", Attr::Int(2));
    assert!(
        eval(Op::Conv, &a, &[Some(&x), Some(&w)], 1).is_err(),
        "M not divisible by group"
    );
    let wg = f32t(&[2, 1, 3], vec![1.0; 6]);
    assert!(eval(Op::Conv, &a, &[Some(&x), Some(&wg)], 1).is_ok());
    let a = Attrs::new().with("group", Attr::Int(0));
    assert!(
        eval(Op::Conv, &a, &[Some(&x), Some(&w)], 1).is_err(),
        "group 0"
    );
    let w5 = f32t(&[1, 2, 5], vec![1.0; 10]);
    assert!(
        eval(Op::Conv, &Attrs::new(), &[Some(&x), Some(&w5)], 1).is_err(),
        "kernel > input"
    );
    let w2 = f32t(&[1, 2, 3], vec![1.0; 6]);
    let b = f32t(&[2], vec![0.0; 2]);
    assert!(
        eval(Op::Conv, &Attrs::new(), &[Some(&x), Some(&w2), Some(&b)], 1).is_err(),
        "bias size"
    );
    let wd = Tensor::from_vec(vec![1, 2, 3], vec![1.0f64; 6]).unwrap();
    assert!(
        eval(Op::Conv, &Attrs::new(), &[Some(&x), Some(&wd)], 1).is_err(),
        "mixed dtypes"
    );
    assert!(
        eval(Op::Conv, &Attrs::new(), &[Some(&x), None], 1).is_err(),
        "missing W"
    );
    assert!(
        eval(Op::Conv, &Attrs::new(), &[Some(&x), Some(&w2)], 2).is_err(),
        "two outputs"
    );
    let x2 = iota(&[2, 4]);
    let w2d = f32t(&[1, 4], vec![1.0; 4]);
    assert!(
        eval(Op::Conv, &Attrs::new(), &[Some(&x2), Some(&w2d)], 1).is_err(),
        "no spatial axis"
    );
}

#[test]
fn conv_transpose_values() {
    // ONNX test_convtranspose_1d
    let x = f32t(&[1, 1, 3], vec![0.0, 1.0, 2.0]);
    let w = f32t(&[1, 2, 3], vec![1.0; 6]);
    let y = run(Op::ConvTranspose, &Attrs::new(), &[Some(&x), Some(&w)]);
    assert_eq!(y.shape(), &[1, 2, 5]);
    assert_eq!(vals(&y), [0, 1, 3, 3, 2, 0, 1, 3, 3, 2].map(|v| v as f64));
    // stride 2, pads 1 + 0, output_padding 1: full 2*2 + 1 + 2 = 7, output 6
    // contributions: x0 at -1, 0; x1 at 1, 2; x2 at 3, 4 (weights 1, 10)
    let x = f32t(&[1, 1, 3], vec![1.0, 2.0, 3.0]);
    let w = f32t(&[1, 1, 2], vec![1.0, 10.0]);
    let b = f32t(&[1], vec![0.5]);
    let a = Attrs::new()
        .with("strides", ints(&[2]))
        .with("pads", ints(&[1, 0]))
        .with("output_padding", ints(&[1]));
    let y = run(Op::ConvTranspose, &a, &[Some(&x), Some(&w), Some(&b)]);
    assert_eq!(vals(&y), vec![10.5, 2.5, 20.5, 3.5, 30.5, 0.5]);
    // output_shape larger than the natural size: the extra position holds the bias
    let a = Attrs::new()
        .with("strides", ints(&[2]))
        .with("output_shape", ints(&[7]));
    let y = run(Op::ConvTranspose, &a, &[Some(&x), Some(&w), Some(&b)]);
    assert_eq!(vals(&y), vec![1.5, 10.5, 2.5, 20.5, 3.5, 30.5, 0.5]);
}

#[test]
fn conv_integer_values() {
    // ONNX test_convinteger_with_padding / _without_padding
    let x = Tensor::from_vec(vec![1, 1, 3, 3], (2u8..=10).collect()).unwrap();
    let w = Tensor::from_vec(vec![1, 1, 2, 2], vec![1u8; 4]).unwrap();
    let zp = Tensor::scalar(1u8);
    let y = run(
        Op::ConvInteger,
        &Attrs::new(),
        &[Some(&x), Some(&w), Some(&zp)],
    );
    assert_eq!(y.as_slice::<i32>().unwrap(), &[12, 16, 24, 28]);
    let a = Attrs::new().with("pads", ints(&[1, 1, 1, 1]));
    let y = run(Op::ConvInteger, &a, &[Some(&x), Some(&w), Some(&zp)]);
    assert_eq!(
        y.as_slice::<i32>().unwrap(),
        &[1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9]
    );
    // per-channel weight zero points, i8 weights
    let x = Tensor::from_vec(vec![1, 1, 2], vec![3i8, -2]).unwrap();
    let w = Tensor::from_vec(vec![2, 1, 1], vec![5i8, -7]).unwrap();
    let wz = Tensor::from_vec(vec![2], vec![1i8, -7]).unwrap();
    let y = run(
        Op::ConvInteger,
        &Attrs::new(),
        &[Some(&x), Some(&w), None, Some(&wz)],
    );
    assert_eq!(y.as_slice::<i32>().unwrap(), &[12, -8, 0, 0]);
    let bad = Tensor::from_vec(vec![3], vec![0i8; 3]).unwrap();
    assert!(eval(
        Op::ConvInteger,
        &Attrs::new(),
        &[Some(&x), Some(&w), None, Some(&bad)],
        1
    )
    .is_err());
}

#[allow(clippy::too_many_arguments)]
fn qlinear(
    x: &Tensor,
    xs: f32,
    xz: &Tensor,
    w: &Tensor,
    ws: Tensor,
    wz: &Tensor,
    ys: f32,
    yz: &Tensor,
    b: Option<&Tensor>,
) -> Tensor {
    let (xs, ys) = (Tensor::scalar(xs), Tensor::scalar(ys));
    run(
        Op::QLinearConv,
        &Attrs::new(),
        &[
            Some(x),
            Some(&xs),
            Some(xz),
            Some(w),
            Some(&ws),
            Some(wz),
            Some(&ys),
            Some(yz),
            b,
        ],
    )
}

#[test]
fn qlinear_conv_values() {
    // x = [0, 5], w = [0.5, -2] per channel, bias 4 * 0.125 on channel 0:
    // channel 0: acc [0, 20] + 4, times 1.25 -> [5, 30], + 128
    // channel 1: acc [0, -40], times 2.5 -> [0, -100], + 128
    let x = Tensor::from_vec(vec![1, 1, 2], vec![10u8, 20]).unwrap();
    let w = Tensor::from_vec(vec![2, 1, 1], vec![2i8, -4]).unwrap();
    let ws = Tensor::from_vec(vec![2], vec![0.25f32, 0.5]).unwrap();
    let b = Tensor::from_vec(vec![2], vec![4i32, 0]).unwrap();
    let y = qlinear(
        &x,
        0.5,
        &Tensor::scalar(10u8),
        &w,
        ws,
        &Tensor::scalar(0i8),
        0.1,
        &Tensor::scalar(128u8),
        Some(&b),
    );
    assert_eq!(y.as_slice::<u8>().unwrap(), &[133, 158, 128, 28]);
    // round half to even, and saturation
    let x = Tensor::from_vec(vec![1, 1, 4], vec![1u8, 3, 5, 255]).unwrap();
    let w = Tensor::from_vec(vec![1, 1, 1], vec![1u8]).unwrap();
    let z = Tensor::scalar(0u8);
    let y = qlinear(
        &x,
        1.0,
        &z,
        &w,
        Tensor::scalar(1.0f32),
        &z,
        2.0,
        &Tensor::scalar(0i8),
        None,
    );
    assert_eq!(y.dtype(), DType::I8);
    assert_eq!(y.as_slice::<i8>().unwrap(), &[0, 2, 2, 127]);
}

/// A tiny deterministic generator of small integers (exact in every float type).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    fn vec(&mut self, len: usize) -> Vec<f64> {
        (0..len).map(|_| self.next(7) as f64 - 3.0).collect()
    }
}

/// Conv by its definition, one output element at a time.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f64],
    xs: &[usize],
    w: &[f64],
    ws: &[usize],
    group: usize,
    strides: &[usize],
    dil: &[usize],
    pads: &[usize],
) -> (Vec<usize>, Vec<f64>) {
    let r = xs.len() - 2;
    let out: Vec<usize> = (0..r)
        .map(|d| {
            (xs[d + 2] + pads[d] + pads[r + d] - (ws[d + 2] - 1) * dil[d] - 1) / strides[d] + 1
        })
        .collect();
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    let (cg, mg) = (c / group, m / group);
    let mut shape = vec![n, m];
    shape.extend(&out);
    let mut y = Vec::new();
    let xst = shape::strides(xs);
    let wst = shape::strides(ws);
    for b in 0..n {
        for oc in 0..m {
            let g = oc / mg;
            let mut o = vec![0; r];
            loop {
                let mut acc = 0.0;
                for ic in 0..cg {
                    let mut t = vec![0; r];
                    loop {
                        let mut xi = Some(b * xst[0] + (g * cg + ic) * xst[1]);
                        for d in 0..r {
                            let p = (o[d] * strides[d] + t[d] * dil[d]) as i64 - pads[d] as i64;
                            if p < 0 || p >= xs[d + 2] as i64 {
                                xi = None;
                            }
                            xi = xi.map(|i| i + p as usize * xst[d + 2]);
                        }
                        if let Some(i) = xi {
                            let wi = oc * wst[0]
                                + ic * wst[1]
                                + (0..r).map(|d| t[d] * wst[d + 2]).sum::<usize>();
                            acc += x[i] * w[wi];
                        }
                        if !next_index(&mut t, &ws[2..]) {
                            break;
                        }
                    }
                }
                y.push(acc);
                if !next_index(&mut o, &out) {
                    break;
                }
            }
        }
    }
    (shape, y)
}

#[test]
fn conv_matches_definition() {
    let mut rng = Lcg(7);
    // (x shape, w shape, group, strides, dilations, pads)
    type Case = (
        Vec<usize>,
        Vec<usize>,
        usize,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
    );
    let cases: Vec<Case> = vec![
        (
            vec![2, 3, 9],
            vec![4, 3, 3],
            1,
            vec![2],
            vec![1],
            vec![1, 2],
        ),
        (
            vec![1, 4, 7, 6],
            vec![6, 2, 3, 2],
            2,
            vec![2, 1],
            vec![1, 2],
            vec![1, 0, 2, 1],
        ),
        (
            vec![1, 4, 6, 6],
            vec![4, 1, 3, 3],
            4,
            vec![1, 1],
            vec![1, 1],
            vec![1, 1, 1, 1],
        ),
        (
            vec![2, 2, 5, 4, 4],
            vec![3, 2, 2, 3, 2],
            1,
            vec![1, 2, 1],
            vec![2, 1, 1],
            vec![0, 1, 1, 1, 0, 2],
        ),
        (
            vec![1, 3, 5, 5],
            vec![2, 3, 1, 1],
            1,
            vec![1, 1],
            vec![1, 1],
            vec![0, 0, 0, 0],
        ),
        (
            vec![1, 2, 6, 5],
            vec![2, 2, 1, 1],
            1,
            vec![2, 3],
            vec![1, 1],
            vec![1, 0, 0, 1],
        ),
        // large enough for the threaded GEMM
        (
            vec![1, 16, 26, 26],
            vec![16, 16, 3, 3],
            1,
            vec![1, 1],
            vec![1, 1],
            vec![0, 0, 0, 0],
        ),
    ];
    for (xs, ws, group, strides, dil, pads) in cases {
        let xv = rng.vec(xs.iter().product());
        let wv = rng.vec(ws.iter().product());
        let a = Attrs::new()
            .with("group", Attr::Int(group as i64))
            .with(
                "strides",
                ints(&strides.iter().map(|&v| v as i64).collect::<Vec<_>>()),
            )
            .with(
                "dilations",
                ints(&dil.iter().map(|&v| v as i64).collect::<Vec<_>>()),
            )
            .with(
                "pads",
                ints(&pads.iter().map(|&v| v as i64).collect::<Vec<_>>()),
            );
        let (shape, want) = naive_conv(&xv, &xs, &wv, &ws, group, &strides, &dil, &pads);
        let x = Tensor::from_vec(xs.clone(), xv).unwrap();
        let w = Tensor::from_vec(ws.clone(), wv).unwrap();
        let y = run(Op::Conv, &a, &[Some(&x), Some(&w)]);
        assert_eq!(y.shape(), shape.as_slice(), "{xs:?} {ws:?}");
        assert_eq!(vals(&y), want, "{xs:?} {ws:?}");
        // f32 and bf16 give the same small integers
        for dt in [DType::F32, DType::BF16] {
            let x = Tensor::from_f64s(dt, xs.clone(), &x.to_f64_vec()).unwrap();
            let w = Tensor::from_f64s(dt, ws.clone(), &w.to_f64_vec()).unwrap();
            let y = run(Op::Conv, &a, &[Some(&x), Some(&w)]);
            assert_eq!(y.dtype(), dt);
            // exact sums in f32, rounded once to the storage type
            let want: Vec<f64> = want
                .iter()
                .map(|&v| Tensor::from_f64s(dt, vec![], &[v]).unwrap().to_f64_vec()[0])
                .collect();
            assert_eq!(vals(&y), want, "{dt} {xs:?} {ws:?}");
        }
    }
}

/// ConvTranspose by its definition: every input element scatters `x * w`.
fn naive_conv_transpose(
    x: &[f64],
    xs: &[usize],
    w: &[f64],
    ws: &[usize],
    group: usize,
    axes: &[Axis],
) -> Vec<f64> {
    let r = xs.len() - 2;
    let (n, c) = (xs[0], xs[1]);
    let (cg, mg) = (c / group, ws[1]);
    let m = mg * group;
    let out: Vec<usize> = axes.iter().map(|a| a.output).collect();
    let mut oshape = vec![n, m];
    oshape.extend(&out);
    let ost = shape::strides(&oshape);
    let xst = shape::strides(xs);
    let wst = shape::strides(ws);
    let mut y = vec![0.0; oshape.iter().product()];
    for b in 0..n {
        for ic in 0..c {
            let g = ic / cg;
            let mut i = vec![0; r];
            loop {
                let xv =
                    x[b * xst[0] + ic * xst[1] + (0..r).map(|d| i[d] * xst[d + 2]).sum::<usize>()];
                for om in 0..mg {
                    let mut t = vec![0; r];
                    loop {
                        let mut yi = Some(b * ost[0] + (g * mg + om) * ost[1]);
                        for d in 0..r {
                            let a = &axes[d];
                            let p = (i[d] * a.stride + t[d] * a.dilation) as i64 - a.pad_begin;
                            if p < 0 || p >= a.output as i64 {
                                yi = None;
                            }
                            yi = yi.map(|v| v + p as usize * ost[d + 2]);
                        }
                        if let Some(yi) = yi {
                            let wi = ic * wst[0]
                                + om * wst[1]
                                + (0..r).map(|d| t[d] * wst[d + 2]).sum::<usize>();
                            y[yi] += xv * w[wi];
                        }
                        if !next_index(&mut t, &ws[2..]) {
                            break;
                        }
                    }
                }
                if !next_index(&mut i, &xs[2..]) {
                    break;
                }
            }
        }
    }
    y
}

#[test]
fn conv_transpose_matches_definition() {
    use crate::interp::window::{conv_transpose_axis, TransposeAttrs, WindowAttrs};
    let mut rng = Lcg(11);
    let cases: Vec<(Vec<usize>, Vec<usize>, Attrs)> = vec![
        (
            vec![1, 2, 4],
            vec![2, 3, 3],
            Attrs::new()
                .with("strides", ints(&[2]))
                .with("pads", ints(&[1, 2])),
        ),
        (
            vec![2, 4, 3, 4],
            vec![4, 1, 3, 2],
            Attrs::new()
                .with("group", Attr::Int(2))
                .with("dilations", ints(&[2, 1]))
                .with("strides", ints(&[3, 2])),
        ),
        (
            vec![1, 1, 3, 3],
            vec![1, 2, 3, 3],
            Attrs::new()
                .with("strides", ints(&[3, 2]))
                .with("output_shape", ints(&[10, 8]))
                .with("output_padding", ints(&[1, 1])),
        ),
        (
            vec![1, 1, 3, 3],
            vec![1, 2, 3, 3],
            Attrs::new()
                .with("strides", ints(&[2, 2]))
                .with("auto_pad", Attr::Str("SAME_LOWER".into())),
        ),
        (
            vec![1, 2, 2, 3, 2],
            vec![2, 2, 2, 2, 3],
            Attrs::new().with("pads", ints(&[0, 1, 1, 1, 0, 2])),
        ),
    ];
    for (xs, ws, a) in cases {
        let xv = rng.vec(xs.iter().product());
        let wv = rng.vec(ws.iter().product());
        let r = xs.len() - 2;
        let wa = WindowAttrs::read(Op::ConvTranspose, &a, r, Some(&ws[2..])).unwrap();
        let ta = TransposeAttrs::read(Op::ConvTranspose, &a, r).unwrap();
        let axes: Vec<Axis> = (0..r)
            .map(|i| conv_transpose_axis(Op::ConvTranspose, &wa, &ta, i, xs[i + 2]).unwrap())
            .collect();
        let group = a.int_or("group", 1).unwrap() as usize;
        let want = naive_conv_transpose(&xv, &xs, &wv, &ws, group, &axes);
        let x = Tensor::from_vec(xs.clone(), xv).unwrap();
        let w = Tensor::from_vec(ws.clone(), wv).unwrap();
        let y = run(Op::ConvTranspose, &a, &[Some(&x), Some(&w)]);
        assert_eq!(vals(&y), want, "{xs:?} {ws:?}");
    }
}
