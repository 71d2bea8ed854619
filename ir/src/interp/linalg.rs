//! Interpreter for the Linalg class: MatMul, Gemm, Einsum, MatMulInteger and
//! QLinearMatMul.
//!
//! MatMul follows numpy's `matmul`: 1-D operands are promoted (a leading 1 for
//! A, a trailing 1 for B) and the promoted axis is dropped from the result;
//! batch axes broadcast. Every product goes through one kernel,
//! [`num::matmul_acc`] (i, k, j loop order over contiguous rows), which
//! accumulates in index order: f32 in f32, f64 in f64, f16 and bf16 in f32
//! (rounded once at the end), integers wrapping in their own type.

pub(crate) mod einsum;
pub(super) mod num;
mod quantized;

use super::util::{broadcast_indices, input, opt_input};
use crate::{shape, Attrs, DType, Data, Element, Error, Op, Result, Tensor};
use num::{matmul_acc, transpose, typed, Real, Ring};

pub(crate) fn eval(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    _n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let y = match op {
        Op::MatMul => matmul(op, input(op, inputs, 0)?, input(op, inputs, 1)?)?,
        Op::Gemm => gemm(attrs, inputs)?,
        Op::Einsum => einsum::eval(attrs, inputs)?,
        Op::MatMulInteger => quantized::matmul_integer(inputs)?,
        Op::QLinearMatMul => quantized::qlinear_matmul(inputs)?,
        _ => return Err(Error::unsupported(format!("{op} is not a Linalg op"))),
    };
    Ok(vec![y])
}

/// The geometry of a numpy-style matmul of shapes `a` and `b`.
#[derive(Debug)]
pub(super) struct MatmulDims {
    /// Broadcast batch shape, and each operand's own batch shape.
    batch: Vec<usize>,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) n: usize,
    /// `batch ++ [m, n]`, before dropping promoted axes.
    pub(super) full_shape: Vec<usize>,
    /// The result's shape (promoted axes dropped).
    pub(super) out_shape: Vec<usize>,
}

