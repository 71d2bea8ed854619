//! Fusion rules: elementwise chains into `FusedElementwise`, MatMul/Gemm/Conv
//! epilogues (bias, activation, residual; BatchNormalization folded into
//! Conv), LayerNormalization/RMSNormalization, Softmax and GELU recognised
//! from their decompositions, and scaled dot-product attention into ONNX
//! `Attention`.
//!
//! Requires: the rule API of [`crate::rules`] and the e-graph analysis
//! (types and constants per class). Establishes: the fusion phase's table,
//! [`rules`]. Every rule states its law and side conditions; the soundness
//! harness checks each on its examples. As in the algebra table, a rule's
//! result must have the matched class's type or admission control drops it,
//! so "the fused node computes what the consumer produced" is checked by
//! type for every rewrite, not only where a rule says so.
//!
//! The matchers look through e-classes (any node of a class may play a
//! part), so one rule covers the operand orders the exporters emit
//! (`Mul(x, 0.5)` or `Mul(0.5, x)`, `Div(x, √2)` or `Mul(x, 1/√2)`, ...).
//! The helpers here read classes: op nodes of a class, scalar constants,
//! integer constants.
//!
//! Files: [`elementwise`] (FusedElementwise), [`epilogue`] (FusedMatMul,
//! Gemm, MatMul with transposed operands, and the epilogue absorber shared
//! with FusedConv), [`conv`] (Conv bias, BatchNormalization folding),
//! [`norm`] (LayerNorm, RMSNorm, Softmax, GELU), [`attention`].

pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod epilogue;
pub mod norm;

use super::Rule;
use crate::egraph::analysis::KEGraph;
use crate::egraph::lang::{KNode, OpNode};
use egg::Id;
use kiln_ir::{Op, Tensor, TensorType};

/// The fusion phase's rules.
pub fn rules() -> Vec<Rule> {
    let mut v = Vec::new();
    v.extend(norm::rules());
    v.extend(attention::rules());
    v.extend(conv::rules());
    v.extend(epilogue::rules());
    v.extend(elementwise::rules());
    v
}

/// The single-output `op` nodes of class `c` (children as stored: compare
/// them through `eg.find`).
pub(crate) fn ops_in(eg: &KEGraph, c: Id, op: Op) -> Vec<OpNode> {
    eg[eg.find(c)]
        .nodes
        .iter()
        .filter_map(|n| match n {
            KNode::Op(o) if o.op == op && o.nout == 1 => Some(o.clone()),
            _ => None,
        })
        .collect()
}

/// The operand pairs of the binary `op` nodes of class `c`.
pub(crate) fn binary(eg: &KEGraph, c: Id, op: Op) -> Vec<(Id, Id)> {
    ops_in(eg, c, op)
        .into_iter()
        .filter(|o| o.args.len() == 2)
        .map(|o| (eg.find(o.args[0]), eg.find(o.args[1])))
        .collect()
}

/// The operand of the unary `op` nodes of class `c`.
pub(crate) fn unary(eg: &KEGraph, c: Id, op: Op) -> Vec<Id> {
    ops_in(eg, c, op)
        .into_iter()
        .filter(|o| o.args.len() == 1 && o.attrs.attrs().is_empty())
        .map(|o| eg.find(o.args[0]))
        .collect()
}

/// The type of class `c`.
pub(crate) fn type_of(eg: &KEGraph, c: Id) -> Option<&TensorType> {
    eg[eg.find(c)].data.ty()
}

/// Whether class `c` is an omitted optional operand.
pub(crate) fn class_of_absent(eg: &KEGraph, c: Id) -> bool {
    eg[eg.find(c)].data.types.is_empty()
}

/// The constant value of class `c`.
pub(crate) fn value_of(eg: &KEGraph, c: Id) -> Option<&Tensor> {
    eg[eg.find(c)].data.value()
}

/// The value of a float constant whose elements are all equal.
pub(crate) fn scalar(eg: &KEGraph, c: Id) -> Option<f64> {
    let t = value_of(eg, c)?;
    if !t.dtype().is_float() || t.numel() == 0 {
        return None;
    }
    let v = t.to_f64_vec();
    v.iter()
        .all(|&x| x.to_bits() == v[0].to_bits())
        .then_some(v[0])
}

