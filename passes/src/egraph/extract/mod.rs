//! Extraction: choosing one e-node per needed e-class, and turning the
//! choice back into a [`Graph`].
//!
//! Requires: a rebuilt e-graph (canonical classes) and a cost per e-node.
//! Establishes: [`Choice`], one node per class reachable from the roots,
//! acyclic; [`to_graph`] gives a typed graph that verifies, whose nodes carry
//! the provenance name of the original node whose class they compute, or
//! else `rule_N` for a node a rule created (or `Op_N`).
//!
//! Two extractors: [`greedy`] (bottom-up, each class's cheapest tree; shared
//! subexpressions are counted once per use, so it may over-count them) and
//! [`ilp`] (one binary per e-node, shared subexpressions counted once, cycles
//! excluded, under a time limit after which it returns the greedy answer).

pub mod greedy;
pub mod ilp;

use super::analysis::KEGraph;
use super::lang::KNode;
use crate::error::{PassError, Result};
use egg::{Id, Language, Symbol};
use kiln_ir::{Graph, ValueId};
use std::collections::HashMap;

const PASS: &str = "egraph-extract";

/// The cost of one e-node (in its class), not counting its operands.
pub type NodeCost<'a> = dyn Fn(&KEGraph, Id, &KNode) -> f64 + 'a;

/// One chosen e-node per class (canonical ids; the nodes' children are canonical).
#[derive(Clone, Debug, Default)]
pub struct Choice {
    pub nodes: HashMap<Id, KNode>,
}

impl Choice {
    /// The classes reachable from `roots` through the chosen nodes, each once.
    pub fn reachable(&self, eg: &KEGraph, roots: &[Id]) -> Vec<Id> {
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
        let mut out = Vec::new();
        while let Some(c) = stack.pop() {
            if !seen.insert(c) {
                continue;
            }
            out.push(c);
            if let Some(n) = self.nodes.get(&c) {
                stack.extend(n.children().iter().map(|&k| eg.find(k)));
            }
        }
        out
    }

    /// Total cost of the DAG reachable from `roots` (each class counted once).
    pub fn dag_cost(&self, eg: &KEGraph, roots: &[Id], cost: &NodeCost) -> f64 {
        self.reachable(eg, roots)
            .into_iter()
            .filter_map(|c| self.nodes.get(&c).map(|n| cost(eg, c, n)))
            .sum()
    }
}

/// Where names come from when a choice becomes a graph.
#[derive(Default)]
pub struct Naming {
    /// Class → provenance name of the original node that computed it.
    pub class_node: HashMap<Id, String>,
    /// Class → source name of the original value it held.
    pub class_value: HashMap<Id, String>,
    /// Canonical node → the rule that created it.
    pub origin: HashMap<KNode, Symbol>,
}

impl Naming {
    /// `origin` with every node's children canonicalised in `eg`.
    pub fn canonical_origins(eg: &KEGraph) -> HashMap<KNode, Symbol> {
        eg.analysis
            .origin
            .iter()
            .map(|(n, r)| (n.clone().map_children(|c| eg.find(c)), *r))
            .collect()
    }
}

/// The extracted graph and where each class went.
pub struct Extracted {
    pub graph: Graph,
    /// Class → index in `graph.nodes` of the node that computes it (op classes only).
    pub class_node: HashMap<Id, usize>,
    /// Per node of `graph.nodes`: the rule that created its e-node, if any.
    pub node_rule: Vec<Option<Symbol>>,
    /// Per node of `graph.nodes`: its class.
    pub node_class: Vec<Id>,
}

