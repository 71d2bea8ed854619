//! The optimizer driver: phases of rules under budgets, then extraction.
//!
//! Requires: a graph that satisfies [`kiln_ir::verify`]. Establishes, via
//! [`optimize`]: an equivalent graph (every rewrite admitted by type, every
//! rule proven on examples by the soundness harness) that verifies, chosen
//! by the target's cost model, and a [`Report`].
//!
//! Each enabled phase (algebra → fusion → precision) runs its own rule
//! table in an egg `Runner` on the same e-graph, under its own iteration,
//! node and time [`Limits`]; later phases see what earlier ones found.
//! Then one extraction (greedy, or ILP with a greedy fallback) by
//! [`enode_cost`], the roofline [`crate::cost::op_cost`] of each e-node.

use super::analysis::{KAnalysis, KEGraph, PrecisionPolicy};
use super::build::build;
use super::extract::{greedy::greedy, ilp::ilp, to_graph, Naming};
use super::lang::KNode;
use super::report::{dump_egraph, explain, PhaseReport, Report, StopReason};
use crate::cost::{self, Coefficients};
use crate::error::{PassError, Result};
use crate::rules::Phase;
use egg::{Id, Runner};
use kiln_ir::{Dim, Graph, TargetInfo, TensorType};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PASS: &str = "egraph";

/// The size a symbolic dimension is costed at.
pub const SYMBOLIC_DIM: usize = 32;

/// One phase's budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub iterations: usize,
    pub nodes: usize,
    pub time: Duration,
}

/// Which extractor picks the program.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Extractor {
    Greedy,
    /// ILP through microlp, falling back to greedy after `time_limit`.
    Ilp {
        time_limit: Duration,
    },
}

/// What [`optimize`] does.
#[derive(Clone, Debug)]
pub struct OptimizeOptions {
    pub target: TargetInfo,
    pub coefficients: Coefficients,
    /// The phases to run, in order (normally [`Phase::ALL`]).
    pub phases: Vec<Phase>,
    pub algebra: Limits,
    pub fusion: Limits,
    pub precision: Limits,
    pub extractor: Extractor,
    pub precision_policy: PrecisionPolicy,
    /// Keep a text dump of the saturated e-graph in [`Report::egraph`]
    /// (for `kiln dump --stage egraph`; costs time on big graphs).
    pub dump_egraph: bool,
}

impl OptimizeOptions {
    /// Default budgets for `target`: chosen so that a 12-layer BERT-base
    /// graph optimizes in well under 2 s (release build, 2 cores).
    pub fn new(target: TargetInfo) -> OptimizeOptions {
        OptimizeOptions {
            target,
            coefficients: Coefficients::default(),
            phases: Phase::ALL.to_vec(),
            algebra: Limits {
                iterations: 8,
                nodes: 60_000,
                time: Duration::from_millis(400),
            },
            fusion: Limits {
                iterations: 16,
                nodes: 120_000,
                time: Duration::from_millis(700),
            },
            precision: Limits {
                iterations: 4,
                nodes: 160_000,
                time: Duration::from_millis(300),
            },
            extractor: Extractor::Greedy,
            precision_policy: PrecisionPolicy::F32,
            dump_egraph: false,
        }
    }

    pub fn limits(&self, p: Phase) -> Limits {
        match p {
            Phase::Algebra => self.algebra,
            Phase::Fusion => self.fusion,
            Phase::Precision => self.precision,
        }
    }
}

/// `ty` with symbolic dimensions replaced by [`SYMBOLIC_DIM`].
fn concrete(ty: &TensorType) -> TensorType {
    if ty.shape.is_fixed() {
        return ty.clone();
    }
    let dims = ty
        .shape
        .0
        .iter()
        .map(|d| Dim::Fixed(d.fixed().unwrap_or(SYMBOLIC_DIM)))
        .collect();
    TensorType {
        dtype: ty.dtype,
        shape: kiln_ir::Shape(dims),
    }
}

/// The roofline cost of one e-node in class `class` (its operands' cost not
/// included): 0 for inputs, constants, projections and omitted operands.
pub fn enode_cost(eg: &KEGraph, class: Id, n: &KNode, t: &TargetInfo, k: &Coefficients) -> f64 {
    let KNode::Op(o) = n else { return 0.0 };
    let ins: Vec<TensorType> = o
        .args
        .iter()
        .filter_map(|&a| eg[a].data.ty())
        .map(concrete)
        .collect();
    let outs: Vec<TensorType> = eg[class].data.types.iter().map(concrete).collect();
    let ins: Vec<&TensorType> = ins.iter().collect();
    let outs: Vec<&TensorType> = outs.iter().collect();
    match cost::op_cost(o.op, o.attrs.attrs(), &ins, &outs, t, k) {
        Some(c) => c.seconds,
        // cannot happen with concrete shapes; one launch if it does
        None => t.launch_overhead,
    }
}

