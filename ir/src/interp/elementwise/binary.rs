//! Binary, variadic and ternary elementwise ops with multidirectional
//! broadcasting: arithmetic (Add, Sub, Mul, Div, Mod, Pow), comparisons,
//! logic, bitwise ops and shifts, PRelu, Min/Max/Sum/Mean, Where and Clip.
//! Operands arrive as f32, f64, integer or bool (f16 and bf16 were widened).

use super::num::{fmax, fmin, int_pow, match_int, match_int2, Float, Int};
use crate::interp::util::{broadcast_all, broadcast_indices};
use crate::{Attrs, Data, Element, Error, Op, Result, Tensor};

/// How an operand of shape `s` is read when broadcast onto `out`, row by
/// row (a row runs along the last axis of `out`): where each row starts, and
/// the step along it (0 when the operand repeats one value along the row).
struct Rows {
    starts: Vec<usize>,
    step: usize,
}

fn rows(s: &[usize], out: &[usize]) -> Rows {
    let Some((_, outer)) = out.split_last() else {
        return Rows {
            starts: vec![0],
            step: 0,
        };
    };
    let pad = out.len().saturating_sub(s.len());
    let mut full = vec![1; pad];
    full.extend_from_slice(s);
    let last = full.last().copied().unwrap_or(1);
    let starts = broadcast_indices(&full[..full.len() - 1], outer)
        .into_iter()
        .map(|i| i * last)
        .collect();
    Rows {
        starts,
        step: usize::from(last != 1),
    }
}

/// The length of a row of `out`.
fn row_len(out: &[usize]) -> usize {
    out.last().copied().unwrap_or(1)
}

