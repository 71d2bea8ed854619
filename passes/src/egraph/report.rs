//! What the optimizer did: the [`Report`] (per phase budget use, rewrites in
//! the extracted program, kernel and op counts, predicted cost), its JSON
//! form, the per-node explanations behind `kiln explain`, and
//! [`dump_egraph`] (`kiln dump --stage egraph`).
//!
//! Requires: the e-graph after the phases and the extraction. Establishes
//! nothing; it only describes.

use super::analysis::KEGraph;
use super::extract::{Extracted, NodeCost};
use super::lang::KNode;
use egg::{Id, Language};
use kiln_ir::{Graph, ValueId};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Which limit stopped a phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    Saturated,
    NodeLimit,
    IterationLimit,
    TimeLimit,
    /// Anything else egg reports (a hook), with its message.
    Other(String),
}

impl StopReason {
    pub fn from_egg(r: Option<&egg::StopReason>) -> StopReason {
        match r {
            Some(egg::StopReason::Saturated) => StopReason::Saturated,
            Some(egg::StopReason::IterationLimit(_)) => StopReason::IterationLimit,
            Some(egg::StopReason::NodeLimit(_)) => StopReason::NodeLimit,
            Some(egg::StopReason::TimeLimit(_)) => StopReason::TimeLimit,
            Some(egg::StopReason::Other(s)) => StopReason::Other(s.clone()),
            None => StopReason::Other("not run".into()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            StopReason::Saturated => "saturated",
            StopReason::NodeLimit => "node_limit",
            StopReason::IterationLimit => "iteration_limit",
            StopReason::TimeLimit => "time_limit",
            StopReason::Other(s) => s,
        }
    }
}

/// One phase.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseReport {
    pub name: String,
    pub stop_reason: StopReason,
    pub iterations: usize,
    /// E-graph size after the phase.
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    pub ms: f64,
}

/// For one node of the input graph: where it went.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeExplanation {
    /// The input node's provenance name.
    pub node: String,
    pub op: String,
    /// The extracted node (kernel) that computes it, or absorbed it: its
    /// name and op. `None` when its results were not needed (folded to
    /// constants, or only feeding dead code).
    pub kernel: Option<(String, String)>,
    /// Whether the kernel computes this node's own result (rather than
    /// absorbing it as an intermediate).
    pub computes: bool,
    /// The rules that created the kernel's e-node (empty: the original node).
    pub rules: Vec<String>,
    /// Every e-node of this node's class: its text and its own cost (s).
    pub alternatives: Vec<(String, f64)>,
}

/// The optimizer's report.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub target: String,
    pub phases: Vec<PhaseReport>,
    /// Which extractor ran and what it did.
    pub extractor: String,
    pub extract_ms: f64,
    /// Rule name → nodes of the extracted program that rule created.
    pub rewrites: BTreeMap<String, usize>,
    /// Rule name → right-hand sides refused by admission control.
    pub rejected: BTreeMap<String, usize>,
    /// Nodes of the extracted program that are kernels ([`crate::cost::is_kernel`]).
    pub kernels: usize,
    /// Op name → count in the extracted program.
    pub ops: BTreeMap<String, usize>,
    /// Predicted seconds of the input and extracted graphs.
    pub cost_before: f64,
    pub cost_after: f64,
    pub compile_ms: f64,
    /// One per input node, in graph order.
    pub explanations: Vec<NodeExplanation>,
    /// The saturated e-graph as text, when [`crate::egraph::OptimizeOptions::dump_egraph`] asked for it.
    pub egraph: Option<String>,
}

/// A tiny JSON writer: strings escaped, numbers finite (non-finite → null).
struct Json(String);

impl Json {
    fn str(&mut self, s: &str) {
        self.0.push('"');
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
    }
    fn num(&mut self, x: f64) {
        if x.is_finite() {
            let _ = write!(self.0, "{x}");
        } else {
            self.0.push_str("null");
        }
    }
    fn key(&mut self, k: &str) {
        self.str(k);
        self.0.push(':');
    }
    fn map(&mut self, m: &BTreeMap<String, usize>) {
        self.0.push('{');
        for (i, (k, v)) in m.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.key(k);
            let _ = write!(self.0, "{v}");
        }
        self.0.push('}');
    }
}

