//! Greedy extraction: each class's cheapest node by tree cost, bottom-up to
//! a fixed point.
//!
//! Requires: a rebuilt e-graph. Establishes: a [`Choice`] for every class
//! that has a finite-cost node; acyclic, because every node costs at least a
//! tiny positive amount and a class's choice only changes on a strict
//! improvement (so a chosen node always costs more than each of its
//! children's choices). Shared subexpressions are counted once per use.

use super::{Choice, NodeCost};
use crate::egraph::analysis::KEGraph;
use egg::{Id, Language};
use std::collections::HashMap;

/// The smallest cost a node has, so that every tree costs more than its subtrees.
pub const EPSILON: f64 = 1e-12;

/// The greedy choice and each class's tree cost.
pub fn greedy(eg: &KEGraph, cost: &NodeCost) -> (Choice, HashMap<Id, f64>) {
    // node costs once
    let classes: Vec<Id> = eg.classes().map(|c| c.id).collect();
    let own: HashMap<Id, Vec<f64>> = eg
        .classes()
        .map(|c| {
            (
                c.id,
                c.nodes
                    .iter()
                    .map(|n| cost(eg, c.id, n).max(0.0) + EPSILON)
                    .collect(),
            )
        })
        .collect();
    let mut best: HashMap<Id, (f64, usize)> = HashMap::new();
    loop {
        let mut changed = false;
        for &id in &classes {
            let class = &eg[id];
            for (i, n) in class.nodes.iter().enumerate() {
                let mut total = own[&id][i];
                let mut ok = true;
                for &k in n.children() {
                    match best.get(&eg.find(k)) {
                        Some((c, _)) => total += c,
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok || !total.is_finite() {
                    continue;
                }
                match best.get(&id) {
                    Some((c, _)) if *c <= total => {}
                    _ => {
                        best.insert(id, (total, i));
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut choice = Choice::default();
    let mut costs = HashMap::new();
    for (id, (c, i)) in best {
        let n = eg[id].nodes[i].clone().map_children(|k| eg.find(k));
        choice.nodes.insert(id, n);
        costs.insert(id, c);
    }
    (choice, costs)
}
