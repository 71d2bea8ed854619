//! ILP extraction through microlp (pure Rust, nothing to install).
//!
//! Requires: a rebuilt e-graph, a node cost, and the greedy answer (explored
//! first, and the fallback).
//! Establishes: a [`Choice`] that minimises the DAG cost (each chosen node
//! paid once, however many users it has) over the candidate nodes, or the
//! greedy choice when the solver fails, runs out of time without a solution,
//! or finds nothing better; [`IlpOutcome`] says which.
//!
//! Formulation: one binary `x_n` per candidate e-node, objective
//! `Σ cost(n)·x_n`; each root class has a chosen node (`Σ_{n∈root} x_n ≥ 1`);
//! a chosen node's operand classes have chosen nodes
//! (`Σ_{m∈k} x_m − x_n ≥ 0` for each operand class `k` of `n`).
//! Cycles are excluded before solving: a depth-first search from the roots
//! (each class's greedy node first) finds the back edges, and the nodes that
//! have one are not candidates. What remains is acyclic (a graph without its
//! DFS back edges is a DAG), so no cycle can be chosen; only nodes on a
//! cycle of the e-graph are lost. If that leaves a needed class without a
//! candidate, the problem is infeasible and the greedy answer is returned.

use super::{greedy::EPSILON, Choice, NodeCost};
use crate::egraph::analysis::KEGraph;
use egg::{Id, Language};
use microlp::{ComparisonOp, LinearExpr, OptimizationDirection, Problem};
use std::collections::HashMap;
use std::time::Duration;

/// What the ILP extractor did.
#[derive(Clone, Debug, PartialEq)]
pub struct IlpOutcome {
    /// Whether the greedy choice was returned instead of the solver's.
    pub fell_back: bool,
    /// Why (when it fell back), or "optimal" / "feasible (time limit)".
    pub note: String,
    /// Binaries in the problem.
    pub variables: usize,
    pub ms: f64,
}

/// The ILP choice for `roots`, within `time_limit`.
pub fn ilp(
    eg: &KEGraph,
    roots: &[Id],
    cost: &NodeCost,
    greedy: &Choice,
    time_limit: Duration,
) -> (Choice, IlpOutcome) {
    let start = std::time::Instant::now();
    let fallback = |note: String, vars: usize| {
        (
            greedy.clone(),
            IlpOutcome {
                fell_back: true,
                note,
                variables: vars,
                ms: start.elapsed().as_secs_f64() * 1e3,
            },
        )
    };
    let cands = match candidates(eg, roots, cost, greedy) {
        Ok(c) => c,
        Err(note) => return fallback(note, 0),
    };
    let mut p = Problem::new(OptimizationDirection::Minimize);
    p.set_time_limit(time_limit);
    let mut vars: HashMap<(Id, KNodeRef), microlp::Variable> = HashMap::new();
    let mut classes: Vec<Id> = cands.keys().copied().collect();
    classes.sort();
    for &c in &classes {
        for &(i, w) in &cands[&c] {
            vars.insert((c, i), p.add_binary_var(w));
        }
    }
    let nvars = vars.len();
    let class_sum = |c: Id| -> LinearExpr {
        cands[&c]
            .iter()
            .map(|&(i, _)| (vars[&(c, i)], 1.0))
            .collect()
    };
    for &r in roots {
        p.add_constraint(class_sum(eg.find(r)), ComparisonOp::Ge, 1.0);
    }
    for &c in &classes {
        for &(i, _) in &cands[&c] {
            let x = vars[&(c, i)];
            let mut kids: Vec<Id> = eg[c].nodes[i]
                .children()
                .iter()
                .map(|&k| eg.find(k))
                .collect();
            kids.sort();
            kids.dedup();
            for k in kids {
                let mut e = class_sum(k);
                e.add(x, -1.0);
                p.add_constraint(e, ComparisonOp::Ge, 0.0);
            }
        }
    }
    let outcome = match p.solve() {
        Ok(o) => o,
        Err(e) => return fallback(format!("solver error: {e}"), nvars),
    };
    let optimal = outcome.is_optimal();
    let Some(sol) = outcome.solution() else {
        return fallback("time limit before any solution".into(), nvars);
    };
    let mut choice = Choice::default();
    for &c in &classes {
        let pick = cands[&c]
            .iter()
            .filter(|&&(i, _)| sol.var_value(vars[&(c, i)]) > 0.5)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some(&(i, _)) = pick {
            choice
                .nodes
                .insert(c, eg[c].nodes[i].clone().map_children(|k| eg.find(k)));
        }
    }
    // every reachable class must have a choice
    if choice
        .reachable(eg, roots)
        .iter()
        .any(|c| !choice.nodes.contains_key(c))
    {
        return fallback("solution leaves a needed class unchosen".into(), nvars);
    }
    let ilp_cost = choice.dag_cost(eg, roots, cost);
    let greedy_cost = greedy.dag_cost(eg, roots, cost);
    if ilp_cost > greedy_cost {
        return fallback(
            format!("solution ({ilp_cost:.3e} s) worse than greedy ({greedy_cost:.3e} s)"),
            nvars,
        );
    }
    let note = if optimal {
        "optimal".to_string()
    } else {
        "feasible (time limit)".to_string()
    };
    (
        choice,
        IlpOutcome {
            fell_back: false,
            note,
            variables: nvars,
            ms: start.elapsed().as_secs_f64() * 1e3,
        },
    )
}