/// Runs the phases on `g` and extracts the cheapest program found.
pub fn optimize(g: &Graph, opts: &OptimizeOptions) -> Result<(Graph, Report)> {
    let start = Instant::now();
    let mut analysis = KAnalysis::new(vec![]);
    analysis.precision = Some(opts.precision_policy);
    let built = build(g, analysis)?;
    let mut eg = built.egraph;
    let mut phases = Vec::new();
    let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
    for &phase in &opts.phases {
        let t0 = Instant::now();
        let rules = phase.rules();
        let mut rewrites = Vec::with_capacity(rules.len());
        for r in &rules {
            rewrites.push(r.rewrite().map_err(|e| PassError::graph(PASS, e))?);
        }
        let lim = opts.limits(phase);
        let (stop, iterations);
        if rewrites.is_empty() {
            stop = StopReason::Saturated;
            iterations = 0;
        } else {
            let runner = Runner::default()
                .with_egraph(eg)
                .with_iter_limit(lim.iterations)
                .with_node_limit(lim.nodes)
                .with_time_limit(lim.time)
                .run(&rewrites);
            stop = StopReason::from_egg(runner.stop_reason.as_ref());
            iterations = runner.iterations.len();
            eg = runner.egraph;
        }
        if let Some(e) = eg.analysis.errors.first() {
            return Err(PassError::graph(
                PASS,
                format!("phase {}: {e}", phase.name()),
            ));
        }
        phases.push(PhaseReport {
            name: phase.name().to_string(),
            stop_reason: stop,
            iterations,
            egraph_nodes: eg.total_number_of_nodes(),
            egraph_classes: eg.number_of_classes(),
            ms: t0.elapsed().as_secs_f64() * 1e3,
        });
    }
    let egraph_dump = opts.dump_egraph.then(|| dump_egraph(&eg));
    for (r, n) in &eg.analysis.rejected {
        rejected.insert(r.to_string(), *n);
    }
    // extraction
    let t0 = Instant::now();
    let (target, coeffs) = (&opts.target, &opts.coefficients);
    let cost = |eg: &KEGraph, c: Id, n: &KNode| enode_cost(eg, c, n, target, coeffs);
    let roots: Vec<Id> = built.outputs.iter().map(|&r| eg.find(r)).collect();
    let (gchoice, _) = greedy(&eg, &cost);
    let (choice, extractor_note) = match opts.extractor {
        Extractor::Greedy => (gchoice, "greedy".to_string()),
        Extractor::Ilp { time_limit } => {
            let (c, out) = ilp(&eg, &roots, &cost, &gchoice, time_limit);
            let note = if out.fell_back {
                format!(
                    "ilp fell back to greedy: {} ({} variables)",
                    out.note, out.variables
                )
            } else {
                format!(
                    "ilp: {} ({} variables, {:.1} ms)",
                    out.note, out.variables, out.ms
                )
            };
            (c, note)
        }
    };
    let mut naming = Naming {
        origin: Naming::canonical_origins(&eg),
        ..Naming::default()
    };
    for (i, n) in g.nodes.iter().enumerate() {
        let mut classes = built.node_classes[i].clone();
        classes.push(built.node_op_class[i]);
        for c in classes {
            naming
                .class_node
                .entry(eg.find(c))
                .or_insert_with(|| n.name.clone());
        }
    }
    // graph outputs keep their names: callers look results up by them
    for &o in &g.outputs {
        if let (Some(c), Some(name)) = (built.value_class.get(&o), &g.values[o.index()].name) {
            naming.class_value.entry(eg.find(*c)).or_insert_with(|| name.clone());
        }
    }
    for v in 0..g.values.len() {
        let vid = kiln_ir::ValueId(v as u32);
        if let (Some(c), Some(name)) = (built.value_class.get(&vid), &g.values[v].name) {
            naming
                .class_value
                .entry(eg.find(*c))
                .or_insert_with(|| name.clone());
        }
    }
    let ex = to_graph(&eg, &choice, &roots, g, &naming)?;
    let extract_ms = t0.elapsed().as_secs_f64() * 1e3;
    let out = ex.graph.clone();
    let mut rewrites_used: BTreeMap<String, usize> = BTreeMap::new();
    for r in ex.node_rule.iter().flatten() {
        *rewrites_used.entry(r.to_string()).or_insert(0) += 1;
    }
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for n in &out.nodes {
        *ops.entry(n.op.name().to_string()).or_insert(0) += 1;
    }
    let explanations = explain(
        g,
        &built.node_classes,
        &built.node_op_class,
        &eg,
        &ex,
        &cost,
    );
    let report = Report {
        target: opts.target.name.clone(),
        phases,
        extractor: extractor_note,
        extract_ms,
        rewrites: rewrites_used,
        rejected,
        kernels: cost::kernel_count(&out),
        ops,
        cost_before: cost::graph_cost_with(g, target, coeffs).seconds,
        cost_after: cost::graph_cost_with(&out, target, coeffs).seconds,
        compile_ms: start.elapsed().as_secs_f64() * 1e3,
        explanations,
        egraph: egraph_dump,
    };
    Ok((out, report))
}