impl Report {
    /// The report as JSON (with `kernels`, `ops`, `phases`, `compile_ms`, ...).
    /// `with_nodes` adds the per-node explanations.
    pub fn to_json(&self, with_nodes: bool) -> String {
        let mut j = Json(String::new());
        j.0.push('{');
        j.key("target");
        j.str(&self.target);
        j.0.push_str(",\"kernels\":");
        let _ = write!(j.0, "{}", self.kernels);
        j.0.push(',');
        j.key("ops");
        j.map(&self.ops);
        j.0.push(',');
        j.key("phases");
        j.0.push('[');
        for (i, p) in self.phases.iter().enumerate() {
            if i > 0 {
                j.0.push(',');
            }
            j.0.push('{');
            j.key("name");
            j.str(&p.name);
            j.0.push(',');
            j.key("stop_reason");
            j.str(p.stop_reason.name());
            let _ = write!(
                j.0,
                ",\"iterations\":{},\"egraph_nodes\":{},\"egraph_classes\":{},\"ms\":",
                p.iterations, p.egraph_nodes, p.egraph_classes
            );
            j.num(p.ms);
            j.0.push('}');
        }
        j.0.push_str("],");
        j.key("extractor");
        j.str(&self.extractor);
        j.0.push_str(",\"extract_ms\":");
        j.num(self.extract_ms);
        j.0.push(',');
        j.key("rewrites");
        j.map(&self.rewrites);
        j.0.push(',');
        j.key("rejected");
        j.map(&self.rejected);
        j.0.push_str(",\"cost_before_s\":");
        j.num(self.cost_before);
        j.0.push_str(",\"cost_after_s\":");
        j.num(self.cost_after);
        j.0.push_str(",\"compile_ms\":");
        j.num(self.compile_ms);
        if with_nodes {
            j.0.push_str(",\"nodes\":[");
            for (i, e) in self.explanations.iter().enumerate() {
                if i > 0 {
                    j.0.push(',');
                }
                j.0.push('{');
                j.key("node");
                j.str(&e.node);
                j.0.push(',');
                j.key("op");
                j.str(&e.op);
                j.0.push(',');
                j.key("kernel");
                match &e.kernel {
                    Some((k, op)) => {
                        j.0.push('{');
                        j.key("name");
                        j.str(k);
                        j.0.push(',');
                        j.key("op");
                        j.str(op);
                        j.0.push('}');
                    }
                    None => j.0.push_str("null"),
                }
                let _ = write!(j.0, ",\"computes\":{},\"rules\":[", e.computes);
                for (k, r) in e.rules.iter().enumerate() {
                    if k > 0 {
                        j.0.push(',');
                    }
                    j.str(r);
                }
                j.0.push_str("],\"alternatives\":[");
                for (k, (n, c)) in e.alternatives.iter().enumerate() {
                    if k > 0 {
                        j.0.push(',');
                    }
                    j.0.push('{');
                    j.key("node");
                    j.str(n);
                    j.0.push_str(",\"seconds\":");
                    j.num(*c);
                    j.0.push('}');
                }
                j.0.push_str("]}");
            }
            j.0.push(']');
        }
        j.0.push('}');
        j.0
    }

    /// The explanation for the input node named `name`.
    pub fn explain(&self, name: &str) -> Option<&NodeExplanation> {
        self.explanations.iter().find(|e| e.node == name)
    }
}

/// One e-node as text: `Op[attrs](#1, #2)`, where `#N` is e-class N.
pub fn node_text(n: &KNode) -> String {
    let kids: Vec<String> = n.children().iter().map(|c| format!("#{c}")).collect();
    if kids.is_empty() {
        n.to_string()
    } else {
        format!("{n}({})", kids.join(", "))
    }
}

/// Per input node: the kernel that computes or absorbed it, its rules and
/// the alternatives in its class.
pub(crate) fn explain(
    g: &Graph,
    node_classes: &[Vec<Id>],
    node_op_class: &[Id],
    eg: &KEGraph,
    ex: &Extracted,
    cost: &NodeCost,
) -> Vec<NodeExplanation> {
    // consumers of each value in the input graph
    let mut users: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for v in n.inputs.iter().flatten() {
            users.entry(*v).or_default().push(i);
        }
    }
    let kernel_of = |i: usize| -> Option<usize> {
        let mut cs: Vec<Id> = node_classes[i].iter().map(|&c| eg.find(c)).collect();
        cs.push(eg.find(node_op_class[i]));
        cs.iter().find_map(|c| ex.class_node.get(c).copied())
    };
    // absorbed: the first consumer (breadth-first) that has a kernel
    let absorbed_by = |i: usize| -> Option<usize> {
        let mut queue = std::collections::VecDeque::from([i]);
        let mut seen = std::collections::HashSet::from([i]);
        while let Some(j) = queue.pop_front() {
            if j != i {
                if let Some(k) = kernel_of(j) {
                    return Some(k);
                }
            }
            for v in &g.nodes[j].outputs {
                for &u in users.get(v).map(|u| u.as_slice()).unwrap_or(&[]) {
                    if seen.insert(u) {
                        queue.push_back(u);
                    }
                }
            }
        }
        None
    };
    g.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let own = kernel_of(i);
            let k = own.or_else(|| absorbed_by(i));
            let kernel = k.map(|k| {
                (
                    ex.graph.nodes[k].name.clone(),
                    ex.graph.nodes[k].op.name().to_string(),
                )
            });
            let rules = k
                .and_then(|k| ex.node_rule.get(k).copied().flatten())
                .map(|r| vec![r.to_string()])
                .unwrap_or_default();
            let c = eg.find(node_classes[i].first().copied().unwrap_or(node_op_class[i]));
            let alternatives = eg[c]
                .nodes
                .iter()
                .map(|m| (node_text(m), cost(eg, c, m)))
                .collect();
            NodeExplanation {
                node: n.name.clone(),
                op: n.op.name().to_string(),
                kernel,
                computes: own.is_some(),
                rules,
                alternatives,
            }
        })
        .collect()
}

/// A readable listing of the e-graph: one block per class (its id, types,
/// constness), one line per e-node (with the rule that created it).
pub fn dump_egraph(eg: &KEGraph) -> String {
    let origins = super::extract::Naming::canonical_origins(eg);
    let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
    ids.sort();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "; e-graph: {} classes, {} nodes, {} constants",
        eg.number_of_classes(),
        eg.total_number_of_nodes(),
        eg.analysis.consts.len()
    );
    for id in ids {
        let c = &eg[id];
        let tys: Vec<String> = c.data.types.iter().map(|t| t.to_string()).collect();
        let k = if c.data.values.is_some() {
            " const"
        } else {
            ""
        };
        let _ = writeln!(out, "#{id}: ({}){k}", tys.join(", "));
        for n in &c.nodes {
            let canon = n.clone().map_children(|k| eg.find(k));
            match origins.get(&canon) {
                Some(r) => {
                    let _ = writeln!(out, "  {}  ; {r}", node_text(n));
                }
                None => {
                    let _ = writeln!(out, "  {}", node_text(n));
                }
            }
        }
    }
    out
}