/// Builds the graph that computes `roots` with the chosen nodes. `template`
/// gives the graph's name and its inputs (names and types, in order).
pub fn to_graph(
    eg: &KEGraph,
    choice: &Choice,
    roots: &[Id],
    template: &Graph,
    naming: &Naming,
) -> Result<Extracted> {
    let mut g = Graph::new(template.name.clone());
    let mut input_vals = Vec::with_capacity(template.inputs.len());
    for &v in &template.inputs {
        let info = template.value(v);
        let id = g.add_value(info.name.clone(), info.ty.clone());
        g.inputs.push(id);
        input_vals.push(id);
    }
    let mut vals: HashMap<Id, Vec<ValueId>> = HashMap::new();
    let mut const_vals: HashMap<u32, ValueId> = HashMap::new();
    let mut class_node = HashMap::new();
    let mut node_rule = Vec::new();
    let mut node_class = Vec::new();
    let mut rule_counter: HashMap<String, usize> = HashMap::new();
    let mut on_stack = std::collections::HashSet::new();
    let mut stack: Vec<(Id, bool)> = roots.iter().rev().map(|&r| (eg.find(r), false)).collect();
    while let Some((c, expanded)) = stack.pop() {
        if vals.contains_key(&c) {
            continue;
        }
        let node = choice
            .nodes
            .get(&c)
            .ok_or_else(|| PassError::graph(PASS, format!("no node chosen for class {c}")))?;
        if !expanded {
            if !on_stack.insert(c) {
                return Err(PassError::graph(
                    PASS,
                    format!("the choice has a cycle through class {c}"),
                ));
            }
            stack.push((c, true));
            for &k in node.children().iter().rev() {
                let k = eg.find(k);
                if !vals.contains_key(&k) {
                    stack.push((k, false));
                }
            }
            continue;
        }
        on_stack.remove(&c);
        let data = &eg[c].data;
        let out: Vec<ValueId> = match node {
            KNode::Input(i) => vec![*input_vals
                .get(*i as usize)
                .ok_or_else(|| PassError::graph(PASS, format!("input {i} does not exist")))?],
            KNode::Const(i) => {
                let v = match const_vals.get(i) {
                    Some(&v) => v,
                    None => {
                        let t = eg.analysis.consts.get(*i as usize).ok_or_else(|| {
                            PassError::graph(PASS, format!("constant {i} does not exist"))
                        })?;
                        let v =
                            g.add_const(naming.class_value.get(&c).cloned(), t.as_ref().clone());
                        const_vals.insert(*i, v);
                        v
                    }
                };
                vec![v]
            }
            KNode::Absent => vec![],
            KNode::Proj { index, arg } => {
                let a = eg.find(arg[0]);
                let v = vals
                    .get(&a)
                    .and_then(|vs| vs.get(*index as usize))
                    .copied()
                    .ok_or_else(|| {
                        PassError::graph(
                            PASS,
                            format!("projection {index} of class {a}, which has no such output"),
                        )
                    })?;
                vec![v]
            }
            KNode::Op(o) => {
                let mut inputs = Vec::with_capacity(o.args.len());
                for &k in o.args.iter() {
                    let k = eg.find(k);
                    let vs = vals
                        .get(&k)
                        .ok_or_else(|| PassError::graph(PASS, format!("class {k} not built")))?;
                    match vs.as_slice() {
                        [] => inputs.push(None),
                        [v] => inputs.push(Some(*v)),
                        _ => {
                            return Err(PassError::graph(
                                PASS,
                                format!(
                                    "{} reads multi-output class {k} without a projection",
                                    o.op
                                ),
                            ))
                        }
                    }
                }
                let canon = node.clone().map_children(|k| eg.find(k));
                let rule = naming.origin.get(&canon).copied();
                let name = match naming.class_node.get(&c) {
                    Some(n) => n.clone(),
                    None => {
                        let base = rule
                            .map(|r| r.to_string())
                            .unwrap_or_else(|| o.op.name().to_string());
                        let k = rule_counter.entry(base.clone()).or_insert(0);
                        *k += 1;
                        format!("{base}_{k}")
                    }
                };
                let outs: Vec<(Option<String>, kiln_ir::TensorType)> = data
                    .types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        (
                            if i == 0 {
                                naming.class_value.get(&c).cloned()
                            } else {
                                None
                            },
                            t.clone(),
                        )
                    })
                    .collect();
                if outs.len() != o.nout as usize {
                    return Err(PassError::graph(
                        PASS,
                        format!(
                            "{} in class {c}: {} types for {} outputs",
                            o.op,
                            outs.len(),
                            o.nout
                        ),
                    ));
                }
                let attrs = o.attrs.attrs().clone();
                let vs = g.add_node(name, o.op, attrs, inputs, outs);
                class_node.insert(c, g.nodes.len() - 1);
                node_rule.push(rule);
                node_class.push(c);
                vs
            }
        };
        vals.insert(c, out);
    }
    for &r in roots {
        let r = eg.find(r);
        match vals.get(&r).map(|v| v.as_slice()) {
            Some([v]) => g.outputs.push(*v),
            _ => {
                return Err(PassError::graph(
                    PASS,
                    format!("output class {r} is not a single value"),
                ))
            }
        }
    }
    kiln_ir::verify::verify(&g).map_err(|e| PassError::Graph {
        pass: PASS,
        source: e,
    })?;
    Ok(Extracted {
        graph: g,
        class_node,
        node_rule,
        node_class,
    })
}