/// `f(a[i], b[j])` over the broadcast shape `out` of `ash` and `bsh`.
pub(super) fn zip2<A: Copy, B: Copy, R>(
    a: &[A],
    ash: &[usize],
    b: &[B],
    bsh: &[usize],
    out: &[usize],
    f: impl Fn(A, B) -> R,
) -> Vec<R> {
    if ash == out && bsh == out {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    let (ra, rb, n) = (rows(ash, out), rows(bsh, out), row_len(out));
    let mut res = Vec::with_capacity(ra.starts.len() * n);
    for (&i, &j) in ra.starts.iter().zip(&rb.starts) {
        res.extend((0..n).map(|k| f(a[i + k * ra.step], b[j + k * rb.step])));
    }
    res
}

fn typed<T: Element>(op: Op, t: &Tensor) -> Result<&[T]> {
    t.as_slice::<T>().ok_or_else(|| {
        Error::invalid(format!(
            "{op}: expected a {} operand, found {}",
            T::DTYPE,
            t.dtype()
        ))
    })
}

fn mismatch(op: Op, a: &Tensor, b: &Tensor) -> Error {
    Error::invalid(format!(
        "{op} is not defined for operands of types {} and {}",
        a.dtype(),
        b.dtype()
    ))
}

pub(super) fn eval(op: Op, attrs: &Attrs, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = broadcast_all(op, &[a.shape(), b.shape()])?;
    if op == Op::Pow {
        return pow(op, a, b, out);
    }
    let (ash, bsh) = (a.shape(), b.shape());
    macro_rules! zip {
        ($x:expr, $y:expr, $f:expr) => {
            zip2($x, ash, $y, bsh, &out, $f)
        };
    }
    let data = if compare_fn::<f32>(op).is_some() {
        macro_rules! cmp {
            ($($v:ident),*) => {
                match (a.data(), b.data()) {
                    $((Data::$v(x), Data::$v(y)) => {
                        let f = compare_fn(op).ok_or_else(|| mismatch(op, a, b))?;
                        Data::Bool(zip!(x, y, f))
                    })*
                    _ => return Err(mismatch(op, a, b)),
                }
            };
        }
        cmp!(F32, F16, BF16, F64, I8, U8, I16, U16, I32, U32, I64, U64, Bool)
    } else {
        match (a.data(), b.data()) {
            (Data::F32(x), Data::F32(y)) => Data::F32(zip!(x, y, float_fn(op, attrs)?)),
            (Data::F64(x), Data::F64(y)) => Data::F64(zip!(x, y, float_fn(op, attrs)?)),
            (Data::Bool(x), Data::Bool(y)) => {
                let f: fn(bool, bool) -> bool = match op {
                    Op::And => |p, q| p & q,
                    Op::Or => |p, q| p | q,
                    Op::Xor => |p, q| p ^ q,
                    _ => return Err(mismatch(op, a, b)),
                };
                Data::Bool(zip!(x, y, f))
            }
            (da, db) => match_int2!(da, db, x, y => {
                let f = int_fn(op, attrs, y, out.iter().product::<usize>() > 0)?;
                Element::wrap(zip!(x, y, f))
            }, _ => return Err(mismatch(op, a, b))),
        }
    };
    Tensor::new(out, data)
}

fn compare_fn<T: PartialOrd>(op: Op) -> Option<fn(T, T) -> bool> {
    Some(match op {
        Op::Equal => |p, q| p == q,
        Op::Greater => |p, q| p > q,
        Op::Less => |p, q| p < q,
        Op::GreaterOrEqual => |p, q| p >= q,
        Op::LessOrEqual => |p, q| p <= q,
        _ => return None,
    })
}

/// The float function of a binary op.
fn float_fn<F: Float>(op: Op, attrs: &Attrs) -> Result<fn(F, F) -> F> {
    Ok(match op {
        Op::Add => |p, q| p + q,
        Op::Sub => |p, q| p - q,
        Op::Mul => |p, q| p * q,
        Op::Div => |p, q| p / q,
        Op::Mod if fmod(attrs)? => |p, q| p % q,
        Op::Mod => float_mod,
        Op::PRelu => |x, s| if x < F::ZERO { s * x } else { x },
        _ => {
            return Err(Error::invalid(format!(
                "{op} is not defined for {}",
                F::DTYPE
            )))
        }
    })
}

fn fmod(attrs: &Attrs) -> Result<bool> {
    match attrs.int_or("fmod", 0)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(Error::Attr {
            attr: "fmod".into(),
            msg: format!("must be 0 or 1, not {v}"),
        }),
    }
}

/// Mod with fmod=0 on floats: `a - floor(a / b) * b`, the sign of `b`.
fn float_mod<F: Float>(a: F, b: F) -> F {
    let r = a % b;
    if r == F::ZERO {
        F::ZERO.copysign(b)
    } else if (r < F::ZERO) != (b < F::ZERO) {
        r + b
    } else {
        r
    }
}

/// The integer function of a binary op. `divisor` is checked for zeros when
/// the op divides (and the output is not empty).
fn int_fn<I: Int>(op: Op, attrs: &Attrs, divisor: &[I], nonempty: bool) -> Result<fn(I, I) -> I> {
    if matches!(op, Op::Div | Op::Mod) && nonempty && divisor.contains(&I::ZERO) {
        return Err(Error::invalid(format!(
            "{op}: integer division by zero (the divisor, input 1, holds a 0)"
        )));
    }
    Ok(match op {
        Op::Add => |p: I, q| p.wadd(q),
        Op::Sub => |p: I, q| p.wsub(q),
        Op::Mul => |p: I, q| p.wmul(q),
        Op::Div => |p: I, q| p.wdiv(q),
        Op::Mod if fmod(attrs)? => |p: I, q| p.wrem(q),
        Op::Mod => |p: I, q| {
            let r = p.wrem(q);
            if r != I::ZERO && ((r < I::ZERO) != (q < I::ZERO)) {
                r.wadd(q)
            } else {
                r
            }
        },
        Op::PRelu => |x: I, s| if x < I::ZERO { s.wmul(x) } else { x },
        Op::BitwiseAnd => |p: I, q| p & q,
        Op::BitwiseOr => |p: I, q| p | q,
        Op::BitwiseXor => |p: I, q| p ^ q,
        Op::BitShift => match attrs.str("direction")? {
            Some("LEFT") => |x: I, n: I| match shift_amount(n) {
                Some(n) => x.shl(n),
                None => I::ZERO,
            },
            Some("RIGHT") => |x: I, n: I| match shift_amount(n) {
                Some(n) => x.shr(n),
                None if x < I::ZERO => !I::ZERO,
                None => I::ZERO,
            },
            other => return Err(bad_direction(other)),
        },
        _ => {
            return Err(Error::invalid(format!(
                "{op} is not defined for {}",
                I::DTYPE
            )))
        }
    })
}

