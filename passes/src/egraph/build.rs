//! Graph → e-graph.
//!
//! Requires: a graph that satisfies [`kiln_ir::verify`]. Establishes: an
//! e-graph with one class per graph value ([`KNode::Input`] per input,
//! [`KNode::Const`] per constant, one op node per graph node; a multi-output
//! node's values are [`KNode::Proj`] classes of it; omitted optional operands
//! are the [`KNode::Absent`] class), and, per original node, its provenance
//! name and the classes of its outputs. Trailing outputs that nothing uses
//! are dropped from nodes whose output count does not change their meaning
//! (every op but Split). Each class's inferred type is checked against the
//! graph's declared type.

use super::analysis::{types_compatible, KAnalysis, KEGraph};
use super::lang::{AttrKey, KNode};
use crate::error::{PassError, Result};
use egg::Id;
use kiln_ir::{Graph, Op, ValueId};
use std::collections::HashMap;

const PASS: &str = "egraph-build";

/// The e-graph of a graph, and where each original value and node went.
pub struct Built {
    pub egraph: KEGraph,
    /// The class of each graph output, in order.
    pub outputs: Vec<Id>,
    /// The class of each original value (inputs, constants, used node outputs).
    pub value_class: HashMap<ValueId, Id>,
    /// Per original node (in graph order): the class of each of its kept outputs.
    pub node_classes: Vec<Vec<Id>>,
    /// Per original node: the class of its op e-node (for a multi-output
    /// node, the class its projections read).
    pub node_op_class: Vec<Id>,
}

/// Builds the e-graph of `g` with `analysis` (whose input types are set here).
pub fn build(g: &Graph, mut analysis: KAnalysis) -> Result<Built> {
    analysis.input_types = g.inputs.iter().map(|&v| g.ty(v).clone()).collect();
    let mut eg = KEGraph::new(analysis);
    let mut value_class: HashMap<ValueId, Id> = HashMap::new();
    for (i, &v) in g.inputs.iter().enumerate() {
        value_class.insert(v, eg.add(KNode::Input(i as u32)));
    }
    for (&v, t) in &g.consts {
        let i = eg.analysis.intern_const(t.clone());
        value_class.insert(v, eg.add(KNode::Const(i)));
    }
    let mut used = vec![false; g.values.len()];
    for n in &g.nodes {
        for v in n.inputs.iter().flatten() {
            if let Some(u) = used.get_mut(v.index()) {
                *u = true;
            }
        }
    }
    for v in &g.outputs {
        if let Some(u) = used.get_mut(v.index()) {
            *u = true;
        }
    }
    let absent = eg.add(KNode::Absent);
    let mut node_classes = Vec::with_capacity(g.nodes.len());
    let mut node_op_class = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let mut args = Vec::with_capacity(n.inputs.len());
        for o in &n.inputs {
            match o {
                None => args.push(absent),
                Some(v) => match value_class.get(v) {
                    Some(&c) => args.push(c),
                    None => {
                        return Err(PassError::node(
                            PASS,
                            n,
                            format!("operand {v} is not defined before the node"),
                        ))
                    }
                },
            }
        }
        let min_out = kiln_ir::verify::arity(n.op).min_outputs.max(1);
        let nout = if n.op == Op::Split {
            n.outputs.len()
        } else {
            let last_used = n
                .outputs
                .iter()
                .rposition(|v| used.get(v.index()).copied().unwrap_or(true));
            last_used
                .map_or(min_out, |i| (i + 1).max(min_out))
                .min(n.outputs.len())
        };
        let nout8 = u8::try_from(nout).map_err(|_| {
            PassError::node(PASS, n, format!("{nout} outputs (the e-graph allows 255)"))
        })?;
        let id = eg.add(KNode::op_n(
            n.op,
            nout8,
            AttrKey::new(n.attrs.clone()),
            args,
        ));
        let declared: Vec<_> = n.outputs[..nout].iter().map(|&v| g.ty(v).clone()).collect();
        let inferred = eg[id].data.types.clone();
        if !types_compatible(&declared, &inferred) {
            let show = |t: &[kiln_ir::TensorType]| {
                t.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(PassError::node(
                PASS,
                n,
                format!(
                    "declared types ({}) but inference gives ({})",
                    show(&declared),
                    show(&inferred)
                ),
            ));
        }
        let classes: Vec<Id> = if nout == 1 {
            vec![id]
        } else {
            (0..nout)
                .map(|i| eg.add(KNode::proj(i as u32, id)))
                .collect()
        };
        for (v, &c) in n.outputs.iter().zip(&classes) {
            value_class.insert(*v, c);
        }
        node_classes.push(classes);
        node_op_class.push(id);
    }
    eg.rebuild();
    if let Some(e) = eg.analysis.errors.first() {
        return Err(PassError::graph(PASS, e.clone()));
    }
    let mut outputs = Vec::with_capacity(g.outputs.len());
    for v in &g.outputs {
        match value_class.get(v) {
            Some(&c) => outputs.push(eg.find(c)),
            None => {
                return Err(PassError::graph(
                    PASS,
                    format!("graph output {v} is not defined"),
                ))
            }
        }
    }
    for c in value_class.values_mut() {
        *c = eg.find(*c);
    }
    for c in node_op_class.iter_mut() {
        *c = eg.find(*c);
    }
    for cs in &mut node_classes {
        for c in cs.iter_mut() {
            *c = eg.find(*c);
        }
    }
    Ok(Built {
        egraph: eg,
        outputs,
        value_class,
        node_classes,
        node_op_class,
    })
}