/// A node's index in its class.
type KNodeRef = usize;

/// Per reachable class: its candidate nodes (index, cost), back edges removed.
fn candidates(
    eg: &KEGraph,
    roots: &[Id],
    cost: &NodeCost,
    greedy: &Choice,
) -> Result<HashMap<Id, Vec<(KNodeRef, f64)>>, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut mark: HashMap<Id, Mark> = HashMap::new();
    let mut cands: HashMap<Id, Vec<(KNodeRef, f64)>> = HashMap::new();
    // each class's nodes, greedy choice first
    let order = |c: Id| -> Vec<usize> {
        let nodes = &eg[c].nodes;
        let g = greedy.nodes.get(&c);
        let mut idx: Vec<usize> = (0..nodes.len()).collect();
        idx.sort_by_key(|&i| {
            g.is_none_or(|n| {
                n.clone().map_children(|k| eg.find(k))
                    != nodes[i].clone().map_children(|k| eg.find(k))
            })
        });
        idx
    };
    // frame: class, its node order, position in it, child position, back edge seen
    struct Frame {
        class: Id,
        nodes: Vec<usize>,
        ni: usize,
        ki: usize,
        back: bool,
    }
    for &r in roots {
        let r = eg.find(r);
        if mark.contains_key(&r) {
            continue;
        }
        mark.insert(r, Mark::Open);
        let mut stack = vec![Frame {
            class: r,
            nodes: order(r),
            ni: 0,
            ki: 0,
            back: false,
        }];
        while let Some(f) = stack.last_mut() {
            let c = f.class;
            let Some(&i) = f.nodes.get(f.ni) else {
                mark.insert(c, Mark::Done);
                cands.entry(c).or_default();
                stack.pop();
                continue;
            };
            let node = &eg[c].nodes[i];
            match node.children().get(f.ki) {
                Some(&k) => {
                    f.ki += 1;
                    let k = eg.find(k);
                    match mark.get(&k) {
                        Some(Mark::Open) => f.back = true,
                        Some(Mark::Done) => {}
                        None => {
                            mark.insert(k, Mark::Open);
                            let nodes = order(k);
                            stack.push(Frame {
                                class: k,
                                nodes,
                                ni: 0,
                                ki: 0,
                                back: false,
                            });
                        }
                    }
                }
                None => {
                    if !f.back {
                        let w = cost(eg, c, node).max(0.0) + EPSILON;
                        cands.entry(c).or_default().push((i, w));
                    }
                    f.ni += 1;
                    f.ki = 0;
                    f.back = false;
                }
            }
        }
    }
    if let Some((c, _)) = cands.iter().find(|(_, v)| v.is_empty()) {
        return Err(format!("class {c} has no node off a cycle"));
    }
    Ok(cands)
}
