//! Unary elementwise ops: float math and activations (computed in f32 or
//! f64), the integer ones (Abs, Neg, Sign, Relu, BitwiseNot), Not, and the
//! float classifiers IsNaN and IsInf.

use super::num::{match_int, Float, Int};
use crate::{Attrs, Data, Element, Error, Op, Result, Tensor};

pub(super) fn eval(op: Op, attrs: &Attrs, x: &Tensor) -> Result<Tensor> {
    let data = match op {
        Op::IsNaN => Data::Bool(classify(x, |v| v.is_nan())),
        Op::IsInf => {
            let neg = attrs.int_or("detect_negative", 1)? != 0;
            let pos = attrs.int_or("detect_positive", 1)? != 0;
            Data::Bool(classify(x, |v| {
                (pos && v == f64::INFINITY) || (neg && v == f64::NEG_INFINITY)
            }))
        }
        Op::Not => match x.data() {
            Data::Bool(v) => Data::Bool(v.iter().map(|b| !b).collect()),
            _ => return Err(bad_type(op, x)),
        },
        _ => match x.data() {
            Data::F32(v) => Data::F32(float(op, attrs, v)?),
            Data::F64(v) => Data::F64(float(op, attrs, v)?),
            d => match_int!(d, v => int(op, v)?, _ => return Err(bad_type(op, x))),
        },
    };
    Tensor::new(x.shape().to_vec(), data)
}

fn bad_type(op: Op, x: &Tensor) -> Error {
    Error::invalid(format!("{op} is not defined for {}", x.dtype()))
}

fn classify(x: &Tensor, f: impl Fn(f64) -> bool) -> Vec<bool> {
    crate::with_data!(x.data(), v => v.iter().map(|e| f(e.to_f64())).collect())
}

/// A float unary op on f32 or f64 data.
fn float<F: Float>(op: Op, attrs: &Attrs, v: &[F]) -> Result<Vec<F>> {
    let attr = |name: &str, default: f32| -> Result<F> {
        Ok(F::of(attrs.float_or(name, default)? as f64))
    };
    macro_rules! map {
        (|$x:ident| $e:expr) => {
            v.iter().map(|&$x| $e).collect()
        };
    }
    let zero = F::ZERO;
    let one = F::ONE;
    let half = F::of(0.5);
    Ok(match op {
        Op::Abs => map!(|x| x.abs()),
        Op::Neg => map!(|x| -x),
        Op::Sqrt => map!(|x| x.sqrt()),
        Op::Reciprocal => map!(|x| one / x),
        Op::Exp => map!(|x| x.exp()),
        Op::Log => map!(|x| x.ln()),
        Op::Tanh => map!(|x| x.tanh()),
        Op::Erf => map!(|x| x.erf()),
        Op::Relu => map!(|x| if x < zero { zero } else { x }),
        Op::Sigmoid => map!(|x| sigmoid(x)),
        Op::Softplus => map!(|x| softplus(x)),
        Op::Softsign => map!(|x| x / (one + x.abs())),
        Op::Floor => map!(|x| x.floor()),
        Op::Ceil => map!(|x| x.ceil()),
        Op::Round => map!(|x| x.round_ties_even()),
        Op::Sign => map!(|x| if x > zero {
            one
        } else if x < zero {
            -one
        } else {
            x
        }),
        Op::Sin => map!(|x| x.sin()),
        Op::Cos => map!(|x| x.cos()),
        Op::Tan => map!(|x| x.tan()),
        Op::Asin => map!(|x| x.asin()),
        Op::Acos => map!(|x| x.acos()),
        Op::Atan => map!(|x| x.atan()),
        Op::Sinh => map!(|x| x.sinh()),
        Op::Cosh => map!(|x| x.cosh()),
        Op::Asinh => map!(|x| x.asinh()),
        Op::Acosh => map!(|x| x.acosh()),
        Op::Atanh => map!(|x| x.atanh()),
        Op::HardSigmoid => {
            let (a, b) = (attr("alpha", 0.2)?, attr("beta", 0.5)?);
            map!(|x| clamp01(a * x + b))
        }
        Op::HardSwish => {
            let a = F::of(1.0 / 6.0);
            map!(|x| x * clamp01(a * x + half))
        }
        Op::LeakyRelu => {
            let a = attr("alpha", 0.01)?;
            map!(|x| if x < zero { a * x } else { x })
        }
        Op::Elu => {
            let a = attr("alpha", 1.0)?;
            map!(|x| if x < zero { a * x.exp_m1() } else { x })
        }
        Op::Selu => {
            let (a, g) = (attr("alpha", 1.673_263_2)?, attr("gamma", 1.050_701)?);
            map!(|x| if x <= zero {
                g * (a * x.exp() - a)
            } else {
                g * x
            })
        }
        Op::Celu => {
            let a = attr("alpha", 1.0)?;
            map!(|x| if x > zero { x } else { a * (x / a).exp_m1() })
        }
        Op::ThresholdedRelu => {
            let a = attr("alpha", 1.0)?;
            map!(|x| if x > a { x } else { zero })
        }
        Op::Gelu => match attrs.str_or("approximate", "none")? {
            "none" => {
                let r = F::of(std::f64::consts::FRAC_1_SQRT_2);
                map!(|x| half * x * (one + (x * r).erf()))
            }
            "tanh" => {
                let k = F::of((2.0 / std::f64::consts::PI).sqrt());
                let c = F::of(0.044715);
                map!(|x| half * x * (one + (k * (x + c * x * x * x)).tanh()))
            }
            other => return Err(bad_approximate(other)),
        },
        Op::Mish => map!(|x| x * softplus(x).tanh()),
        _ => {
            return Err(Error::invalid(format!(
                "{op} is not defined for {}",
                F::DTYPE
            )))
        }
    })
}

