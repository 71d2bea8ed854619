//! The reference interpreter: the oracle that defines what every op means.
//!
//! Simple and obviously right beats fast. Each op class has its own module;
//! [`eval_op`] dispatches on [`OpClass`]. Semantics are ONNX's (newest opset,
//! see [`crate::op`]): multidirectional broadcasting, negative axes, keepdims,
//! QuantizeLinear's round-half-to-even and saturation.
//!
//! Numerics (the rules every backend is checked against):
//! - f32 and f64 compute in their own type; MatMul, Gemm, Conv and reductions
//!   accumulate f32 in f32 and f64 in f64, in index order.
//! - f16 and bf16 compute in f32 and round the result to the storage type once
//!   per op (so a reduction accumulates in f32).
//! - Integer arithmetic wraps (two's complement); integer division truncates
//!   toward zero, and integer division or modulo by zero is an error. Integer
//!   MatMul (MatMulInteger, QLinearMatMul, ConvInteger) accumulates in i32.
//! - Float-to-integer Cast truncates toward zero and saturates (NaN becomes 0).
//! - Transcendentals Rust's `f32` lacks (erf, and Gelu through it) are computed
//!   in f64 and rounded once.
//! - Quantization rounds half to even and saturates to the target type.

mod attention;
mod conv;
mod elementwise;
pub(crate) mod linalg;
pub(crate) mod misc;
pub(crate) mod movement;
pub(crate) mod norm;
mod pool;
pub(crate) mod quant;
mod reduce;
pub(crate) mod shape_ops;
pub mod util;
pub(crate) mod window;
pub use elementwise::num::erf_f64;
pub use window::{conv_axes, pool_axes, Axis as WindowAxis};
pub use linalg::einsum::{einsum_space, EinsumSpace};
pub use misc::resize::{resize_tables, ResizeAxisTaps, ResizeTables};

use crate::{Attrs, Error, Graph, Op, OpClass, Result, Tensor};

/// Evaluates one op on concrete operands. `inputs` are in ONNX positions
/// (`None` for an omitted optional input); `n_outputs` is how many outputs the
/// node asks for (ops with optional outputs compute only those).
pub fn eval_op(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    crate::infer::check_arity(op, inputs, n_outputs)?;
    match op.class() {
        OpClass::Elementwise => elementwise::eval(op, attrs, inputs, n_outputs),
        OpClass::Reduction => reduce::eval(op, attrs, inputs, n_outputs),
        OpClass::Normalization => norm::eval(op, attrs, inputs, n_outputs),
        OpClass::Linalg => linalg::eval(op, attrs, inputs, n_outputs),
        OpClass::Conv => conv::eval(op, attrs, inputs, n_outputs),
        OpClass::Pool => pool::eval(op, attrs, inputs, n_outputs),
        OpClass::Movement => movement::eval(op, attrs, inputs, n_outputs),
        OpClass::Shape => shape_ops::eval(op, attrs, inputs, n_outputs),
        OpClass::Quantization => quant::eval(op, attrs, inputs, n_outputs),
        OpClass::Attention => attention::eval(op, attrs, inputs, n_outputs),
        OpClass::Misc => misc::eval(op, attrs, inputs, n_outputs),
        OpClass::Fused => crate::fused::eval(op, attrs, inputs),
    }
}