/// Whether class `c` is a float constant all of whose elements are within a
/// relative `1e-6` of `want` (the exporters write √2, 1/√2, √(2/π) rounded
/// to f32).
pub(crate) fn is_about(eg: &KEGraph, c: Id, want: f64) -> bool {
    scalar(eg, c).is_some_and(|x| (x - want).abs() <= 1e-6 * want.abs())
}

/// Whether class `c` is a float constant equal to `want` exactly.
pub(crate) fn is_exactly(eg: &KEGraph, c: Id, want: f64) -> bool {
    scalar(eg, c).is_some_and(|x| x == want)
}

/// `(other, k)` for each `op(other, k)` node of class `c` whose operand `k`
/// is a scalar-like constant; for a commutative `op` (Add, Mul) both orders.
pub(crate) fn with_scalar(eg: &KEGraph, c: Id, op: Op) -> Vec<(Id, f64)> {
    let commutes = matches!(op, Op::Add | Op::Mul);
    let mut out = Vec::new();
    for (a, b) in binary(eg, c, op) {
        if let Some(k) = scalar(eg, b) {
            out.push((a, k));
        }
        if commutes {
            if let Some(k) = scalar(eg, a) {
                out.push((b, k));
            }
        }
    }
    out
}

/// The integer values of a constant class.
pub(crate) fn ints_of(eg: &KEGraph, c: Id) -> Option<Vec<i64>> {
    let t = value_of(eg, c)?;
    if t.dtype().is_float() {
        return None;
    }
    t.to_i64_vec().ok()
}

/// The sorted, non-negative reduction axes of a Reduce node over an operand
/// of rank `rank` (axes as an input, or as the older attribute), when it
/// keeps the reduced dimensions. `None` for an empty axis list.
pub(crate) fn reduce_axes(eg: &KEGraph, o: &OpNode, rank: usize) -> Option<Vec<usize>> {
    let attrs = o.attrs.attrs();
    if attrs.int_or("keepdims", 1).ok()? != 1 {
        return None;
    }
    let raw: Vec<i64> = match (o.args.get(1), attrs.ints("axes").ok()?) {
        (Some(&a), _) => ints_of(eg, a)?,
        (None, Some(v)) => v.to_vec(),
        (None, None) => return None,
    };
    let mut axes: Vec<usize> = raw
        .iter()
        .map(|&a| kiln_ir::shape::normalize_axis(a, rank))
        .collect::<Option<_>>()?;
    axes.sort_unstable();
    axes.dedup();
    (!axes.is_empty()).then_some(axes)
}

/// Whether `axes` (sorted) are the last `axes.len()` axes of a rank-`rank` tensor.
pub(crate) fn is_suffix(axes: &[usize], rank: usize) -> bool {
    !axes.is_empty()
        && axes
            .iter()
            .enumerate()
            .all(|(i, &a)| a + axes.len() == rank + i)
}

/// The classes of the Reduce`op` nodes of class `c` over operand `of`
/// (compared canonically), with their axes.
pub(crate) fn reductions_of(eg: &KEGraph, c: Id, op: Op, of: Id) -> Vec<Vec<usize>> {
    let of = eg.find(of);
    let Some(rank) = type_of(eg, of).map(|t| t.shape.rank()) else {
        return vec![];
    };
    ops_in(eg, c, op)
        .into_iter()
        .filter(|o| eg.find(o.args[0]) == of)
        .filter_map(|o| reduce_axes(eg, &o, rank))
        .collect()
}

/// Checks that `node` type-checks to the type of class `class` (what
/// admission control will check), so one bad candidate does not sink the
/// other candidates of the same right-hand side.
pub(crate) fn fits_class(eg: &KEGraph, node: &KNode, class: Id) -> bool {
    let kids: Vec<&crate::egraph::KData> = node
        .children()
        .iter()
        .map(|&k| &eg[eg.find(k)].data)
        .collect();
    match eg.analysis.node_data(node, &kids) {
        Ok(d) => {
            crate::egraph::analysis::types_compatible(&eg[eg.find(class)].data.types, &d.types)
        }
        Err(_) => false,
    }
}

use egg::Language as _;