pub(super) fn bad_approximate(other: &str) -> Error {
    Error::Attr {
        attr: "approximate".into(),
        msg: format!("Gelu's approximate must be \"none\" or \"tanh\", not {other:?}"),
    }
}

fn clamp01<F: Float>(y: F) -> F {
    if y < F::ZERO {
        F::ZERO
    } else if y > F::ONE {
        F::ONE
    } else {
        y
    }
}

/// `1 / (1 + exp(-x))`, without overflow for large |x|.
fn sigmoid<F: Float>(x: F) -> F {
    if x >= F::ZERO {
        F::ONE / (F::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (F::ONE + e)
    }
}

/// `ln(1 + exp(x))`, without overflow for large x.
fn softplus<F: Float>(x: F) -> F {
    if x > F::ZERO {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// The unary ops defined on integers.
fn int<I: Int>(op: Op, v: &[I]) -> Result<Data> {
    let out: Vec<I> = match op {
        Op::Abs => v.iter().map(|x| x.wabs()).collect(),
        Op::Neg => v.iter().map(|x| x.wneg()).collect(),
        Op::Sign => v.iter().map(|x| x.signum()).collect(),
        Op::Relu => v.iter().map(|&x| x.max(I::ZERO)).collect(),
        Op::BitwiseNot => v.iter().map(|&x| !x).collect(),
        _ => {
            return Err(Error::invalid(format!(
                "{op} is not defined for {}",
                I::DTYPE
            )))
        }
    };
    Ok(I::wrap(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;

    fn run(op: Op, attrs: &Attrs, v: Vec<f32>) -> Vec<f32> {
        let t = Tensor::from_vec(vec![v.len()], v).unwrap();
        eval(op, attrs, &t)
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn round_is_half_to_even() {
        let got = run(
            Op::Round,
            &Attrs::new(),
            vec![0.5, 1.5, 2.5, -2.5, -0.5, 2.3, 0.9],
        );
        assert_eq!(got, vec![0.0, 2.0, 2.0, -2.0, -0.0, 2.0, 1.0]);
    }

    #[test]
    fn activations_use_onnx_defaults() {
        let a = Attrs::new();
        close(&run(Op::LeakyRelu, &a, vec![-1.0, 2.0]), &[-0.01, 2.0]);
        close(
            &run(Op::HardSigmoid, &a, vec![-5.0, 0.0, 1.0, 5.0]),
            &[0.0, 0.5, 0.7, 1.0],
        );
        close(
            &run(Op::HardSwish, &a, vec![-4.0, 1.0, 4.0]),
            &[0.0, 1.0 * (1.0 / 6.0 + 0.5), 4.0],
        );
        close(
            &run(Op::ThresholdedRelu, &a, vec![0.5, 1.0, 1.5]),
            &[0.0, 0.0, 1.5],
        );
        // selu(-1) = 1.0507 * 1.67326 * (e^-1 - 1)
        close(
            &run(Op::Selu, &a, vec![-1.0, 2.0]),
            &[-1.111_330_7, 2.101_402],
        );
        close(&run(Op::Elu, &a, vec![-1.0, 2.0]), &[-0.632_120_56, 2.0]);
        close(
            &run(
                Op::Celu,
                &a.clone().with("alpha", Attr::Float(2.0)),
                vec![-1.0],
            ),
            &[-0.786_938_7],
        );
        close(
            &run(Op::Softplus, &a, vec![-1.0, 0.0, 100.0]),
            &[0.313_261_7, std::f32::consts::LN_2, 100.0],
        );
        close(
            &run(Op::Sigmoid, &a, vec![-100.0, 0.0, 2.0]),
            &[0.0, 0.5, 0.880_797_1],
        );
        close(
            &run(Op::Mish, &a, vec![-1.0, 1.0]),
            &[-0.303_401_4, 0.865_098_4],
        );
    }

    #[test]
    fn gelu_exact_and_tanh() {
        let exact = run(Op::Gelu, &Attrs::new(), vec![-1.0, 0.0, 1.0]);
        close(&exact, &[-0.158_655_3, 0.0, 0.841_344_7]);
        let tanh = Attrs::new().with("approximate", Attr::Str("tanh".into()));
        close(&run(Op::Gelu, &tanh, vec![1.0]), &[0.841_192]);
        let bad = Attrs::new().with("approximate", Attr::Str("fast".into()));
        let t = Tensor::from_vec(vec![1], vec![1.0f32]).unwrap();
        assert!(eval(Op::Gelu, &bad, &t).is_err());
    }

    #[test]
    fn integer_abs_neg_sign_wrap() {
        let t = Tensor::from_vec(vec![4], vec![i8::MIN, -3, 0, 5]).unwrap();
        let a = eval(Op::Abs, &Attrs::new(), &t).unwrap();
        assert_eq!(a.as_slice::<i8>().unwrap(), &[i8::MIN, 3, 0, 5]);
        let n = eval(Op::Neg, &Attrs::new(), &t).unwrap();
        assert_eq!(n.as_slice::<i8>().unwrap(), &[i8::MIN, 3, 0, -5]);
        let s = eval(Op::Sign, &Attrs::new(), &t).unwrap();
        assert_eq!(s.as_slice::<i8>().unwrap(), &[-1, -1, 0, 1]);
    }

    #[test]
    fn isinf_respects_directions() {
        let t = Tensor::from_vec(
            vec![4],
            vec![f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1.0],
        )
        .unwrap();
        let only_neg = Attrs::new().with("detect_positive", Attr::Int(0));
        let r = eval(Op::IsInf, &only_neg, &t).unwrap();
        assert_eq!(r.as_slice::<bool>().unwrap(), &[false, true, false, false]);
        let r = eval(Op::IsNaN, &Attrs::new(), &t).unwrap();
        assert_eq!(r.as_slice::<bool>().unwrap(), &[false, false, true, false]);
    }
}
