//! Elementwise expressions: the bodies of kiln's fused ops.
//!
//! A [`FusedElementwise`](crate::Op::FusedElementwise) node computes one
//! [`Expr`] over its inputs, and the `epilogue` of a
//! [`FusedMatMul`](crate::Op::FusedMatMul) or [`FusedConv`](crate::Op::FusedConv)
//! is an [`Expr`] over the product (`%0`) and the node's extra inputs
//! (`%1`, `%2`, ...). An expression means exactly what its decomposition means:
//! [`eval`] runs each op through the reference interpreter and [`infer`]
//! through shape inference, so a fused node and the graph it replaced agree by
//! construction (intermediate values are rounded to their dtype, as the
//! unfused graph would round them).
//!
//! Only single-output elementwise ops may appear (the [`OpClass::Elementwise`]
//! set); broadcasting between operands is ONNX's multidirectional rule.
//!
//! Text form (the `.kir` syntax for ops, attributes and tensor literals):
//!
//! ```text
//! expr := '%' digits                       ; the fused node's input
//!       | tensor                           ; a constant: tensor<f32[]> 0.5
//!       | OP attrs? '(' expr (',' expr)* ')'
//! ```
//! e.g. `Gelu(Add(%0, %1))`, `Cast[to=10](Mul(%0, tensor<f32[]> 0.125))`.

use crate::infer::{infer_op, Operand};
use crate::interp::eval_op;
use crate::{Attrs, Error, Op, OpClass, Result, Tensor, TensorType};
use std::fmt;

/// An elementwise expression tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// The fused node's input `i` (`%i`).
    Input(usize),
    /// A constant, usually a scalar.
    Const(Tensor),
    /// An elementwise op applied to sub-expressions.
    Op { op: Op, attrs: Attrs, args: Vec<Expr> },
}

impl Expr {
    /// `op(args)` with no attributes.
    pub fn op(op: Op, args: Vec<Expr>) -> Expr {
        Expr::Op { op, attrs: Attrs::new(), args }
    }

    /// Parses the text form.
    pub fn parse(src: &str) -> Result<Expr> {
        crate::text::parse_expr(src)
    }

    /// One more than the largest input index used (0 for a constant expression).
    pub fn num_inputs(&self) -> usize {
        match self {
            Expr::Input(i) => i + 1,
            Expr::Const(_) => 0,
            Expr::Op { args, .. } => args.iter().map(Expr::num_inputs).max().unwrap_or(0),
        }
    }

    /// Number of op applications in the tree.
    pub fn num_ops(&self) -> usize {
        match self {
            Expr::Op { args, .. } => 1 + args.iter().map(Expr::num_ops).sum::<usize>(),
            _ => 0,
        }
    }

    /// Every op application, parents before children.
    pub fn ops(&self) -> Vec<Op> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Op { op, .. } = e {
                out.push(*op);
            }
        });
        out
    }

    /// Visits every sub-expression, parents before children.
    pub fn walk(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        if let Expr::Op { args, .. } = self {
            for a in args {
                a.walk(f);
            }
        }
    }

    /// The expression with every `%i` replaced by `map(i)`.
    pub fn substitute(&self, map: &impl Fn(usize) -> Expr) -> Expr {
        match self {
            Expr::Input(i) => map(*i),
            Expr::Const(t) => Expr::Const(t.clone()),
            Expr::Op { op, attrs, args } => Expr::Op {
                op: *op,
                attrs: attrs.clone(),
                args: args.iter().map(|a| a.substitute(map)).collect(),
            },
        }
    }

    /// Checks the structural rules: only single-output elementwise ops.
    pub fn check(&self) -> Result<()> {
        let mut err = None;
        self.walk(&mut |e| {
            if let Expr::Op { op, .. } = e {
                if op.class() != OpClass::Elementwise && err.is_none() {
                    err = Some(Error::invalid(format!(
                        "fused expression uses {op}, which is not an elementwise op"
                    )));
                }
            }
        });
        err.map_or(Ok(()), Err)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::text::print_expr(self))
    }
}

