//! Common-subexpression elimination: identical constants are merged, then
//! identical nodes.
//!
//! - Two constants are identical when their dtype, shape and bytes are (so
//!   NaNs with the same bits match, and `0.0` and `-0.0` do not). Uses of the
//!   later one (by id) move to the earlier one.
//! - Two nodes are identical when they have the same op, the same operands
//!   (after the replacements made so far, so whole duplicated chains merge in
//!   one run), the same number of outputs and bitwise-equal attributes
//!   ([`attrs_bit_eq`]: floats compare by their bits, not with `==`, so
//!   `alpha=nan` matches itself while `value=0.0` and `value=-0.0` stay
//!   apart). The later node is replaced by the earlier one's outputs.
//!
//! Every kiln op is a pure function of its operands and attributes, so
//! merging is exact. Graph outputs keep their values: a replaced node whose
//! output is a graph output leaves an `Identity` of the surviving value in
//! its place, and a duplicate constant that is a graph output stays (see
//! [`crate::patch`]).
//!
//! Deliberately not done: commutativity or any other algebra (`Add(a, b)`
//! and `Add(b, a)` stay two nodes: with NaN payloads and variadic float sums
//! operand order can matter; that is the e-graph's job); merging nodes that
//! differ only in how many optional outputs they ask for.
//!
//! Requires: a graph that verifies. Establishes: no two constants are
//! identical, unless one is a graph output, and no two nodes are identical,
//! except Identities that keep graph outputs. Values no longer used are
//! dropped ([`crate::patch::compact`]).

use crate::error::Result;
use crate::patch::Editor;
use kiln_ir::{with_data, Attr, Attrs, DType, Element, Graph, Op, Tensor, ValueId};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// The pass's name, in errors and reports.
pub const PASS: &str = "cse";

/// What makes nodes candidates for merging: op, operands, output count
/// (attributes are then compared with [`attrs_bit_eq`]).
type NodeKey = (Op, Vec<Option<ValueId>>, usize);

/// Merges identical constants and nodes. Returns the number of merges.
pub fn cse(g: &mut Graph) -> Result<usize> {
    let mut ed = Editor::new(g, PASS);
    merge_consts(&mut ed)?;
    let mut seen: HashMap<NodeKey, Vec<usize>> = HashMap::new();
    for i in 0..ed.node_count() {
        let node = ed.node(i);
        let key = (node.op, ed.inputs(i), node.outputs.len());
        let same = seen.entry(key).or_default();
        match same
            .iter()
            .find(|&&j| attrs_bit_eq(&ed.node(j).attrs, &node.attrs))
        {
            Some(&j) => {
                let survivor = ed.node(j).outputs.clone();
                ed.replace_node(i, &survivor)?;
            }
            None => same.push(i),
        }
    }
    ed.finish()
}

/// Redirects uses of each constant to the first (lowest id) identical one.
fn merge_consts(ed: &mut Editor) -> Result<()> {
    let mut buckets: HashMap<(DType, Vec<usize>, u64), Vec<ValueId>> = HashMap::new();
    let mut merges = Vec::new();
    let consts = &ed.graph().consts;
    for (&v, t) in consts {
        let same = buckets
            .entry((t.dtype(), t.shape().to_vec(), prefix_hash(t)))
            .or_default();
        match same
            .iter()
            .find(|w| consts.get(w).is_some_and(|u| u.bit_eq(t)))
        {
            Some(&w) => merges.push((v, w)),
            None => same.push(v),
        }
    }
    for (v, w) in merges {
        ed.replace_uses(v, w)?;
    }
    Ok(())
}

