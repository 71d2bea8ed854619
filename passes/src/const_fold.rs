//! Constant folding: a node whose operands are all constants is evaluated
//! with the reference interpreter ([`kiln_ir::interp::eval_op`]) and its
//! outputs become constants; `Shape` and `Size` of a value whose declared
//! shape is static become constants too, whatever the value.
//!
//! Nodes are visited in order, so a chain of foldable nodes (BERT's
//! `Shape → Gather → Unsqueeze → Concat → Reshape` shape arithmetic) folds in
//! one run. Folding is exact: the interpreter that computes the constant is
//! the one that would have computed the value at run time. Every kiln op is
//! deterministic (Dropout is the identity in inference mode; in training mode
//! with a non-zero ratio the interpreter refuses it, and so does folding).
//!
//! Size policy ([`FoldPolicy`]): a node is folded only if its outputs hold
//! together at most `max(small_elems, max_growth × the elements of its
//! operands)` elements, and never more than `max_elems` (default 4096,
//! 4× and 2^20). So shape arithmetic and small tensors always fold, a
//! Transpose or Concat of weights folds, and ConstantOfShape, Expand, Tile,
//! Range or an outer-product MatMul that would turn a few numbers into a large
//! tensor stays a node: folding it would make the model bigger, not faster.
//! The output size is known before evaluating, from the declared types or, if
//! they have unknown dimensions, from inference on the constant operands; a
//! node whose output size cannot be known that way is folded only if its op
//! has a data-dependent output shape (NonZero), and then checked after.
//!
//! DequantizeLinear is not folded by default ([`FoldPolicy::fold_dequantize`]):
//! in a QDQ model, `DequantizeLinear(int8 weight, scale, zero point)` is how
//! a quantized weight is written, and the quantized kernels that later stages
//! select need that form (folding it would also store the weight as f32, four
//! times the bytes). onnxruntime's constant folding skips it for the same reason.
//!
//! Deliberately not done: algebraic simplification with partly constant
//! operands (`x * 1`, `x + 0`; the e-graph's job); folding a node whose
//! evaluation fails (it stays, and the error surfaces, with the node's
//! provenance, when the graph runs); removing the operands that folding
//! leaves unused ([`crate::patch::compact`] drops unused constants, and
//! [`crate::dce`] the nodes).
//!
//! Requires: a graph that verifies. Establishes: no node has only constant
//! operands unless the size policy or its evaluation stopped it; the folded
//! values keep their ids, names and graph-output positions, and their
//! declared types become their constants' (static) types. A constant that
//! contradicts its value's declared type (dtype, rank, or a known dimension;
//! `?` dimensions match anything) is an error naming the node.

use crate::error::{PassError, Result};
use crate::patch::Editor;
use kiln_ir::infer::infer_op;
use kiln_ir::interp::eval_op;
use kiln_ir::{Graph, Node, Op, Tensor, TensorType};

/// The pass's name, in errors and reports.
pub const PASS: &str = "const_fold";

/// How large a folded value may be (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoldPolicy {
    /// Outputs of at most this many elements (all outputs together) always fold.
    pub small_elems: usize,
    /// Larger outputs fold if they hold at most this many times the
    /// elements of the node's operands...
    pub max_growth: usize,
    /// ...and never more than this many elements.
    pub max_elems: usize,
    /// Fold DequantizeLinear of constants (off by default: it would turn
    /// quantized weights into f32 ones; see the module documentation).
    pub fold_dequantize: bool,
}

impl Default for FoldPolicy {
    fn default() -> FoldPolicy {
        FoldPolicy {
            small_elems: 4096,
            max_growth: 4,
            max_elems: 1 << 20,
            fold_dequantize: false,
        }
    }
}

impl FoldPolicy {
    /// The most output elements a node with `in_elems` operand elements may fold to.
    pub fn limit(&self, in_elems: usize) -> usize {
        self.small_elems
            .max(in_elems.saturating_mul(self.max_growth))
            .min(self.max_elems)
    }
}