/// Checks and computes the shapes of a numpy-style matmul.
pub(super) fn matmul_dims(op: Op, a: &[usize], b: &[usize]) -> Result<MatmulDims> {
    if a.is_empty() || b.is_empty() {
        return Err(Error::invalid(format!(
            "{op}: operands must have rank at least 1, got shapes {a:?} and {b:?}"
        )));
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (a_batch, ak) = a2.split_at(a2.len() - 2);
    let (b_batch, bk) = b2.split_at(b2.len() - 2);
    let (m, k, k2, n) = (ak[0], ak[1], bk[0], bk[1]);
    if k != k2 {
        return Err(Error::invalid(format!(
            "{op}: inner dimensions differ: A is {a:?} (K = {k}) and B is {b:?} (K = {k2})"
        )));
    }
    let batch = shape::broadcast_shapes(a_batch, b_batch).ok_or_else(|| {
        Error::invalid(format!(
            "{op}: batch dimensions of {a:?} and {b:?} do not broadcast"
        ))
    })?;
    let mut full_shape = batch.clone();
    full_shape.extend([m, n]);
    let mut out_shape = batch.clone();
    if a.len() > 1 {
        out_shape.push(m);
    }
    if b.len() > 1 {
        out_shape.push(n);
    }
    Ok(MatmulDims {
        batch,
        a_batch: a_batch.to_vec(),
        b_batch: b_batch.to_vec(),
        m,
        k,
        n,
        full_shape,
        out_shape,
    })
}

/// A numpy-style batched matmul of row-major `a` and `b` with geometry `d`.
pub(super) fn batched_matmul<T: Ring>(d: &MatmulDims, a: &[T], b: &[T]) -> Vec<T> {
    let (m, k, n) = (d.m, d.k, d.n);
    let ia = broadcast_indices(&d.a_batch, &d.batch);
    let ib = broadcast_indices(&d.b_batch, &d.batch);
    let mut out = vec![T::ZERO; ia.len() * m * n];
    for (bi, (&xa, &xb)) in ia.iter().zip(&ib).enumerate() {
        let sa = &a[xa * m * k..(xa + 1) * m * k];
        let sb = &b[xb * k * n..(xb + 1) * k * n];
        matmul_acc(sa, sb, &mut out[bi * m * n..(bi + 1) * m * n], m, k, n);
    }
    out
}

fn matmul(op: Op, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() != b.dtype() {
        return Err(Error::invalid(format!(
            "{op}: A is {} but B is {}; they must have one dtype",
            a.ty(),
            b.ty()
        )));
    }
    let d = matmul_dims(op, a.shape(), b.shape())?;
    let shape = d.out_shape.clone();
    macro_rules! native {
        ($x:expr, $y:expr) => {
            Tensor::from_vec(shape, batched_matmul(&d, $x, $y))
        };
    }
    match (a.data(), b.data()) {
        (Data::F32(x), Data::F32(y)) => native!(x, y),
        (Data::F64(x), Data::F64(y)) => native!(x, y),
        (Data::I32(x), Data::I32(y)) => native!(x, y),
        (Data::I64(x), Data::I64(y)) => native!(x, y),
        (Data::U32(x), Data::U32(y)) => native!(x, y),
        (Data::U64(x), Data::U64(y)) => native!(x, y),
        (Data::F16(_), _) | (Data::BF16(_), _) => {
            let (x, y) = (f32::read(a), f32::read(b));
            f32::write(batched_matmul(&d, &x, &y), a.dtype(), shape)
        }
        _ => Err(Error::unsupported(format!(
            "{op} on {} operands",
            a.dtype()
        ))),
    }
}

/// Gemm's (M, K, N) from A's and B's shapes and the transpose flags.
pub(super) fn gemm_dims(
    a: &[usize],
    b: &[usize],
    trans_a: bool,
    trans_b: bool,
) -> Result<(usize, usize, usize)> {
    let (&[a0, a1], &[b0, b1]) = (a, b) else {
        return Err(Error::invalid(format!(
            "Gemm: A and B must be 2-D, got shapes {a:?} and {b:?}"
        )));
    };
    let (m, k) = if trans_a { (a1, a0) } else { (a0, a1) };
    let (k2, n) = if trans_b { (b1, b0) } else { (b0, b1) };
    if k != k2 {
        return Err(Error::invalid(format!(
            "Gemm: inner dimensions differ: A {a:?} (transA={}) gives K = {k}, B {b:?} (transB={}) gives K = {k2}",
            trans_a as u8, trans_b as u8
        )));
    }
    Ok((m, k, n))
}

fn gemm(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Gemm;
    let a = input(op, inputs, 0)?;
    let b = input(op, inputs, 1)?;
    let c = opt_input(inputs, 2);
    let alpha = attrs.float_or("alpha", 1.0)?;
    let beta = attrs.float_or("beta", 1.0)?;
    let trans_a = attrs.int_or("transA", 0)? != 0;
    let trans_b = attrs.int_or("transB", 0)? != 0;
    for (i, t) in [Some(b), c].into_iter().enumerate() {
        if let Some(t) = t {
            if t.dtype() != a.dtype() {
                return Err(Error::invalid(format!(
                    "Gemm: input {} is {} but A is {}; they must have one dtype",
                    i + 1,
                    t.ty(),
                    a.ty()
                )));
            }
        }
    }
    let (m, k, n) = gemm_dims(a.shape(), b.shape(), trans_a, trans_b)?;
    if let Some(c) = c {
        if c.rank() > 2 || shape::broadcast_shapes(c.shape(), &[m, n]).as_deref() != Some(&[m, n]) {
            return Err(Error::invalid(format!(
                "Gemm: C {:?} does not broadcast to the result [{m}, {n}]",
                c.shape()
            )));
        }
    }
    let g = GemmArgs {
        a,
        b,
        c,
        alpha,
        beta,
        trans_a,
        trans_b,
        m,
        k,
        n,
    };
    match a.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => gemm_float::<f32>(&g),
        DType::F64 => gemm_float::<f64>(&g),
        DType::I32 => gemm_int::<i32>(&g),
        DType::I64 => gemm_int::<i64>(&g),
        DType::U32 => gemm_int::<u32>(&g),
        DType::U64 => gemm_int::<u64>(&g),
        d => Err(Error::unsupported(format!("Gemm on {d} operands"))),
    }
}

struct GemmArgs<'a> {
    a: &'a Tensor,
    b: &'a Tensor,
    c: Option<&'a Tensor>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    m: usize,
    k: usize,
    n: usize,
}