pub(super) fn bad_direction(got: Option<&str>) -> Error {
    Error::Attr {
        attr: "direction".into(),
        msg: format!("BitShift needs direction \"LEFT\" or \"RIGHT\", not {got:?}"),
    }
}

/// A shift count in range (`0 <= n < BITS`).
fn shift_amount<I: Int>(n: I) -> Option<u32> {
    let n = n.to_i128();
    (0..I::BITS as i128).contains(&n).then_some(n as u32)
}

/// Exponents of Pow, converted once.
enum Exps {
    Int(Vec<i128>),
    Float(Vec<f64>),
}

/// Pow: the output has the base's type. A float base computes in its own
/// type (exponents converted to it); an integer base with integer exponents
/// uses wrapping integer powers (negative exponents go through f64 and are
/// truncated: `2^-1 = 0`, `0^-1` saturates); an integer base with float
/// exponents computes in f64 and truncates (saturating).
fn pow(op: Op, a: &Tensor, b: &Tensor, out: Vec<usize>) -> Result<Tensor> {
    let exps = match_int!(b.data(), v => Exps::Int(v.iter().map(|e| e.to_i128()).collect()),
        _ => Exps::Float(b.to_f64_vec()));
    let (ash, bsh) = (a.shape(), b.shape());
    fn float_base<F: Float>(
        x: &[F],
        exps: &Exps,
        ash: &[usize],
        bsh: &[usize],
        out: &[usize],
    ) -> Vec<F> {
        let e: Vec<F> = match exps {
            Exps::Int(v) => v.iter().map(|&e| F::of(e as f64)).collect(),
            Exps::Float(v) => v.iter().map(|&e| F::of(e)).collect(),
        };
        zip2(x, ash, &e, bsh, out, |p, q| p.powf(q))
    }
    fn int_base<I: Int>(x: &[I], exps: &Exps, ash: &[usize], bsh: &[usize], out: &[usize]) -> Data {
        let r = match exps {
            Exps::Int(e) => zip2(x, ash, e, bsh, out, |p, q| {
                if q >= 0 {
                    int_pow(p, q as u128)
                } else {
                    I::from_f64(p.to_f64().powf(q as f64))
                }
            }),
            Exps::Float(e) => zip2(x, ash, e, bsh, out, |p, q| I::from_f64(p.to_f64().powf(q))),
        };
        I::wrap(r)
    }
    let data = match a.data() {
        Data::F32(x) => Data::F32(float_base(x, &exps, ash, bsh, &out)),
        Data::F64(x) => Data::F64(float_base(x, &exps, ash, bsh, &out)),
        d => {
            match_int!(d, x => int_base(x, &exps, ash, bsh, &out), _ => return Err(mismatch(op, a, b)))
        }
    };
    Tensor::new(out, data)
}

