//! The soundness harness (tests only): one rule, one example graph, both
//! sides on the interpreter.
//!
//! Tolerances ([`tolerance`]): a rule may reassociate or replace a division
//! by a multiplication, so results may differ by a few ulps, compared as
//! `|a − b| ≤ abs + rel·|b|`: f32 abs 1e-5, rel 1e-4; f64 1e-12, 1e-10;
//! f16 and bf16 (rounded once per op, so a rewrite that changes the op
//! sequence changes the rounding) 1e-2, 1e-2 and 2e-2, 2e-2. Integers and
//! booleans must be equal; NaN must match NaN.

use super::Rule;
use crate::egraph::analysis::KAnalysis;
use crate::egraph::build::build;
use crate::egraph::extract::{greedy::greedy, to_graph, Naming};
use crate::egraph::lang::KNode;
use egg::{Id, Runner};
use kiln_ir::{DType, Graph, Tensor};

/// `(abs, rel)` for comparing results of `dtype`.
pub fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-5, 1e-4),
        DType::F64 => (1e-12, 1e-10),
        DType::F16 => (1e-2, 1e-2),
        DType::BF16 => (2e-2, 2e-2),
        _ => (0.0, 0.0),
    }
}

/// Compares two results within [`tolerance`].
pub fn close(a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.dtype() != b.dtype() || a.shape() != b.shape() {
        return Err(format!("{} vs {}", a.ty(), b.ty()));
    }
    let (abs, rel) = tolerance(a.dtype());
    for (i, (x, y)) in a.to_f64_vec().iter().zip(b.to_f64_vec()).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || x == &y || (x - y).abs() <= abs + rel * y.abs();
        if !ok {
            return Err(format!("element {i}: {x} vs {y}"));
        }
    }
    Ok(())
}

/// Runs `rule` alone on the e-graph of `example`, extracts the form that
/// prefers the rule's nodes, and checks it against the original on random
/// inputs from `seed`. Returns the rewritten graph.
pub fn check_rule(rule: &Rule, example: &str, seed: u64) -> Result<Graph, String> {
    let g = kiln_ir::text::parse(example, rule.name).map_err(|e| format!("example: {e}"))?;
    kiln_ir::verify::verify(&g).map_err(|e| format!("example does not verify: {e}"))?;
    let rewritten = rewrite_with(rule, &g)?;
    let inputs = crate::testutil::random_inputs(&g, seed);
    let want = kiln_ir::interp::run(&g, &inputs).map_err(|e| format!("original: {e}"))?;
    let got = kiln_ir::interp::run(&rewritten, &inputs)
        .map_err(|e| format!("rewritten: {e}\n{rewritten}"))?;
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        close(a, b).map_err(|e| format!("output {i}: {e}\nrewritten:\n{rewritten}"))?;
    }
    Ok(rewritten)
}

/// The example rewritten by `rule` alone: the rule must fire, and the
/// extracted graph (nodes the rule created cost 1, other op nodes 1000,
/// leaves 0) must differ from the original.
pub fn rewrite_with(rule: &Rule, g: &Graph) -> Result<Graph, String> {
    let rw = rule.rewrite()?;
    let built = build(g, KAnalysis::new(vec![])).map_err(|e| e.to_string())?;
    let runner = Runner::default()
        .with_egraph(built.egraph)
        .with_iter_limit(4)
        .with_node_limit(20_000)
        .with_time_limit(std::time::Duration::from_secs(10))
        .run(std::iter::once(&rw));
    let eg = runner.egraph;
    if let Some(e) = eg.analysis.errors.first() {
        return Err(format!("analysis error: {e}"));
    }
    let fired: usize = runner
        .iterations
        .iter()
        .filter_map(|it| it.applied.get(&rw.name))
        .sum();
    if fired == 0 {
        return Err(format!(
            "the rule did not fire on its example (refused by admission control {} times)",
            eg.analysis.rejected.get(&rw.name).copied().unwrap_or(0)
        ));
    }
    let origins = Naming::canonical_origins(&eg);
    let cost = |eg: &crate::egraph::analysis::KEGraph, _c: Id, n: &KNode| -> f64 {
        match n {
            KNode::Op(_) => {
                let canon = n.clone().map_children(|k| eg.find(k));
                if origins.get(&canon).is_some_and(|r| *r == rw.name) {
                    1.0
                } else {
                    1000.0
                }
            }
            _ => 0.0,
        }
    };
    let (choice, _) = greedy(&eg, &cost);
    let roots: Vec<Id> = built.outputs.iter().map(|&r| eg.find(r)).collect();
    let naming = Naming {
        origin: origins.clone(),
        ..Naming::default()
    };
    let out = to_graph(&eg, &choice, &roots, g, &naming).map_err(|e| e.to_string())?;
    if structure(&out.graph) == structure(g) {
        return Err("the extracted graph is the original one".into());
    }
    Ok(out.graph)
}

use egg::Language as _;

/// Each output as an expression tree over inputs (by position) and
/// constants (by value): equal for graphs that compute the same way.
fn structure(g: &Graph) -> Vec<String> {
    use std::collections::HashMap;
    let mut memo: HashMap<kiln_ir::ValueId, String> = HashMap::new();
    for (i, v) in g.inputs.iter().enumerate() {
        memo.insert(*v, format!("in{i}"));
    }
    for (v, t) in &g.consts {
        memo.insert(*v, format!("{}{:?}", t.ty(), t.to_f64_vec()));
    }
    for n in &g.nodes {
        let args: Vec<String> = n
            .inputs
            .iter()
            .map(|o| {
                o.and_then(|v| memo.get(&v).cloned())
                    .unwrap_or_else(|| "_".into())
            })
            .collect();
        for (k, v) in n.outputs.iter().enumerate() {
            memo.insert(*v, format!("{}{:?}#{k}({})", n.op, n.attrs, args.join(",")));
        }
    }
    g.outputs
        .iter()
        .map(|v| memo.get(v).cloned().unwrap_or_default())
        .collect()
}
