//! Shape and dtype inference, re-run: every node's output types are inferred
//! again, in order, with [`kiln_ir::infer::infer_op`] (operands typed as
//! declared, with constants' values), and the declared types are tightened:
//! a `?` dimension (one inference could not know at import) that is now
//! known, fixed or symbolic, is filled in. Because nodes are visited in
//! order, a dimension learnt at one node flows to its users in the same run.
//!
//! This pays after [`crate::const_fold`]: once a Reshape's shape operand is
//! a constant, its output shape (and everything downstream) becomes static.
//!
//! Deliberately not done: changing a dimension that is already known, or a
//! dtype or rank (a conflict is an error, below); typing graph inputs or
//! constants (they are what they are); ops whose inference is unsupported
//! are left as declared.
//!
//! Requires: a graph that verifies. Establishes: every declared output type
//! agrees with inference in the sense of [`kiln_ir::verify::verify_types`],
//! with no `?` dimension left where inference knows better. A declared type
//! whose dtype, rank, or a known (fixed or named) dimension contradicts
//! inference is an error naming the node; so is an inference failure.

use crate::error::{PassError, Result};
use crate::patch::{is_unknown, Editor};
use kiln_ir::infer::infer_op;
use kiln_ir::{Graph, Shape, TensorType};

/// The pass's name, in errors and reports.
pub const PASS: &str = "reinfer";

/// Re-infers every node's output types. Returns the number of values whose
/// declared type was tightened.
pub fn reinfer(g: &mut Graph) -> Result<usize> {
    let mut ed = Editor::new(g, PASS);
    for i in 0..ed.node_count() {
        let node = ed.node(i);
        let inputs = ed.inputs(i);
        let tys = match infer_op(node.op, &node.attrs, &ed.operands(&inputs), node.outputs.len()) {
            Ok(tys) => tys,
            Err(kiln_ir::Error::Unsupported(_)) => continue,
            Err(e) => return Err(PassError::node(PASS, node, format!("inference fails: {e}"))),
        };
        if tys.len() != node.outputs.len() {
            return Err(PassError::node(
                PASS,
                node,
                format!(
                    "inference gives {} outputs, the node has {}",
                    tys.len(),
                    node.outputs.len()
                ),
            ));
        }
        let mut tighter = Vec::new();
        for (k, (&v, inferred)) in node.outputs.iter().zip(&tys).enumerate() {
            let declared = ed.ty(v);
            match tighten(declared, inferred) {
                Some(t) if t == *declared => {}
                Some(t) => tighter.push((v, t)),
                None => {
                    return Err(PassError::node(
                        PASS,
                        node,
                        format!(
                            "output {k} {v} is declared {declared}, but inference gives {inferred}"
                        ),
                    ))
                }
            }
        }
        for (v, t) in tighter {
            ed.set_type(v, t)?;
        }
    }
    ed.finish()
}

/// `declared` with its `?` dimensions taken from `inferred` where that knows
/// them; `None` if the two contradict each other.
pub fn tighten(declared: &TensorType, inferred: &TensorType) -> Option<TensorType> {
    if declared.dtype != inferred.dtype || declared.shape.rank() != inferred.shape.rank() {
        return None;
    }
    let dims = declared
        .shape
        .0
        .iter()
        .zip(&inferred.shape.0)
        .map(|(d, i)| match (is_unknown(d), is_unknown(i)) {
            _ if d == i => Some(d.clone()),
            (true, false) => Some(i.clone()),
            (_, true) => Some(d.clone()),
            (false, false) => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(TensorType {
        dtype: declared.dtype,
        shape: Shape(dims),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use kiln_ir::{DType, Dim};

    #[test]
    fn unknown_dims_are_filled_in_and_flow_downstream() {
        let src = r#"
graph @g {
  in %0 "x": f32[2,6]
  const %1: i64[2] = [3, 4]
  %2: f32[?Reshape,?Reshape] = Reshape(%0, %1)
  %3: f32[?Reshape,?Reshape] = Relu(%2)
  %4: f32[?Reshape,1] = ReduceSum[keepdims=1](%3, %5)
  const %5: i64[1] = [1]
  out %4
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(reinfer(&mut h).unwrap(), 3);
        let text = h.to_string();
        assert!(text.contains("%2: f32[3,4] = Reshape"), "{text}");
        assert!(text.contains("%3: f32[3,4] = Relu"), "{text}");
        assert!(text.contains("%4: f32[3,1] = ReduceSum"), "{text}");
        assert_eq!(reinfer(&mut h).unwrap(), 0, "a second run changes nothing");
        assert_same_outputs(&g, &h);
    }

    #[test]
    fn symbolic_dims_stay_and_unknowns_may_become_symbolic() {
        let src = r#"
graph @g {
  in %0 "x": f32[batch,4]
  %1: f32[?Relu,4] = Relu(%0)
  out %1
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(reinfer(&mut h).unwrap(), 1);
        assert_eq!(h.ty(h.outputs[0]).shape.0[0], Dim::Sym("batch".into()));
        assert_same_outputs(&g, &h);
    }

    #[test]
    fn a_conflict_with_a_known_dimension_or_dtype_is_an_error_naming_the_node() {
        let src = r#"
graph @g {
  in %0 "x": f32[2,6]
  %1: f32[2,5] = Relu(%0) @the_relu
  out %1
}"#;
        let mut h = parse(src);
        let e = reinfer(&mut h).unwrap_err().to_string();
        assert_eq!(
            e,
            "reinfer: node `the_relu` (Relu): output 0 %1 is declared f32[2,5], but inference gives f32[2,6]"
        );
        let t = |d: DType, dims: Vec<Dim>| TensorType {
            dtype: d,
            shape: Shape(dims),
        };
        let f = |n| Dim::Fixed(n);
        let u = || Dim::Sym("?X".into());
        assert!(tighten(&t(DType::F32, vec![f(2)]), &t(DType::F16, vec![f(2)])).is_none());
        assert!(tighten(&t(DType::F32, vec![f(2)]), &t(DType::F32, vec![f(2), f(1)])).is_none());
        assert_eq!(
            tighten(&t(DType::F32, vec![f(2)]), &t(DType::F32, vec![u()])),
            Some(t(DType::F32, vec![f(2)]))
        );
        assert!(tighten(
            &t(DType::F32, vec![Dim::Sym("n".into())]),
            &t(DType::F32, vec![f(2)])
        )
        .is_none());
    }
}