impl GemmArgs<'_> {
    /// A as (M, K) and B as (K, N), row-major.
    fn operands<T: Copy>(&self, a: Vec<T>, b: Vec<T>) -> (Vec<T>, Vec<T>) {
        let a = if self.trans_a {
            transpose(&a, self.k, self.m)
        } else {
            a
        };
        let b = if self.trans_b {
            transpose(&b, self.n, self.k)
        } else {
            b
        };
        (a, b)
    }

    /// For each result element, the index of the element of C added to it.
    fn c_indices(&self, c: &Tensor) -> Vec<usize> {
        broadcast_indices(c.shape(), &[self.m, self.n])
    }
}

fn gemm_float<R: Real>(g: &GemmArgs) -> Result<Tensor> {
    let (a, b) = g.operands(R::read(g.a), R::read(g.b));
    let mut out = vec![R::ZERO; g.m * g.n];
    matmul_acc(&a, &b, &mut out, g.m, g.k, g.n);
    let alpha = R::of(g.alpha as f64);
    for o in &mut out {
        *o = *o * alpha;
    }
    if let (Some(c), true) = (g.c, g.beta != 0.0) {
        let cv = R::read(c);
        let beta = R::of(g.beta as f64);
        for (o, &i) in out.iter_mut().zip(&g.c_indices(c)) {
            *o += cv[i] * beta;
        }
    }
    R::write(out, g.a.dtype(), vec![g.m, g.n])
}

