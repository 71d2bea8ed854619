//! Precision under an accuracy budget: `--precision f32|f16|bf16|auto` and
//! `--max-rel-error E` ([`choose_precision`]).
//!
//! Requires: a graph that satisfies [`kiln_ir::verify`], whose reference
//! results the interpreter can compute on the sample inputs. Establishes: an
//! optimized graph in which some f32 products (MatMul, Conv, Attention and
//! their fused forms) run in f16 or bf16 with f32 accumulation, and a
//! [`PrecisionReport`] with the error it measured against the original
//! graph on the interpreter, and which nodes it lowered.
//!
//! # How
//!
//! 1. The algebra and fusion phases run as [`optimize`] does, in f32: the
//!    *f32 program*.
//! 2. The precision phase runs on the f32 program's e-graph with the
//!    policy's alternatives ([`crate::rules::precision`]); extraction by the
//!    target's cost model keeps an alternative only where it is cheaper
//!    (fewer bytes, a higher peak for 16-bit products), so on a target
//!    without a 16-bit path, or for small launch-bound products, f32 stays.
//! 3. The result runs on the samples next to the original graph, and the
//!    error of every output is measured ([`rel_error`]).
//! 4. `auto` only: while the error exceeds the budget, lowered nodes are
//!    pinned to f32 (they get the [`KEEP_F32`] attribute, so the rules do
//!    not lower them) and the precision phase and extraction run again. The
//!    order is each node's *local* error, largest first: the node's lowered
//!    form evaluated on its exact f32 operands against its f32 result. The
//!    number pinned grows 1, 2, 4, ... until the budget holds, then a
//!    bisection finds the fewest; every attempt is a [`Step`] of the report.
//!    If even everything pinned is over budget (the f32 rewrites alone
//!    exceed it), the f32 program is returned with `within_budget: false`.
//!
//! `f16` and `bf16` are the user's choice: they are measured and reported
//! (`within_budget` says whether E held) but not reverted. `f32` lowers
//! nothing and measures nothing (the f32 program is [`optimize`]'s result).
//!
//! # The error measure
//!
//! Per output, [`rel_error`]: the largest absolute difference divided by the
//! largest magnitude of the reference (a normwise, ∞-norm relative error),
//! the maximum over samples; elementwise relative error is meaningless for
//! results near 0. A NaN or infinity where the reference has none (or a
//! different one) is an infinite error. The default budget
//! [`DEFAULT_MAX_REL_ERROR`] is 1e-2: f16 products typically show 1e-3,
//! bf16 ones 1e-2, on BERT-class encoders.
//!
//! # Samples
//!
//! The caller's calibration inputs, or [`random_samples`]: floats uniform
//! in [-1, 1), integers 0 or 1 (valid as token ids and as masks), booleans
//! fair; every symbolic dimension bound to [`PrecisionOptions::sym_dim`].

use crate::cost;
use crate::egraph::analysis::{KAnalysis, KEGraph, PrecisionPolicy};
use crate::egraph::build::build;
use crate::egraph::extract::{greedy::greedy, ilp::ilp, to_graph, Naming};
use crate::egraph::lang::KNode;
use crate::egraph::report::{PhaseReport, Report, StopReason};
use crate::egraph::runner::{enode_cost, optimize, Extractor, OptimizeOptions};
use crate::error::{PassError, Result};
use crate::rules::precision::{eval_lowered, is_product, KEEP_F32, LOW};
use crate::rules::Phase;
use egg::{Id, Runner};
use kiln_ir::{Attr, DType, Dim, Graph, Tensor};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

const PASS: &str = "precision";

/// The default `--max-rel-error`.
pub const DEFAULT_MAX_REL_ERROR: f64 = 1e-2;

/// `--precision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
    BF16,
    Auto,
}