/// Folds with the default [`FoldPolicy`]. Returns the number of nodes folded.
pub fn const_fold(g: &mut Graph) -> Result<usize> {
    const_fold_with(g, &FoldPolicy::default())
}

/// Folds every foldable node within `policy`. Returns the number of nodes folded.
pub fn const_fold_with(g: &mut Graph, policy: &FoldPolicy) -> Result<usize> {
    let mut ed = Editor::new(g, PASS);
    for i in 0..ed.node_count() {
        if let Some(values) = fold_value(&ed, i, policy)? {
            ed.fold_node(i, values)?;
        }
    }
    ed.finish()
}

/// Node `i`'s output values, if it folds.
fn fold_value(ed: &Editor, i: usize, policy: &FoldPolicy) -> Result<Option<Vec<Tensor>>> {
    let node = ed.node(i);
    let inputs = ed.inputs(i);
    if let (Op::Shape | Op::Size, [Some(x)]) = (node.op, inputs.as_slice()) {
        if let Some(dims) = ed.ty(*x).shape.fixed() {
            return shape_value(node, &dims).map(|t| Some(vec![t]));
        }
    }
    if node.op == Op::DequantizeLinear && !policy.fold_dequantize {
        return Ok(None);
    }
    let mut args = Vec::with_capacity(inputs.len());
    let mut in_elems = 0usize;
    for o in &inputs {
        match o {
            None => args.push(None),
            Some(v) => match ed.konst(*v) {
                Some(t) => {
                    in_elems = in_elems.saturating_add(t.numel());
                    args.push(Some(t));
                }
                None => return Ok(None),
            },
        }
    }
    let limit = policy.limit(in_elems);
    match output_elems(ed, node, &inputs) {
        Some(n) if n > limit => return Ok(None),
        Some(_) => {}
        None if node.op.has_data_dependent_shape() => {}
        None => return Ok(None),
    }
    let Ok(outs) = eval_op(node.op, &node.attrs, &args, node.outputs.len()) else {
        return Ok(None);
    };
    if outs.len() != node.outputs.len() {
        return Err(PassError::node(
            PASS,
            node,
            format!(
                "evaluates to {} outputs but the node has {}",
                outs.len(),
                node.outputs.len()
            ),
        ));
    }
    let total = outs
        .iter()
        .try_fold(0usize, |a, t| a.checked_add(t.numel()));
    Ok(total.is_some_and(|n| n <= limit).then_some(outs))
}

/// Elements of all of the node's outputs together, if static: from the
/// declared types, or else from inference on the (constant) operands.
fn output_elems(ed: &Editor, node: &Node, inputs: &[Option<kiln_ir::ValueId>]) -> Option<usize> {
    fn total<'a>(mut tys: impl Iterator<Item = &'a TensorType>) -> Option<usize> {
        tys.try_fold(0usize, |a, t| a.checked_add(t.shape.numel()?))
    }
    if let Some(n) = total(node.outputs.iter().map(|&v| ed.ty(v))) {
        return Some(n);
    }
    let tys = infer_op(node.op, &node.attrs, &ed.operands(inputs), node.outputs.len()).ok()?;
    total(tys.iter())
}

