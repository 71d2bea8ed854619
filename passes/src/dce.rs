//! Dead-node elimination: deletes every node none of whose outputs a graph
//! output depends on, then drops the constants and values left unused and
//! renumbers the rest ([`crate::patch::compact`]).
//!
//! Liveness is computed in one backward sweep over the (topologically
//! ordered) nodes: a node is live if one of its outputs is a graph output or
//! an operand of a live node. Every kiln op is pure, so a dead node can go.
//!
//! Deliberately not done: removing graph inputs, even unused ones (they are
//! the graph's interface); dropping the unused optional outputs of a live
//! node (Dropout's mask, LayerNormalization's mean): that changes what the
//! node computes, a rewrite rather than a deletion.
//!
//! Requires: a graph that verifies. Establishes: every node contributes to a
//! graph output; every constant is used by a node or is a graph output;
//! value ids are dense.

use crate::error::Result;
use crate::patch::Editor;
use kiln_ir::Graph;

/// The pass's name, in errors and reports.
pub const PASS: &str = "dce";

/// Deletes dead nodes and unused values. Returns the number of nodes deleted.
pub fn dce(g: &mut Graph) -> Result<usize> {
    let mut live = vec![false; g.values.len()];
    for v in &g.outputs {
        if let Some(l) = live.get_mut(v.index()) {
            *l = true;
        }
    }
    let mut ed = Editor::new(g, PASS);
    for i in (0..ed.node_count()).rev() {
        let node = ed.node(i);
        if node
            .outputs
            .iter()
            .any(|v| live.get(v.index()).copied().unwrap_or(false))
        {
            for v in node.inputs.iter().flatten() {
                if let Some(l) = live.get_mut(v.index()) {
                    *l = true;
                }
            }
        } else {
            ed.delete_node(i)?;
        }
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use kiln_ir::{Op, ValueId};

    #[test]
    fn dead_nodes_and_unused_values_go_and_ids_become_dense() {
        let src = r#"
graph @g {
  in %0 "x": f32[4]
  in %1 "unused": f32[2]
  const %2 "w": f32[4] = [1, 2, 3, 4]
  const %3 "dead_w": f32[4] = [5, 6, 7, 8]
  %4: f32[4] = Mul(%0, %3)
  %5: f32[4] = Exp(%4)
  %6 "y": f32[4] = Add(%0, %2)
  %7: f32[4], %8: bool[4] = Dropout(%6)
  %9 "z": f32[4] = Relu(%7)
  out %9, %2
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(dce(&mut h).unwrap(), 2);
        assert_eq!(
            h.nodes.iter().map(|n| n.op).collect::<Vec<_>>(),
            vec![Op::Add, Op::Dropout, Op::Relu]
        );
        assert_eq!(h.values.len(), 7);
        assert_eq!(
            h.inputs,
            vec![ValueId(0), ValueId(1)],
            "inputs stay, even unused ones"
        );
        assert!(!h.to_string().contains("dead_w"));
        assert!(
            h.to_string().contains("%5: bool[4]"),
            "the unused mask output stays:\n{h}"
        );
        assert_same_outputs(&g, &h);
        assert_eq!(dce(&mut h).unwrap(), 0);
    }

    #[test]
    fn outputs_that_are_inputs_or_constants_leave_nothing_live() {
        let src = r#"
graph @g {
  in %0 "x": f32[2]
  const %1 "c": f32[2] = [1, 2]
  %2: f32[2] = Add(%0, %1)
  out %0, %1, %0
}"#;
        let g = parse(src);
        let mut h = g.clone();
        assert_eq!(dce(&mut h).unwrap(), 1);
        assert!(h.nodes.is_empty());
        assert_eq!(h.values.len(), 2);
        assert_same_outputs(&g, &h);
    }
}