impl Precision {
    pub const ALL: [Precision; 4] = [
        Precision::F32,
        Precision::F16,
        Precision::BF16,
        Precision::Auto,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
            Precision::Auto => "auto",
        }
    }

    pub fn from_name(s: &str) -> Option<Precision> {
        Precision::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The e-graph policy the precision rules read.
    pub fn policy(self, max_rel_error: f64) -> PrecisionPolicy {
        match self {
            Precision::F32 => PrecisionPolicy::F32,
            Precision::F16 => PrecisionPolicy::F16,
            Precision::BF16 => PrecisionPolicy::BF16,
            Precision::Auto => PrecisionPolicy::Auto { max_rel_error },
        }
    }
}

/// What [`choose_precision`] does.
#[derive(Clone, Debug, PartialEq)]
pub struct PrecisionOptions {
    pub precision: Precision,
    /// The budget: the largest [`rel_error`] allowed on any output.
    pub max_rel_error: f64,
    /// Random sample sets to draw when the caller gives none.
    pub random_samples: usize,
    pub seed: u64,
    /// The size of every symbolic dimension in random samples.
    pub sym_dim: usize,
}

impl PrecisionOptions {
    pub fn new(precision: Precision) -> PrecisionOptions {
        PrecisionOptions {
            precision,
            max_rel_error: DEFAULT_MAX_REL_ERROR,
            random_samples: 2,
            seed: 0,
            sym_dim: 4,
        }
    }
}

/// The difference between a result and its reference.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStats {
    /// Largest `|got − want|` over finite reference elements.
    pub max_abs: f64,
    /// Largest `|want|` over finite reference elements.
    pub ref_max_abs: f64,
    /// `max_abs / ref_max_abs` (0 when both are 0; infinite on a NaN or
    /// infinity mismatch, or a shape or dtype mismatch).
    pub max_rel: f64,
}

impl ErrorStats {
    fn worst(self, o: ErrorStats) -> ErrorStats {
        ErrorStats {
            max_abs: self.max_abs.max(o.max_abs),
            ref_max_abs: self.ref_max_abs.max(o.ref_max_abs),
            max_rel: self.max_rel.max(o.max_rel),
        }
    }
}