/// Min, Max, Sum, Mean over one or more operands, folded left to right.
pub(super) fn variadic(op: Op, ts: &[&Tensor]) -> Result<Tensor> {
    let first = ts
        .first()
        .ok_or_else(|| Error::invalid(format!("{op} needs at least one input")))?;
    let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
    let out = broadcast_all(op, &shapes)?;
    fn fold<T: Element>(op: Op, ts: &[&Tensor], out: &[usize], f: fn(T, T) -> T) -> Result<Vec<T>> {
        let mut acc: Vec<T> = Vec::new();
        for (k, t) in ts.iter().enumerate() {
            let v = typed::<T>(op, t)?;
            if k == 0 {
                acc = zip2(v, t.shape(), &[()], &[], out, |x, ()| x);
            } else if t.shape() == out {
                acc.iter_mut().zip(v).for_each(|(a, &x)| *a = f(*a, x));
            } else {
                let (r, n) = (rows(t.shape(), out), row_len(out));
                for (row, &i) in acc.chunks_mut(n.max(1)).zip(&r.starts) {
                    row.iter_mut()
                        .enumerate()
                        .for_each(|(k, a)| *a = f(*a, v[i + k * r.step]));
                }
            }
        }
        Ok(acc)
    }
    fn floats<F: Float>(op: Op, ts: &[&Tensor], out: &[usize]) -> Result<Vec<F>> {
        let f: fn(F, F) -> F = match op {
            Op::Min => fmin,
            Op::Max => fmax,
            _ => |p, q| p + q,
        };
        let mut r = fold(op, ts, out, f)?;
        if op == Op::Mean {
            let n = F::of(ts.len() as f64);
            r.iter_mut().for_each(|x| *x = *x / n);
        }
        Ok(r)
    }
    fn ints<I: Int>(op: Op, ts: &[&Tensor], out: &[usize], _type: &[I]) -> Result<Data> {
        let f: fn(I, I) -> I = match op {
            Op::Min => |p, q| p.min(q),
            Op::Max => |p, q| p.max(q),
            _ => {
                return Err(Error::invalid(format!(
                    "{op} is not defined for {}",
                    I::DTYPE
                )))
            }
        };
        Ok(I::wrap(fold(op, ts, out, f)?))
    }
    let data = match first.data() {
        Data::F32(_) => Data::F32(floats(op, ts, &out)?),
        Data::F64(_) => Data::F64(floats(op, ts, &out)?),
        d => match_int!(d, v => ints(op, ts, &out, v)?,
            _ => return Err(Error::invalid(format!("{op} is not defined for {}", first.dtype())))),
    };
    Tensor::new(out, data)
}

/// Where(cond, x, y), broadcasting all three.
pub(super) fn where_(op: Op, c: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let out = broadcast_all(op, &[c.shape(), x.shape(), y.shape()])?;
    let cond = typed::<bool>(op, c)?;
    let plan = [
        rows(c.shape(), &out),
        rows(x.shape(), &out),
        rows(y.shape(), &out),
    ];
    let n = row_len(&out);
    fn choose<T: Element>(cond: &[bool], a: &[T], b: &[T], plan: &[Rows; 3], n: usize) -> Vec<T> {
        let [rc, ra, rb] = plan;
        let mut out = Vec::with_capacity(rc.starts.len() * n);
        for ((&c, &i), &j) in rc.starts.iter().zip(&ra.starts).zip(&rb.starts) {
            out.extend((0..n).map(|k| {
                if cond[c + k * rc.step] {
                    a[i + k * ra.step]
                } else {
                    b[j + k * rb.step]
                }
            }));
        }
        out
    }
    macro_rules! arms {
        ($($v:ident),*) => {
            match (x.data(), y.data()) {
                $((Data::$v(a), Data::$v(b)) => Data::$v(choose(cond, a, b, &plan, n)),)*
                _ => return Err(mismatch(op, x, y)),
            }
        };
    }
    let data = arms!(F32, F16, BF16, F64, I8, U8, I16, U16, I32, U32, I64, U64, Bool);
    Tensor::new(out, data)
}