/// A hash of a tensor's first 64 elements' bytes: cheap, and enough to tell
/// different weights apart before comparing them in full.
fn prefix_hash(t: &Tensor) -> u64 {
    let mut bytes = Vec::new();
    with_data!(t.data(), v => v.iter().take(64).for_each(|x| x.write_le(&mut bytes)));
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Attribute equality by bits: like `==`, except that floats (alone, in
/// lists, and in tensors) compare their bit patterns, so NaN equals a NaN
/// with the same bits and `0.0 != -0.0`.
pub fn attrs_bit_eq(a: &Attrs, b: &Attrs) -> bool {
    a.0.len() == b.0.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && attr_bit_eq(va, vb))
}

fn attr_bit_eq(a: &Attr, b: &Attr) -> bool {
    match (a, b) {
        (Attr::Float(x), Attr::Float(y)) => x.to_bits() == y.to_bits(),
        (Attr::Floats(x), Attr::Floats(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        (Attr::Tensor(x), Attr::Tensor(y)) => x.bit_eq(y),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn duplicate_chains_merge_in_one_run() {
        let src = r#"
graph @g {
  in %0 "x": f32[2,3]
  %1: f32[2,3] = Relu(%0)
  %2: f32[2,3] = Relu(%0)
  %3: f32[2,3] = Exp(%1)
  %4: f32[2,3] = Exp(%2)
  %5 "y": f32[2,3] = Sub(%3, %4)
  out %5
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(cse(&mut h).unwrap(), 2);
        assert_eq!(h.nodes.len(), 3);
        assert!(h.to_string().contains("Sub(%2, %2)"), "{h}");
        assert_same_outputs(&g, &h);
        assert_eq!(cse(&mut h).unwrap(), 0);
    }

    #[test]
    fn attributes_compare_by_bits() {
        let src = r#"
graph @g {
  in %0 "x": f32[4]
  in %1 "shape": i64[2]
  %2: f32[4] = LeakyRelu[alpha=nan](%0)
  %3: f32[4] = LeakyRelu[alpha=nan](%0)
  %4: f32[4] = LeakyRelu[alpha=0.5](%0)
  %5: f32[?A,?B] = ConstantOfShape[value=tensor<f32[1]> [0.0]](%1)
  %6: f32[?A,?B] = ConstantOfShape[value=tensor<f32[1]> [-0.0]](%1)
  %7: f32[4] = Add(%2, %3)
  out %7, %4, %5, %6
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(cse(&mut h).unwrap(), 1, "only the two NaN LeakyRelus merge");
        assert_eq!(count(&h, Op::LeakyRelu), 2);
        assert_eq!(count(&h, Op::ConstantOfShape), 2, "0.0 and -0.0 differ");
        // run with a valid shape input
        for seed in 1..=2 {
            let mut ins = random_inputs(&g, seed);
            ins[1] = Tensor::from_vec(vec![2], vec![2i64, 3]).unwrap();
            let (a, b) = (
                kiln_ir::interp::run(&g, &ins).unwrap(),
                kiln_ir::interp::run(&h, &ins).unwrap(),
            );
            assert!(a.iter().zip(&b).all(|(x, y)| x.bit_eq(y)));
        }
        let f = |x: f32| Attrs::new().with("alpha", Attr::Float(x));
        assert!(attrs_bit_eq(&f(f32::NAN), &f(f32::NAN)));
        assert!(!attrs_bit_eq(&f(0.0), &f(-0.0)));
        assert!(f(0.0) == f(-0.0), "which `==` would have merged");
        assert!(!attrs_bit_eq(&f(1.0), &Attrs::new()));
        assert!(!attrs_bit_eq(
            &f(1.0),
            &Attrs::new().with("alpha", Attr::Int(1))
        ));
    }

    #[test]
    fn identical_constants_merge_and_graph_outputs_keep_their_names() {
        let src = r#"
graph @g {
  in %0 "x": f32[3]
  const %1 "a": f32[3] = [1, nan, -0.0]
  const %2 "b": f32[3] = [1, nan, -0.0]
  const %3 "c": f32[3] = [1, nan, 0.0]
  const %4 "d": i32[3] = [1, 2, 3]
  const %5 "e": i32[3] = [1, 2, 3]
  %6: f32[3] = Mul(%0, %1)
  %7: f32[3] = Mul(%0, %2)
  %8 "p": f32[3] = Add(%6, %3)
  %9 "q": f32[3] = Add(%7, %3)
  %10: i32[3] = Add(%4, %5)
  out %8, %9, %5, %10
}"#;
        let g = parse(src);
        let mut h = g.clone();
        cse(&mut h).unwrap();
        let text = h.to_string();
        // b merges into a; e is a graph output, so it stays, but Add uses d twice
        assert!(!text.contains("\"b\""), "{text}");
        assert!(text.contains("\"c\""), "{text}");
        assert!(text.contains("\"e\""), "{text}");
        assert_eq!(count(&h, Op::Mul), 1);
        assert_eq!(
            count(&h, Op::Identity),
            1,
            "q is kept as Identity(p)\n{text}"
        );
        assert!(text.contains("\"q\": f32[3] = Identity("), "{text}");
        assert_same_outputs(&g, &h);
        // a constant kept as a graph output is not merged again and again
        assert_eq!(cse(&mut h).unwrap(), 0, "{h}");
        let mut h = g.clone();
        let r = crate::simplify(&mut h).unwrap();
        assert!(r.converged && r.rounds == 2, "{r}");
    }

    #[test]
    fn duplicated_graph_outputs_converge_and_keep_their_names() {
        let src = r#"
graph @g {
  in %0 "x": f32[3]
  %1 "a": f32[3] = Relu(%0)
  %2 "b": f32[3] = Relu(%0)
  %3 "c": f32[3] = Relu(%0)
  out %3, %2, %1, %0
}"#;
        let g = parse(src);
        let mut h = g.clone();
        let r = crate::simplify(&mut h).unwrap();
        assert!(r.converged, "{r}");
        assert_eq!(count(&h, Op::Relu), 1);
        assert_eq!(count(&h, Op::Identity), 2);
        assert_same_outputs(&g, &h);
    }

    #[test]
    fn commuted_operands_and_different_output_counts_are_not_merged() {
        let src = r#"
graph @g {
  in %0 "x": f32[3]
  in %1 "y": f32[3]
  %2: f32[3] = Add(%0, %1)
  %3: f32[3] = Add(%1, %0)
  %4: f32[3] = Dropout(%0)
  %5: f32[3], %6: bool[3] = Dropout(%0)
  out %2, %3, %4, %5, %6
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(cse(&mut h).unwrap(), 0);
        assert_eq!(h, g);
    }
}