/// The result type of `e` over inputs of types `inputs`.
pub fn infer(e: &Expr, inputs: &[TensorType]) -> Result<TensorType> {
    match e {
        Expr::Input(i) => inputs.get(*i).cloned().ok_or_else(|| {
            Error::invalid(format!("fused expression uses %{i}, but the node has {} inputs", inputs.len()))
        }),
        Expr::Const(t) => Ok(t.ty()),
        Expr::Op { op, attrs, args } => {
            if op.class() != OpClass::Elementwise {
                return Err(Error::invalid(format!(
                    "fused expression uses {op}, which is not an elementwise op"
                )));
            }
            let tys = args.iter().map(|a| infer(a, inputs)).collect::<Result<Vec<_>>>()?;
            let consts: Vec<Option<&Tensor>> = args
                .iter()
                .map(|a| match a {
                    Expr::Const(t) => Some(t),
                    _ => None,
                })
                .collect();
            let ops: Vec<Option<Operand>> = tys
                .iter()
                .zip(&consts)
                .map(|(ty, v)| Some(Operand { ty, value: *v }))
                .collect();
            let mut out = infer_op(*op, attrs, &ops, 1)
                .map_err(|err| Error::invalid(format!("in fused expression at {op}: {err}")))?;
            out.pop().ok_or_else(|| Error::invalid(format!("{op} inferred no output")))
        }
    }
}

/// Evaluates `e` on concrete inputs with the reference interpreter.
pub fn eval(e: &Expr, inputs: &[&Tensor]) -> Result<Tensor> {
    match e {
        Expr::Input(i) => inputs.get(*i).map(|t| (*t).clone()).ok_or_else(|| {
            Error::invalid(format!("fused expression uses %{i}, but the node has {} inputs", inputs.len()))
        }),
        Expr::Const(t) => Ok(t.clone()),
        Expr::Op { op, attrs, args } => {
            if op.class() != OpClass::Elementwise {
                return Err(Error::invalid(format!(
                    "fused expression uses {op}, which is not an elementwise op"
                )));
            }
            let vals = args.iter().map(|a| eval(a, inputs)).collect::<Result<Vec<_>>>()?;
            let refs: Vec<Option<&Tensor>> = vals.iter().map(Some).collect();
            let mut out = eval_op(*op, attrs, &refs, 1)?;
            out.pop().ok_or_else(|| Error::invalid(format!("{op} produced no output")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn text_round_trips() {
        for src in [
            "%0",
            "Gelu(Add(%0, %1))",
            "Cast[to=10](Mul(%0, tensor<f32[]> 0.125))",
            "Where(Greater(%0, tensor<f32[]> 0.0), %0, Mul(%0, tensor<f32[2]> [0.5, -1.0]))",
            "LeakyRelu[alpha=0.1](%3)",
        ] {
            let e = Expr::parse(src).unwrap();
            assert_eq!(e.to_string(), src);
            assert_eq!(Expr::parse(&e.to_string()).unwrap(), e);
        }
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = Expr::parse("Add(%0,").unwrap_err().to_string();
        assert!(e.contains("expected"), "{e}");
        let e = Expr::parse("Frobnicate(%0)").unwrap_err().to_string();
        assert!(e.contains("unknown op `Frobnicate`"), "{e}");
        let e = Expr::parse("%0 %1").unwrap_err().to_string();
        assert!(e.contains("end of"), "{e}");
    }

    #[test]
    fn eval_and_infer_agree_with_the_decomposition() {
        let e = Expr::parse("Relu(Add(Mul(%0, tensor<f32[]> 2.0), %1))").unwrap();
        let a = Tensor::from_vec(vec![2, 2], vec![1.0f32, -3.0, 0.5, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![2], vec![1.0f32, 1.0]).unwrap();
        let y = eval(&e, &[&a, &b]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[3.0, 0.0, 2.0, 5.0]);
        let ty = infer(&e, &[a.ty(), b.ty()]).unwrap();
        assert_eq!(ty, TensorType::new(DType::F32, vec![2, 2]));
        assert_eq!(e.num_inputs(), 2);
        assert_eq!(e.ops(), vec![Op::Relu, Op::Add, Op::Mul]);
    }

    #[test]
    fn non_elementwise_ops_are_rejected() {
        let e = Expr::op(Op::MatMul, vec![Expr::Input(0), Expr::Input(1)]);
        assert!(e.check().is_err());
        let t = Tensor::from_vec(vec![1, 1], vec![1.0f32]).unwrap();
        assert!(eval(&e, &[&t, &t]).unwrap_err().to_string().contains("not an elementwise op"));
    }
}