/// Integer Gemm: the product wraps in the element type. With alpha = beta = 1
/// the sum wraps too; other factors compute in f64 and convert back with
/// truncation toward zero (saturating), as numpy's reference does.
fn gemm_int<T: Ring + Element>(g: &GemmArgs) -> Result<Tensor> {
    let op = Op::Gemm;
    let a = typed::<T>(op, g.a, "A")?.to_vec();
    let b = typed::<T>(op, g.b, "B")?.to_vec();
    let (a, b) = g.operands(a, b);
    let mut out = vec![T::ZERO; g.m * g.n];
    matmul_acc(&a, &b, &mut out, g.m, g.k, g.n);
    let c = match g.c {
        Some(c) if g.beta != 0.0 => Some((typed::<T>(op, c, "C")?, g.c_indices(c))),
        _ => None,
    };
    if g.alpha == 1.0 && (c.is_none() || g.beta == 1.0) {
        if let Some((cv, idx)) = c {
            for (o, &i) in out.iter_mut().zip(&idx) {
                *o = o.add(cv[i]);
            }
        }
        return Tensor::from_vec(vec![g.m, g.n], out);
    }
    let (alpha, beta) = (g.alpha as f64, g.beta as f64);
    let mut y: Vec<f64> = out.iter().map(|x| x.to_f64() * alpha).collect();
    if let Some((cv, idx)) = c {
        for (o, &i) in y.iter_mut().zip(&idx) {
            *o += cv[i].to_f64() * beta;
        }
    }
    Tensor::from_vec(vec![g.m, g.n], y.into_iter().map(T::from_f64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;
    use half::f16;

    fn run(op: Op, attrs: Attrs, ins: &[&Tensor]) -> Result<Tensor> {
        let ins: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        Ok(eval(op, &attrs, &ins, 1)?.remove(0))
    }

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn matmul_2d() {
        let a = f32s(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let b = f32s(&[3, 2], &[7., 8., 9., 10., 11., 12.]);
        let y = run(Op::MatMul, Attrs::new(), &[&a, &b]).unwrap();
        assert_eq!(y, f32s(&[2, 2], &[58., 64., 139., 154.]));
    }

    #[test]
    fn matmul_promotes_vectors_and_broadcasts_batches() {
        let v = f32s(&[3], &[1., 2., 3.]);
        let m = f32s(&[3, 2], &[1., 0., 0., 1., 1., 1.]);
        // [1 2 3] · m = [4 5], shape [2]
        assert_eq!(
            run(Op::MatMul, Attrs::new(), &[&v, &m]).unwrap(),
            f32s(&[2], &[4., 5.])
        );
        // m^T-ish: [2,3]·[3] -> [2]
        let mt = f32s(&[2, 3], &[1., 0., 1., 0., 1., 1.]);
        assert_eq!(
            run(Op::MatMul, Attrs::new(), &[&mt, &v]).unwrap(),
            f32s(&[2], &[4., 5.])
        );
        // vector · vector -> scalar
        assert_eq!(
            run(Op::MatMul, Attrs::new(), &[&v, &v]).unwrap(),
            f32s(&[], &[14.])
        );
        // [2,1,1,2] x [3,2,1] -> [2,3,1,1]
        let a = f32s(&[2, 1, 1, 2], &[1., 2., 3., 4.]);
        let b = f32s(&[3, 2, 1], &[1., 1., 1., 0., 0., 1.]);
        let y = run(Op::MatMul, Attrs::new(), &[&a, &b]).unwrap();
        assert_eq!(y, f32s(&[2, 3, 1, 1], &[3., 1., 2., 7., 3., 4.]));
    }

    #[test]
    fn matmul_errors() {
        let a = f32s(&[2, 3], &[0.; 6]);
        let b = f32s(&[2, 3], &[0.; 6]);
        let e = run(Op::MatMul, Attrs::new(), &[&a, &b])
            .unwrap_err()
            .to_string();
        assert!(e.contains("inner dimensions"), "{e}");
        let s = f32s(&[], &[1.]);
        assert!(run(Op::MatMul, Attrs::new(), &[&s, &a]).is_err());
        let i = Tensor::from_vec(vec![3, 2], vec![0i32; 6]).unwrap();
        assert!(run(Op::MatMul, Attrs::new(), &[&a, &i]).is_err());
    }

    #[test]
    fn matmul_int_and_half() {
        let a = Tensor::from_vec(vec![1, 2], vec![i64::MAX, 1]).unwrap();
        let b = Tensor::from_vec(vec![2, 1], vec![2i64, 3]).unwrap();
        let y = run(Op::MatMul, Attrs::new(), &[&a, &b]).unwrap();
        assert_eq!(
            y.as_slice::<i64>().unwrap(),
            &[i64::MAX.wrapping_mul(2).wrapping_add(3)]
        );
        // f16: 2048 + 1 + 1 is exact in f32 accumulation (2050), though 2048 + 1 rounds in f16.
        let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
        let a = Tensor::from_vec(vec![1, 3], h(&[2048., 1., 1.])).unwrap();
        let b = Tensor::from_vec(vec![3, 1], h(&[1., 1., 1.])).unwrap();
        let y = run(Op::MatMul, Attrs::new(), &[&a, &b]).unwrap();
        assert_eq!(y.as_slice::<f16>().unwrap(), &[f16::from_f32(2050.)]);
    }

    #[test]
    fn gemm_transposes_scales_and_broadcasts_c() {
        // A^T where A = [[1,4],[2,5],[3,6]] (3x2) -> [[1,2,3],[4,5,6]]
        let a = f32s(&[3, 2], &[1., 4., 2., 5., 3., 6.]);
        // B^T where B = [[7,9,11],[8,10,12]] (2x3) -> [[7,8],[9,10],[11,12]]
        let b = f32s(&[2, 3], &[7., 9., 11., 8., 10., 12.]);
        let c = f32s(&[2, 1], &[1., 2.]);
        let attrs = Attrs::new()
            .with("transA", Attr::Int(1))
            .with("transB", Attr::Int(1))
            .with("alpha", Attr::Float(0.5))
            .with("beta", Attr::Float(2.0));
        let y = run(Op::Gemm, attrs, &[&a, &b, &c]).unwrap();
        // 0.5 * [58 64; 139 154] + 2 * [1; 2]
        assert_eq!(y, f32s(&[2, 2], &[31., 34., 73.5, 81.]));
        let bad_c = f32s(&[3], &[0.; 3]);
        let attrs = Attrs::new()
            .with("transA", Attr::Int(1))
            .with("transB", Attr::Int(1));
        assert!(run(Op::Gemm, attrs, &[&a, &b, &bad_c]).is_err());
    }

    #[test]
    fn gemm_integers() {
        let a = Tensor::from_vec(vec![1, 2], vec![3i32, 4]).unwrap();
        let b = Tensor::from_vec(vec![2, 1], vec![5i32, 6]).unwrap();
        let c = Tensor::from_vec(vec![1], vec![1i32]).unwrap();
        let y = run(Op::Gemm, Attrs::new(), &[&a, &b, &c]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[40]);
        let attrs = Attrs::new().with("alpha", Attr::Float(0.5));
        let y = run(Op::Gemm, attrs, &[&a, &b, &c]).unwrap();
        // 0.5 * 39 + 1 = 20.5 -> 20
        assert_eq!(y.as_slice::<i32>().unwrap(), &[20]);
    }
}