/// Checks runtime inputs against the graph's declared input types: count,
/// dtype, rank, fixed dimensions, and that each symbolic dimension takes one
/// value across all inputs.
pub fn check_inputs(graph: &Graph, inputs: &[Tensor]) -> Result<()> {
    if inputs.len() != graph.inputs.len() {
        let names: Vec<String> = graph.inputs.iter().map(|&v| graph.display_name(v)).collect();
        return Err(Error::Input {
            name: if inputs.len() < graph.inputs.len() {
                names[inputs.len()].clone()
            } else {
                format!("#{}", inputs.len() - 1)
            },
            msg: format!(
                "the graph takes {} inputs ({}) but {} were given",
                graph.inputs.len(),
                names.join(", "),
                inputs.len()
            ),
        });
    }
    let mut bound: std::collections::HashMap<&str, usize> = Default::default();
    for (&v, t) in graph.inputs.iter().zip(inputs) {
        let want = graph.ty(v);
        let name = graph.display_name(v);
        let mismatch = || Error::Input {
            name: name.clone(),
            msg: format!("expected {want}, got {}", t.ty()),
        };
        if t.dtype() != want.dtype || t.rank() != want.shape.rank() {
            return Err(mismatch());
        }
        for (d, &n) in want.shape.0.iter().zip(t.shape()) {
            match d {
                crate::Dim::Fixed(m) if *m != n => return Err(mismatch()),
                crate::Dim::Sym(s) => {
                    let prev = *bound.entry(s.as_str()).or_insert(n);
                    if prev != n {
                        return Err(Error::Input {
                            name: name.clone(),
                            msg: format!(
                                "dimension `{s}` is {n} here but {prev} in an earlier input"
                            ),
                        });
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Runs a whole graph. `inputs` are in [`Graph::inputs`] order. Each node's
/// results are checked against its declared output types, so a wrong shape
/// inference is caught where it happens. Values are dropped after their last use.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    check_inputs(graph, inputs)?;
    let n = graph.values.len();
    // last_use[v] = index of the last node reading v (usize::MAX: kept to the end)
    let mut last_use = vec![0usize; n];
    for (i, node) in graph.nodes.iter().enumerate() {
        for v in node.inputs.iter().flatten() {
            last_use[v.index()] = i;
        }
    }
    for v in &graph.outputs {
        last_use[v.index()] = usize::MAX;
    }
    let mut env: Vec<Option<Tensor>> = vec![None; n];
    for (&v, t) in graph.inputs.iter().zip(inputs) {
        env[v.index()] = Some(t.clone());
    }
    let konst = |v: crate::ValueId| graph.consts.get(&v);
    for (i, node) in graph.nodes.iter().enumerate() {
        let ctx = |e: Error| e.in_node(&node.name, node.op);
        let args: Vec<Option<&Tensor>> = node
            .inputs
            .iter()
            .map(|o| match o {
                None => Ok(None),
                Some(v) => env[v.index()]
                    .as_ref()
                    .or_else(|| konst(*v))
                    .map(Some)
                    .ok_or_else(|| ctx(Error::invalid(format!("operand {v} has no value")))),
            })
            .collect::<Result<_>>()?;
        let outs = eval_op(node.op, &node.attrs, &args, node.outputs.len()).map_err(ctx)?;
        if outs.len() != node.outputs.len() {
            return Err(ctx(Error::invalid(format!(
                "computed {} outputs but the node has {}",
                outs.len(),
                node.outputs.len()
            ))));
        }
        for (k, (&v, t)) in node.outputs.iter().zip(&outs).enumerate() {
            let want = graph.ty(v);
            let shape_ok = want.shape.rank() == t.rank()
                && want.shape.0.iter().zip(t.shape()).all(|(d, &n)| d.fixed().is_none_or(|m| m == n));
            if want.dtype != t.dtype() || !shape_ok {
                return Err(ctx(Error::invalid(format!(
                    "output {k} computed as {} but the graph declares {want}",
                    t.ty()
                ))));
            }
        }
        for (v, t) in node.outputs.iter().zip(outs) {
            env[v.index()] = Some(t);
        }
        for v in node.inputs.iter().flatten() {
            if last_use[v.index()] == i {
                env[v.index()] = None;
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|&v| {
            env[v.index()].clone().or_else(|| konst(v).cloned()).ok_or_else(|| {
                Error::invalid(format!("graph output {} was never computed", graph.display_name(v)))
            })
        })
        .collect()
}