/// `Shape(x)` (with ONNX's `start` and `end`: negative counts from the back,
/// both clamp to `[0, rank]`) or `Size(x)` of a static shape.
fn shape_value(node: &Node, dims: &[usize]) -> Result<Tensor> {
    let err = |e: kiln_ir::Error| PassError::node(PASS, node, e.to_string());
    let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    if node.op == Op::Size {
        let n = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(usize::MAX);
        return Ok(Tensor::scalar(to_i64(n)));
    }
    let r = to_i64(dims.len());
    let clamp = |a: i64| (if a < 0 { a.saturating_add(r) } else { a }).clamp(0, r) as usize;
    let s = clamp(node.attrs.int_or("start", 0).map_err(err)?);
    let e = clamp(node.attrs.int_or("end", r).map_err(err)?).max(s);
    let v: Vec<i64> = dims[s..e].iter().map(|&d| to_i64(d)).collect();
    Tensor::from_vec(vec![v.len()], v).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn folds_a_chain_of_constant_nodes_bit_exactly() {
        let src = r#"
graph @g {
  in %0 "x": f32[2,3]
  const %1: f32[3] = [1.5, -2, 0.25]
  const %2: f32[3] = [3, 4, 5]
  %3: f32[3] = Mul(%1, %2)
  %4: f32[3] = Exp(%3)
  %5 "y": f32[2,3] = Add(%0, %4)
  out %5, %4
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(const_fold(&mut h).unwrap(), 2);
        kiln_ir::verify::verify(&h).unwrap();
        assert_eq!(h.nodes.len(), 1);
        assert_eq!(h.nodes[0].op, Op::Add);
        // the folded graph output keeps its place; the unused operands are gone
        assert_eq!(h.consts.len(), 1);
        assert!(h.consts.contains_key(&h.outputs[1]));
        assert_same_outputs(&g, &h);
    }

    #[test]
    fn folds_shape_of_a_static_value_and_the_arithmetic_on_it() {
        // BERT's pattern: Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))
        let src = r#"
graph @g {
  in %0 "x": f32[2,3,4]
  const %1: i64[] = 0
  const %2: i64[1] = [0]
  const %3: i64[1] = [-1]
  %4: i64[3] = Shape(%0)
  %5: i64[] = Gather[axis=0](%4, %1)
  %6: i64[1] = Unsqueeze(%5, %2)
  %7: i64[2] = Concat[axis=0](%6, %3)
  %8: f32[2,?Reshape] = Reshape(%0, %7)
  %9: i64[] = Size(%0)
  %10: i64[2] = Shape[start=-2](%0)
  out %8, %9, %10
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(const_fold(&mut h).unwrap(), 6);
        kiln_ir::verify::verify(&h).unwrap();
        assert_eq!(h.nodes.len(), 1, "{h}");
        let text = h.to_string();
        assert!(text.contains("= [2, -1]"), "{text}");
        assert!(text.contains("i64[] = 24"), "{text}");
        assert!(text.contains("i64[2] = [3, 4]"), "{text}");
        assert_same_outputs(&g, &h);
    }

    #[test]
    fn fills_in_unknown_dimensions_of_folded_values() {
        let src = r#"
graph @g {
  const %0: i64[2] = [2, 3]
  %1: f32[?ConstantOfShape,3] = ConstantOfShape[value=tensor<f32[1]> [7.0]](%0)
  out %1
}"#;
        let mut h = parse(src);
        const_fold(&mut h).unwrap();
        assert_eq!(h.ty(h.outputs[0]).to_string(), "f32[2,3]");
        kiln_ir::verify::verify_types(&h).unwrap();
    }

    #[test]
    fn a_value_that_contradicts_its_declared_type_is_an_error_naming_the_node() {
        let src = r#"
graph @g {
  const %0: f32[2] = [1, 2]
  %1: f32[3] = Neg(%0) @bad_neg
  out %1
}"#;
        let mut h = parse(src);
        let before = h.clone();
        let e = const_fold(&mut h).unwrap_err().to_string();
        assert!(e.contains("const_fold: node `bad_neg` (Neg)"), "{e}");
        assert!(e.contains("declared f32[3] but evaluates to f32[2]"), "{e}");
        assert_eq!(h, before, "a failed pass leaves the graph as it was");
    }

    #[test]
    fn the_size_policy_keeps_large_generators_as_nodes() {
        let src = r#"
graph @g {
  const %0: i64[2] = [100, 100]
  const %1: i64[2] = [2, 2]
  const %2: f32[1] = [1]
  %3: f32[100,100] = ConstantOfShape(%0)
  %4: f32[2,2] = ConstantOfShape(%1)
  %5: f32[100,100] = Expand(%2, %0)
  out %3, %4, %5
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(
            const_fold(&mut h).unwrap(),
            1,
            "only the small ConstantOfShape folds"
        );
        assert_eq!(h.nodes.len(), 2);
        assert_same_outputs(&g, &h);

        let tight = FoldPolicy {
            small_elems: 2,
            max_growth: 1,
            max_elems: 10,
            ..FoldPolicy::default()
        };
        let mut h = g.clone();
        assert_eq!(const_fold_with(&mut h, &tight).unwrap(), 0);
        let loose = FoldPolicy {
            small_elems: 1 << 20,
            ..FoldPolicy::default()
        };
        let mut h = g.clone();
        assert_eq!(const_fold_with(&mut h, &loose).unwrap(), 3);
        assert_same_outputs(&g, &h);
    }

    #[test]
    fn quantized_weights_stay_quantized_unless_asked() {
        let src = r#"
graph @g {
  in %0 "x": f32[2]
  const %1: f32[2] = [0.5, -1.25]
  const %2: f32[] = 0.25
  const %3: i8[] = 3
  %4: i8[2] = QuantizeLinear(%1, %2, %3)
  %5: f32[2] = DequantizeLinear(%4, %2, %3)
  %6: f32[2] = Mul(%0, %5)
  out %6
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(
            const_fold(&mut h).unwrap(),
            1,
            "QuantizeLinear folds, DequantizeLinear stays"
        );
        assert_eq!(
            h.nodes.iter().map(|n| n.op).collect::<Vec<_>>(),
            vec![Op::DequantizeLinear, Op::Mul]
        );
        assert!(h.to_string().contains("i8[2] = [5, -2]"), "{h}");
        assert_same_outputs(&g, &h);
        let mut h = g.clone();
        let all = FoldPolicy {
            fold_dequantize: true,
            ..FoldPolicy::default()
        };
        assert_eq!(const_fold_with(&mut h, &all).unwrap(), 2);
        assert_same_outputs(&g, &h);
    }

    #[test]
    fn growth_is_measured_against_the_operands() {
        let p = FoldPolicy::default();
        assert_eq!(p.limit(0), 4096);
        assert_eq!(p.limit(10_000), 40_000);
        assert_eq!(p.limit(usize::MAX), 1 << 20);
    }

    #[test]
    fn nodes_that_fail_to_evaluate_stay_and_multi_output_nodes_fold() {
        let src = r#"
graph @g {
  in %0 "x": f32[4]
  const %1: i32[2] = [1, 2]
  const %2: i32[2] = [0, 1]
  %3: i32[2] = Div(%1, %2) @div_by_zero
  const %4: f32[4] = [1, 2, 3, 4]
  %5: f32[1], %6: f32[3] = Split[axis=0](%4, %7)
  const %7: i64[2] = [1, 3]
  %8: f32[4], %9: bool[4] = Dropout(%4)
  %10: f32[4] = Add(%0, %8)
  out %3, %5, %6, %10
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(const_fold(&mut h).unwrap(), 2);
        assert_eq!(
            h.op_histogram().keys().copied().collect::<Vec<_>>(),
            vec![Op::Add, Op::Div]
        );
        kiln_ir::verify::verify(&h).unwrap();
        // the graph still fails where it failed before
        assert!(kiln_ir::interp::run(&h, &random_inputs(&h, 1)).is_err());
    }

    #[test]
    fn half_precision_and_integer_folds_are_exact() {
        let src = r#"
graph @g {
  in %0 "x": f16[3]
  const %1: f16[3] = [0.1, 1000, -3.5]
  const %2: f16[3] = [3, 0.001, 7]
  %3: f16[3] = Div(%1, %2)
  %4: f16[3] = Mul(%0, %3)
  const %5: i8[3] = [100, -100, 7]
  %6: i8[3] = Add(%5, %5)
  %7: f32[3] = Cast[to=1](%6)
  out %4, %7
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(const_fold(&mut h).unwrap(), 3);
        let text = h.to_string();
        assert!(
            text.contains("[-56.0, 56.0, 14.0]"),
            "wrapping i8 add: {text}"
        );
        assert_same_outputs(&g, &h);
    }
}