/// Clip(x, min?, max?) = min(max(x, lo), hi); NaN stays NaN, and lo > hi gives hi.
pub(super) fn clip(op: Op, x: &Tensor, lo: Option<&Tensor>, hi: Option<&Tensor>) -> Result<Tensor> {
    fn bound<T: Element>(op: Op, which: &str, t: Option<&Tensor>) -> Result<Option<T>> {
        let Some(t) = t else { return Ok(None) };
        match typed::<T>(op, t)? {
            [v] => Ok(Some(*v)),
            _ => Err(Error::invalid(format!(
                "{op}: `{which}` must be a scalar, but has shape {:?}",
                t.shape()
            ))),
        }
    }
    fn go<T: Element + PartialOrd>(
        op: Op,
        v: &[T],
        lo: Option<&Tensor>,
        hi: Option<&Tensor>,
    ) -> Result<Vec<T>> {
        let lo = bound::<T>(op, "min", lo)?;
        let hi = bound::<T>(op, "max", hi)?;
        Ok(v.iter()
            .map(|&e| {
                let mut y = e;
                if let Some(l) = lo {
                    if y < l {
                        y = l;
                    }
                }
                if let Some(h) = hi {
                    if y > h {
                        y = h;
                    }
                }
                y
            })
            .collect())
    }
    let data = crate::map_data!(x.data(), v => go(op, v, lo, hi)?);
    Tensor::new(x.shape().to_vec(), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;

    fn t<T: Element>(shape: &[usize], v: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    fn bin(op: Op, attrs: &Attrs, a: Tensor, b: Tensor) -> Tensor {
        eval(op, attrs, &a, &b).unwrap()
    }

    #[test]
    fn add_broadcasts_rows_and_columns() {
        let r = bin(
            Op::Add,
            &Attrs::new(),
            t(&[2, 1], vec![10.0f32, 20.0]),
            t(&[3], vec![1.0f32, 2.0, 3.0]),
        );
        assert_eq!(r.shape(), &[2, 3]);
        assert_eq!(
            r.as_slice::<f32>().unwrap(),
            &[11.0, 12.0, 13.0, 21.0, 22.0, 23.0]
        );
        // [2,1,3] - [2,1] -> [2,2,3]: a repeats along axis 1, b along axes 0 and 2
        let a = t(&[2, 1, 3], vec![1i32, 2, 3, 4, 5, 6]);
        let r = bin(Op::Sub, &Attrs::new(), a, t(&[2, 1], vec![10i32, 20]));
        assert_eq!(r.shape(), &[2, 2, 3]);
        let want = [-9, -8, -7, -19, -18, -17, -6, -5, -4, -16, -15, -14];
        assert_eq!(r.as_slice::<i32>().unwrap(), &want);
        // scalars and empty shapes
        let r = bin(
            Op::Mul,
            &Attrs::new(),
            t(&[], vec![2i64]),
            t(&[], vec![3i64]),
        );
        assert_eq!(
            (r.shape(), r.as_slice::<i64>().unwrap()),
            (&[][..], &[6i64][..])
        );
        let e = Vec::<f32>::new();
        let r = bin(
            Op::Mul,
            &Attrs::new(),
            t(&[0, 3], e.clone()),
            t(&[1, 3], vec![1.0f32; 3]),
        );
        assert_eq!(r.shape(), &[0, 3]);
        let r = bin(Op::Add, &Attrs::new(), t(&[2, 0], e), t(&[1], vec![1.0f32]));
        assert_eq!(r.shape(), &[2, 0]);
    }

    #[test]
    fn integer_division_truncates_and_rejects_zero() {
        let r = bin(
            Op::Div,
            &Attrs::new(),
            t(&[4], vec![7i32, -7, 7, i32::MIN]),
            t(&[4], vec![2i32, 2, -2, -1]),
        );
        assert_eq!(r.as_slice::<i32>().unwrap(), &[3, -3, -3, i32::MIN]);
        let e = eval(
            Op::Div,
            &Attrs::new(),
            &t(&[1], vec![1u8]),
            &t(&[1], vec![0u8]),
        );
        assert!(e.unwrap_err().to_string().contains("division by zero"));
    }

    #[test]
    fn integer_mod_follows_divisor_or_dividend() {
        let x = t(&[6], vec![-4i64, 7, 5, 4, -7, 8]);
        let y = t(&[6], vec![2i64, -3, 8, -2, 3, 5]);
        let r = bin(Op::Mod, &Attrs::new(), x.clone(), y.clone());
        assert_eq!(r.as_slice::<i64>().unwrap(), &[0, -2, 5, 0, 2, 3]);
        let fm = Attrs::new().with("fmod", Attr::Int(1));
        let r = bin(Op::Mod, &fm, x, y);
        assert_eq!(r.as_slice::<i64>().unwrap(), &[0, 1, 5, 0, -1, 3]);
    }

    #[test]
    fn float_mod_fmod0_edge_cases() {
        let inf = f64::INFINITY;
        let x = t(&[6], vec![-0.0, 0.0, 1.0, -1.0, inf, 5.0]);
        let y = t(&[6], vec![2.0, -2.0, -inf, inf, 2.0, 0.0]);
        let r = bin(Op::Mod, &Attrs::new(), x, y);
        let v = r.as_slice::<f64>().unwrap();
        assert!(v[0] == 0.0 && !v[0].is_sign_negative());
        assert!(v[1] == 0.0 && v[1].is_sign_negative());
        assert_eq!(v[2], -inf);
        assert_eq!(v[3], inf);
        assert!(v[4].is_nan() && v[5].is_nan());
        let r = bin(
            Op::Mod,
            &Attrs::new(),
            t(&[2], vec![-4.3f64, 7.2]),
            t(&[2], vec![2.1f64, -3.4]),
        );
        let v = r.as_slice::<f64>().unwrap();
        assert!(
            (v[0] - 2.0).abs() < 1e-12 && (v[1] + 3.0).abs() < 1e-12,
            "{v:?}"
        );
    }

    #[test]
    fn pow_mixed_types_keep_the_base_type() {
        let r = bin(
            Op::Pow,
            &Attrs::new(),
            t(&[3], vec![1i64, 2, 3]),
            t(&[3], vec![4.0f32, 5.0, 0.5]),
        );
        assert_eq!(r.as_slice::<i64>().unwrap(), &[1, 32, 1]);
        let r = bin(
            Op::Pow,
            &Attrs::new(),
            t(&[3], vec![2.0f32, 3.0, 4.0]),
            t(&[3], vec![3u64, 2, 0]),
        );
        assert_eq!(r.as_slice::<f32>().unwrap(), &[8.0, 9.0, 1.0]);
        let r = bin(
            Op::Pow,
            &Attrs::new(),
            t(&[4], vec![2i32, -1, 0, 3]),
            t(&[4], vec![-1i32, -3, -1, 40]),
        );
        assert_eq!(
            r.as_slice::<i32>().unwrap(),
            &[0, -1, i32::MAX, 3i32.wrapping_pow(40)]
        );
    }

    #[test]
    fn bitshift_handles_out_of_range_counts() {
        let right = Attrs::new().with("direction", Attr::Str("RIGHT".into()));
        let left = Attrs::new().with("direction", Attr::Str("LEFT".into()));
        let r = bin(
            Op::BitShift,
            &right,
            t(&[4], vec![-8i8, -8, 16, 1]),
            t(&[4], vec![1i8, 9, -1, 0]),
        );
        assert_eq!(r.as_slice::<i8>().unwrap(), &[-4, -1, 0, 1]);
        let r = bin(
            Op::BitShift,
            &left,
            t(&[3], vec![1u8, 2, 0x81]),
            t(&[3], vec![1u8, 8, 1]),
        );
        assert_eq!(r.as_slice::<u8>().unwrap(), &[2, 0, 2]);
        assert!(eval(
            Op::BitShift,
            &Attrs::new(),
            &t(&[1], vec![1u8]),
            &t(&[1], vec![1u8])
        )
        .is_err());
    }

    #[test]
    fn comparisons_give_bool_and_nan_is_unequal() {
        let r = bin(
            Op::Equal,
            &Attrs::new(),
            t(&[2], vec![f32::NAN, 1.0]),
            t(&[2], vec![f32::NAN, 1.0]),
        );
        assert_eq!(r.as_slice::<bool>().unwrap(), &[false, true]);
        let r = bin(
            Op::GreaterOrEqual,
            &Attrs::new(),
            t(&[3], vec![1u16, 2, 3]),
            t(&[], vec![2u16]),
        );
        assert_eq!(r.as_slice::<bool>().unwrap(), &[false, true, true]);
    }

    #[test]
    fn variadic_mean_and_max_broadcast() {
        let a = t(&[2, 2], vec![1.0f32, 2.0, 3.0, 4.0]);
        let b = t(&[2], vec![3.0f32, 0.0]);
        let c = t(&[], vec![f32::NAN]);
        let m = variadic(Op::Mean, &[&a, &b]).unwrap();
        assert_eq!(m.as_slice::<f32>().unwrap(), &[2.0, 1.0, 3.0, 2.0]);
        let m = variadic(Op::Max, &[&b, &a]).unwrap();
        assert_eq!(m.as_slice::<f32>().unwrap(), &[3.0, 2.0, 3.0, 4.0]);
        let m = variadic(Op::Min, &[&a, &c]).unwrap();
        assert!(m.as_slice::<f32>().unwrap().iter().all(|x| x.is_nan()));
        let i = variadic(Op::Min, &[&t(&[2], vec![5i32, -1])]).unwrap();
        assert_eq!(i.as_slice::<i32>().unwrap(), &[5, -1]);
    }

    #[test]
    fn where_and_clip() {
        let c = t(&[2, 1], vec![true, false]);
        let r = where_(Op::Where, &c, &t(&[2], vec![1i64, 2]), &t(&[], vec![9i64])).unwrap();
        assert_eq!(r.as_slice::<i64>().unwrap(), &[1, 2, 9, 9]);
        let x = t(&[4], vec![-2.0f32, 0.0, 6.0, f32::NAN]);
        let r = clip(
            Op::Clip,
            &x,
            Some(&t(&[], vec![-1.0f32])),
            Some(&t(&[1], vec![5.0f32])),
        )
        .unwrap();
        let v = r.as_slice::<f32>().unwrap();
        assert_eq!(&v[..3], &[-1.0, 0.0, 5.0]);
        assert!(v[3].is_nan());
        // min > max: everything becomes max
        let r = clip(
            Op::Clip,
            &x,
            Some(&t(&[], vec![2.0f32])),
            Some(&t(&[], vec![1.0f32])),
        )
        .unwrap();
        assert_eq!(&r.as_slice::<f32>().unwrap()[..3], &[1.0, 1.0, 1.0]);
        let r = clip(
            Op::Clip,
            &t(&[2], vec![-128i8, 100]),
            None,
            Some(&t(&[], vec![0i8])),
        )
        .unwrap();
        assert_eq!(r.as_slice::<i8>().unwrap(), &[-128, 0]);
    }

    #[test]
    fn prelu_broadcasts_slope() {
        let r = bin(
            Op::PRelu,
            &Attrs::new(),
            t(&[2, 2], vec![-1.0f32, 2.0, -3.0, 4.0]),
            t(&[2], vec![0.5f32, 0.1]),
        );
        assert_eq!(r.as_slice::<f32>().unwrap(), &[-0.5, 2.0, -1.5, 4.0]);
    }
}