/// The normwise relative error of `got` against the reference `want`.
pub fn rel_error(got: &Tensor, want: &Tensor) -> ErrorStats {
    let inf = ErrorStats {
        max_abs: f64::INFINITY,
        ref_max_abs: 0.0,
        max_rel: f64::INFINITY,
    };
    if got.shape() != want.shape() || got.dtype() != want.dtype() {
        return inf;
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let (mut max_abs, mut ref_max) = (0f64, 0f64);
    for (&a, &b) in g.iter().zip(&w) {
        if !b.is_finite() {
            let same = (a.is_nan() && b.is_nan()) || a == b;
            if !same {
                return inf;
            }
            continue;
        }
        let d = (a - b).abs();
        if d.is_nan() {
            return inf;
        }
        max_abs = max_abs.max(d);
        ref_max = ref_max.max(b.abs());
    }
    let max_rel = if max_abs == 0.0 {
        0.0
    } else if ref_max == 0.0 {
        f64::INFINITY
    } else {
        max_abs / ref_max
    };
    ErrorStats {
        max_abs,
        ref_max_abs: ref_max,
        max_rel,
    }
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` random input sets for `g` (see the module documentation).
pub fn random_samples(g: &Graph, n: usize, seed: u64, sym_dim: usize) -> Result<Vec<Vec<Tensor>>> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut set = Vec::with_capacity(g.inputs.len());
        for &v in &g.inputs {
            let ty = g.ty(v);
            let dims: Vec<usize> = ty
                .shape
                .0
                .iter()
                .map(|d| if let Dim::Fixed(k) = d { *k } else { sym_dim })
                .collect();
            let count: usize = dims.iter().product();
            let vals: Vec<f64> = (0..count)
                .map(|_| {
                    if ty.dtype.is_float() {
                        rng.unit() * 2.0 - 1.0
                    } else {
                        (rng.unit() < 0.5) as u8 as f64
                    }
                })
                .collect();
            let t = Tensor::from_f64s(ty.dtype, dims, &vals).map_err(|e| {
                PassError::graph(
                    PASS,
                    format!("random sample for input {}: {e}", g.display_name(v)),
                )
            })?;
            set.push(t);
        }
        out.push(set);
    }
    Ok(out)
}

/// The measured error of one graph output.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputError {
    pub name: String,
    pub max_abs_error: f64,
    pub max_rel_error: f64,
}

/// A node of the f32 program that runs in 16 bits in the result.
#[derive(Clone, Debug, PartialEq)]
pub struct LoweredNode {
    /// The node's provenance name.
    pub node: String,
    pub op: String,
    pub dtype: DType,
    /// Its local error (lowered form on exact operands vs its f32 result),
    /// when `auto` measured it.
    pub local_rel_error: Option<f64>,
}

/// One attempt of the `auto` search.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Nodes pinned to f32 in this attempt.
    pub pinned: Vec<String>,
    /// Nodes the extraction lowered.
    pub lowered: usize,
    /// The largest output error measured.
    pub max_rel_error: f64,
    pub within_budget: bool,
}

/// What [`choose_precision`] did and measured.
#[derive(Clone, Debug, PartialEq)]
pub struct PrecisionReport {
    pub precision: Precision,
    pub max_rel_error_budget: f64,
    /// Whether errors were measured (not for `f32`).
    pub measured: bool,
    /// Sample sets used, and whether they were random.
    pub samples: usize,
    pub random_samples: bool,
    /// The error of the f32 program alone (`auto` only).
    pub f32_rel_error: Option<f64>,
    /// Per output of the returned graph.
    pub outputs: Vec<OutputError>,
    /// The largest of `outputs`' errors (0 when nothing was measured).
    pub max_rel_error: f64,
    pub within_budget: bool,
    /// Nodes lowered in the returned graph.
    pub lowered: Vec<LoweredNode>,
    /// Candidates `auto` pinned to f32 to meet the budget.
    pub kept_f32: Vec<String>,
    pub steps: Vec<Step>,
    /// The optimizer's report, with the precision phase added and the
    /// counts (`kernels`, `ops`, `cost_after`) of the returned graph.
    pub optimizer: Report,
    pub ms: f64,
}

/// A tiny JSON writer.
struct Json(String);

impl Json {
    fn str(&mut self, s: &str) {
        self.0.push('"');
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
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
            let _ = write!(self.0, "{x:e}");
        } else {
            self.0.push_str("null");
        }
    }
    fn key(&mut self, k: &str) {
        if !self.0.ends_with('{') && !self.0.ends_with('[') {
            self.0.push(',');
        }
        self.str(k);
        self.0.push(':');
    }
    fn strs(&mut self, v: &[String]) {
        self.0.push('[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.str(s);
        }
        self.0.push(']');
    }
}

impl PrecisionReport {
    /// The report as JSON (infinite errors as `null`); the optimizer's own
    /// report is under `"optimizer"`.
    pub fn to_json(&self) -> String {
        let mut j = Json(String::from("{"));
        j.key("precision");
        j.str(self.precision.name());
        j.key("max_rel_error_budget");
        j.num(self.max_rel_error_budget);
        j.key("measured");
        j.0.push_str(if self.measured { "true" } else { "false" });
        j.key("samples");
        let _ = write!(j.0, "{}", self.samples);
        j.key("random_samples");
        j.0.push_str(if self.random_samples { "true" } else { "false" });
        j.key("f32_rel_error");
        match self.f32_rel_error {
            Some(e) => j.num(e),
            None => j.0.push_str("null"),
        }
        j.key("max_rel_error");
        j.num(self.max_rel_error);
        j.key("within_budget");
        j.0.push_str(if self.within_budget { "true" } else { "false" });
        j.key("outputs");
        j.0.push('[');
        for (i, o) in self.outputs.iter().enumerate() {
            if i > 0 {
                j.0.push(',');
            }
            j.0.push('{');
            j.key("name");
            j.str(&o.name);
            j.key("max_abs_error");
            j.num(o.max_abs_error);
            j.key("max_rel_error");
            j.num(o.max_rel_error);
            j.0.push('}');
        }
        j.0.push(']');
        j.key("lowered");
        j.0.push('[');
        for (i, l) in self.lowered.iter().enumerate() {
            if i > 0 {
                j.0.push(',');
            }
            j.0.push('{');
            j.key("node");
            j.str(&l.node);
            j.key("op");
            j.str(&l.op);
            j.key("dtype");
            j.str(l.dtype.name());
            j.key("local_rel_error");
            match l.local_rel_error {
                Some(e) => j.num(e),
                None => j.0.push_str("null"),
            }
            j.0.push('}');
        }
        j.0.push(']');
        j.key("kept_f32");
        j.strs(&self.kept_f32);
        j.key("steps");
        j.0.push('[');
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 {
                j.0.push(',');
            }
            j.0.push('{');
            j.key("pinned");
            j.strs(&s.pinned);
            j.key("lowered");
            let _ = write!(j.0, "{}", s.lowered);
            j.key("max_rel_error");
            j.num(s.max_rel_error);
            j.key("within_budget");
            j.0.push_str(if s.within_budget { "true" } else { "false" });
            j.0.push('}');
        }
        j.0.push(']');
        j.key("ms");
        j.num(self.ms);
        j.key("optimizer");
        j.0.push_str(&self.optimizer.to_json(false));
        j.0.push('}');
        j.0
    }
}

/// One extraction of the precision phase.
struct Candidate {
    graph: Graph,
    /// `(node index in the f32 program, dtype)`, in node order.
    lowered: Vec<(usize, DType)>,
    phase: PhaseReport,
    rewrites: BTreeMap<String, usize>,
    rejected: BTreeMap<String, usize>,
}

/// Runs the precision rules on `g32` with the nodes in `pins` pinned to f32,
/// and extracts by cost.
fn lower(
    g32: &Graph,
    pins: &HashSet<usize>,
    policy: PrecisionPolicy,
    opts: &OptimizeOptions,
) -> Result<Candidate> {
    let t0 = Instant::now();
    let mut marked = g32.clone();
    for &i in pins {
        if let Some(n) = marked.nodes.get_mut(i) {
            n.attrs.set(KEEP_F32, Attr::Int(1));
        }
    }
    let mut analysis = KAnalysis::new(vec![]);
    analysis.precision = Some(policy);
    let built = build(&marked, analysis)?;
    let mut rewrites = Vec::new();
    for r in Phase::Precision.rules() {
        rewrites.push(r.rewrite().map_err(|e| PassError::graph(PASS, e))?);
    }
    let lim = opts.precision;
    let runner = Runner::default()
        .with_egraph(built.egraph)
        .with_iter_limit(lim.iterations)
        .with_node_limit(lim.nodes)
        .with_time_limit(lim.time)
        .run(&rewrites);
    let stop = StopReason::from_egg(runner.stop_reason.as_ref());
    let iterations = runner.iterations.len();
    let eg = runner.egraph;
    if let Some(e) = eg.analysis.errors.first() {
        return Err(PassError::graph(PASS, format!("phase precision: {e}")));
    }
    let phase = PhaseReport {
        name: Phase::Precision.name().to_string(),
        stop_reason: stop,
        iterations,
        egraph_nodes: eg.total_number_of_nodes(),
        egraph_classes: eg.number_of_classes(),
        ms: t0.elapsed().as_secs_f64() * 1e3,
    };
    // extraction: the cost model, with bf16 a hair dearer than f16 so that
    // f16 (more mantissa bits) wins a tie
    let (target, coeffs) = (&opts.target, &opts.coefficients);
    let cost = |eg: &KEGraph, c: Id, n: &KNode| {
        let s = enode_cost(eg, c, n, target, coeffs);
        let bf16 = n.as_op().is_some_and(|o| {
            is_product(o.op)
                && o.args
                    .first()
                    .and_then(|&a| eg[a].data.ty())
                    .is_some_and(|t| t.dtype == DType::BF16)
        });
        if bf16 {
            s * (1.0 + 1e-9)
        } else {
            s
        }
    };
    let roots: Vec<Id> = built.outputs.iter().map(|&r| eg.find(r)).collect();
    let (gchoice, _) = greedy(&eg, &cost);
    let choice = match opts.extractor {
        Extractor::Greedy => gchoice,
        Extractor::Ilp { time_limit } => ilp(&eg, &roots, &cost, &gchoice, time_limit).0,
    };
    let mut naming = Naming {
        origin: Naming::canonical_origins(&eg),
        ..Naming::default()
    };
    for (i, n) in marked.nodes.iter().enumerate() {
        let mut classes = built.node_classes[i].clone();
        classes.push(built.node_op_class[i]);
        for c in classes {
            naming
                .class_node
                .entry(eg.find(c))
                .or_insert_with(|| n.name.clone());
        }
    }
    for v in 0..marked.values.len() {
        let vid = kiln_ir::ValueId(v as u32);
        if let (Some(c), Some(name)) = (built.value_class.get(&vid), &marked.values[v].name) {
            naming
                .class_value
                .entry(eg.find(*c))
                .or_insert_with(|| name.clone());
        }
    }
    let ex = to_graph(&eg, &choice, &roots, &marked, &naming)?;
    let mut graph = ex.graph;
    for n in &mut graph.nodes {
        n.attrs.remove(KEEP_F32);
    }
    // which f32-program node each lowered product computes: its own class,
    // the product inside a Cast of its class, or a Cast of its class
    let mut owner: HashMap<Id, usize> = HashMap::new();
    for (i, n) in g32.nodes.iter().enumerate() {
        if n.outputs.len() != 1 || !is_product(n.op) {
            continue;
        }
        let Some(&c) = built.node_classes[i].first() else {
            continue;
        };
        let c = eg.find(c);
        owner.entry(c).or_insert(i);
        for node in &eg[c].nodes {
            if let Some(o) = node
                .as_op()
                .filter(|o| o.op == kiln_ir::Op::Cast && o.args.len() == 1)
            {
                owner.entry(eg.find(o.args[0])).or_insert(i);
            }
        }
        for p in eg[c].parents() {
            let p = eg.find(p);
            let casts_c = eg[p].nodes.iter().any(|node| {
                node.as_op().is_some_and(|o| {
                    o.op == kiln_ir::Op::Cast && o.args.len() == 1 && eg.find(o.args[0]) == c
                })
            });
            if casts_c {
                owner.entry(p).or_insert(i);
            }
        }
    }
    let mut lowered: BTreeMap<usize, DType> = BTreeMap::new();
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    for (k, n) in graph.nodes.iter().enumerate() {
        let rule = ex.node_rule.get(k).copied().flatten();
        if let Some(r) = rule {
            *used.entry(r.to_string()).or_insert(0) += 1;
        }
        let dt = n
            .inputs
            .first()
            .copied()
            .flatten()
            .map(|v| graph.ty(v).dtype);
        let (Some(dt), Some(_)) = (dt, rule) else {
            continue;
        };
        if !is_product(n.op) || !LOW.contains(&dt) {
            continue;
        }
        if let Some(&i) = ex.node_class.get(k).and_then(|c| owner.get(&eg.find(*c))) {
            lowered.entry(i).or_insert(dt);
        }
    }
    let rejected = eg
        .analysis
        .rejected
        .iter()
        .map(|(r, n)| (r.to_string(), *n))
        .collect();
    Ok(Candidate {
        graph,
        lowered: lowered.into_iter().collect(),
        phase,
        rewrites: used,
        rejected,
    })
}

/// Runs `g` on every sample set.
fn run_all(g: &Graph, samples: &[Vec<Tensor>], what: &str) -> Result<Vec<Vec<Tensor>>> {
    samples
        .iter()
        .map(|s| {
            kiln_ir::interp::run(g, s)
                .map_err(|e| PassError::graph(PASS, format!("running the {what} graph: {e}")))
        })
        .collect()
}

/// The error of `g` against the reference results, per output.
fn measure(
    g: &Graph,
    samples: &[Vec<Tensor>],
    reference: &[Vec<Tensor>],
) -> Result<Vec<OutputError>> {
    let got = run_all(g, samples, "lowered")?;
    let mut worst = vec![ErrorStats::default(); g.outputs.len()];
    for (gs, ws) in got.iter().zip(reference) {
        for (k, (a, b)) in gs.iter().zip(ws).enumerate() {
            worst[k] = worst[k].worst(rel_error(a, b));
        }
    }
    Ok(g.outputs
        .iter()
        .zip(worst)
        .map(|(&v, e)| OutputError {
            name: g.display_name(v),
            max_abs_error: e.max_abs,
            max_rel_error: e.max_rel,
        })
        .collect())
}

fn max_of(errs: &[OutputError]) -> f64 {
    errs.iter().map(|e| e.max_rel_error).fold(0.0, f64::max)
}

/// The local error of each candidate node of `g` (lowered to its dtype, on
/// its exact f32 operands), the maximum over the samples.
fn local_errors(
    g: &Graph,
    cands: &[(usize, DType)],
    samples: &[Vec<Tensor>],
) -> Result<HashMap<usize, f64>> {
    let want: HashMap<usize, DType> = cands.iter().copied().collect();
    let mut out: HashMap<usize, f64> = HashMap::new();
    let n = g.values.len();
    let mut last_use = vec![0usize; n];
    for (i, node) in g.nodes.iter().enumerate() {
        for v in node.inputs.iter().flatten() {
            last_use[v.index()] = i;
        }
    }
    for v in &g.outputs {
        last_use[v.index()] = usize::MAX;
    }
    for s in samples {
        kiln_ir::interp::check_inputs(g, s).map_err(|e| PassError::Graph {
            pass: PASS,
            source: e,
        })?;
        let mut env: Vec<Option<Tensor>> = vec![None; n];
        for (&v, t) in g.inputs.iter().zip(s) {
            env[v.index()] = Some(t.clone());
        }
        for (i, node) in g.nodes.iter().enumerate() {
            let args: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|o| match o {
                    None => Ok(None),
                    Some(v) => env[v.index()]
                        .as_ref()
                        .or_else(|| g.consts.get(v))
                        .map(Some)
                        .ok_or_else(|| {
                            PassError::node(PASS, node, format!("operand {v} has no value"))
                        }),
                })
                .collect::<Result<_>>()?;
            let outs = kiln_ir::interp::eval_op(node.op, &node.attrs, &args, node.outputs.len())
                .map_err(|e| PassError::node(PASS, node, e.to_string()))?;
            if let (Some(&dt), Some(y)) = (want.get(&i), outs.first()) {
                let low = eval_lowered(node.op, &node.attrs, &args, dt)
                    .map_err(|e| PassError::node(PASS, node, format!("in {}: {e}", dt.name())))?;
                if let Some(low) = low {
                    let e = rel_error(&low, y).max_rel;
                    let slot = out.entry(i).or_insert(0.0);
                    *slot = slot.max(e);
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
    }
    Ok(out)
}

/// The optimizer's report brought up to date with the precision phase and
/// the returned graph.
fn finish_report(mut r: Report, c: &Candidate, opts: &OptimizeOptions, start: Instant) -> Report {
    r.phases.push(c.phase.clone());
    for (k, n) in &c.rewrites {
        *r.rewrites.entry(k.clone()).or_insert(0) += n;
    }
    for (k, n) in &c.rejected {
        *r.rejected.entry(k.clone()).or_insert(0) += n;
    }
    r.kernels = cost::kernel_count(&c.graph);
    r.ops.clear();
    for n in &c.graph.nodes {
        *r.ops.entry(n.op.name().to_string()).or_insert(0) += 1;
    }
    r.cost_after = cost::graph_cost_with(&c.graph, &opts.target, &opts.coefficients).seconds;
    r.compile_ms = start.elapsed().as_secs_f64() * 1e3;
    r
}

/// Optimizes `original` for `opts.target` and chooses the precision of its
/// products as `p` says, measuring the error on `samples` (input sets in
/// `original.inputs` order; empty: `p.random_samples` random sets).
/// `opts.phases` and `opts.precision_policy` are overridden: every phase
/// runs, with the policy `p.precision` gives.
pub fn choose_precision(
    original: &Graph,
    opts: &OptimizeOptions,
    p: &PrecisionOptions,
    samples: &[Vec<Tensor>],
) -> Result<(Graph, PrecisionReport)> {
    let start = Instant::now();
    if !(p.max_rel_error >= 0.0) {
        return Err(PassError::graph(
            PASS,
            format!(
                "--max-rel-error must be at least 0, got {}",
                p.max_rel_error
            ),
        ));
    }
    let mut o1 = opts.clone();
    o1.phases = vec![Phase::Algebra, Phase::Fusion];
    o1.precision_policy = PrecisionPolicy::F32;
    let (g32, r1) = optimize(original, &o1)?;
    let mut report = PrecisionReport {
        precision: p.precision,
        max_rel_error_budget: p.max_rel_error,
        measured: false,
        samples: 0,
        random_samples: samples.is_empty(),
        f32_rel_error: None,
        outputs: vec![],
        max_rel_error: 0.0,
        within_budget: true,
        lowered: vec![],
        kept_f32: vec![],
        steps: vec![],
        optimizer: r1.clone(),
        ms: 0.0,
    };
    let policy = p.precision.policy(p.max_rel_error);
    if p.precision == Precision::F32 {
        let c = lower(&g32, &HashSet::new(), policy, opts)?;
        report.optimizer = finish_report(r1, &c, opts, start);
        report.ms = start.elapsed().as_secs_f64() * 1e3;
        return Ok((c.graph, report));
    }
    let owned;
    let samples: &[Vec<Tensor>] = if samples.is_empty() {
        owned = random_samples(original, p.random_samples.max(1), p.seed, p.sym_dim)?;
        &owned
    } else {
        for s in samples {
            kiln_ir::interp::check_inputs(original, s).map_err(|e| PassError::Graph {
                pass: PASS,
                source: e,
            })?;
        }
        samples
    };
    report.samples = samples.len();
    report.measured = true;
    let reference = run_all(original, samples, "original")?;
    let name = |i: usize| g32.nodes[i].name.clone();

    let first = lower(&g32, &HashSet::new(), policy, opts)?;
    let errs = measure(&first.graph, samples, &reference)?;
    let e0 = max_of(&errs);
    report.steps.push(Step {
        pinned: vec![],
        lowered: first.lowered.len(),
        max_rel_error: e0,
        within_budget: e0 <= p.max_rel_error,
    });
    let mut chosen = (first, errs, HashSet::new());
    let mut locals: HashMap<usize, f64> = HashMap::new();
    if p.precision == Precision::Auto {
        let f32_errs = measure(&g32, samples, &reference)?;
        report.f32_rel_error = Some(max_of(&f32_errs));
        locals = local_errors(&g32, &chosen.0.lowered, samples)?;
        if e0 > p.max_rel_error && !chosen.0.lowered.is_empty() {
            // candidates, largest local error first
            let mut order: Vec<usize> = chosen.0.lowered.iter().map(|&(i, _)| i).collect();
            order.sort_by(|a, b| {
                let (x, y) = (
                    locals.get(a).copied().unwrap_or(0.0),
                    locals.get(b).copied().unwrap_or(0.0),
                );
                y.partial_cmp(&x)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.cmp(b))
            });
            let mut results: BTreeMap<usize, (Candidate, Vec<OutputError>)> = BTreeMap::new();
            let mut attempt = |k: usize, report: &mut PrecisionReport| -> Result<bool> {
                let pins: HashSet<usize> = order[..k].iter().copied().collect();
                let c = lower(&g32, &pins, policy, opts)?;
                let errs = measure(&c.graph, samples, &reference)?;
                let e = max_of(&errs);
                let ok = e <= p.max_rel_error;
                let mut pinned: Vec<String> = order[..k].iter().map(|&i| name(i)).collect();
                pinned.sort();
                report.steps.push(Step {
                    pinned,
                    lowered: c.lowered.len(),
                    max_rel_error: e,
                    within_budget: ok,
                });
                results.insert(k, (c, errs));
                Ok(ok)
            };
            // grow 1, 2, 4, ... then bisect between the last failure and the first success
            let (mut lo, mut hi) = (0usize, None);
            let mut k = 1usize;
            loop {
                let k_ = k.min(order.len());
                if attempt(k_, &mut report)? {
                    hi = Some(k_);
                    break;
                }
                lo = k_;
                if k_ == order.len() {
                    break;
                }
                k *= 2;
            }
            if let Some(mut h) = hi {
                while h - lo > 1 {
                    let mid = lo + (h - lo) / 2;
                    if attempt(mid, &mut report)? {
                        h = mid;
                    } else {
                        lo = mid;
                    }
                }
                hi = Some(h);
            }
            let k = hi.unwrap_or(order.len());
            if let Some((c, errs)) = results.remove(&k) {
                chosen = (c, errs, order[..k].iter().copied().collect());
            }
        }
    }
    let (c, errs, pins) = chosen;
    report.max_rel_error = max_of(&errs);
    report.within_budget = report.max_rel_error <= p.max_rel_error;
    report.outputs = errs;
    report.lowered = c
        .lowered
        .iter()
        .map(|&(i, dt)| LoweredNode {
            node: name(i),
            op: g32.nodes[i].op.name().to_string(),
            dtype: dt,
            local_rel_error: locals.get(&i).copied(),
        })
        .collect();
    let mut kept: Vec<String> = pins.iter().map(|&i| name(i)).collect();
    kept.sort();
    report.kept_f32 = kept;
    report.optimizer = finish_report(r1, &c, opts, start);
    report.ms = start.elapsed().as_secs_f64() * 1e3;
    Ok((c.graph, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Vec<f32>) -> Tensor {
        Tensor::from_vec(vec![v.len()], v).unwrap()
    }

    #[test]
    fn rel_error_is_normwise() {
        let e = rel_error(&t(vec![1.0, 2.0, 0.001]), &t(vec![1.0, 2.0, 0.0]));
        assert_eq!(e.max_abs, 0.001f32 as f64);
        assert_eq!(e.ref_max_abs, 2.0);
        assert!((e.max_rel - 0.0005).abs() < 1e-9);
        assert_eq!(rel_error(&t(vec![0.0]), &t(vec![0.0])).max_rel, 0.0);
        assert_eq!(
            rel_error(&t(vec![1.0]), &t(vec![0.0])).max_rel,
            f64::INFINITY
        );
        assert_eq!(
            rel_error(&t(vec![f32::NAN]), &t(vec![f32::NAN])).max_rel,
            0.0
        );
        assert_eq!(
            rel_error(&t(vec![f32::NAN, 1.0]), &t(vec![0.0, 1.0])).max_rel,
            f64::INFINITY
        );
        assert_eq!(
            rel_error(&t(vec![f32::INFINITY]), &t(vec![1.0])).max_rel,
            f64::INFINITY
        );
        assert_eq!(
            rel_error(&t(vec![1.0, 2.0]), &t(vec![1.0])).max_rel,
            f64::INFINITY
        );
    }

    #[test]
    fn random_samples_bind_symbols_and_respect_dtypes() {
        let g = crate::testutil::parse(
            "graph @g {\n  in %0: f32[n,2]\n  in %1: i64[n]\n  %2: f32[n,2] = Relu(%0)\n  out %2\n}",
        );
        let s = random_samples(&g, 2, 7, 5).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0][0].shape(), &[5, 2]);
        assert!(s[0][0].to_f64_vec().iter().all(|x| (-1.0..1.0).contains(x)));
        assert!(s[0][1].to_f64_vec().iter().all(|&x| x == 0.0 || x == 1.0));
        assert_ne!(s[0][0].to_f64_vec(), s[1][0].to_f64_vec());
        assert_eq!(Precision::from_name("bf16"), Some(Precision::BF16));
        assert_eq!(Precision::from_name("f8"), None);
    }
}
