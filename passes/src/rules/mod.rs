//! Rewrite rules as data: the [`Rule`] type, the per-phase tables, and the
//! soundness harness every rule is tested with.
//!
//! Requires: the e-graph language and analysis of [`crate::egraph`].
//! Establishes: [`Phase::rules`], the rule table of each optimizer phase
//! (algebra → fusion → precision), in which every rule has a name, a law
//! with its side conditions, and at least one example on which
//! `sound_on_all_examples` proves it with the reference interpreter.
//!
//! # How to add a rule
//!
//! 1. Pick the phase's file: [`algebra`] (identities, layout), [`fusion`],
//!    [`precision`]. Each has `pub fn rules() -> Vec<Rule>`.
//! 2. Write the rule as patterns when the right-hand side needs no computed
//!    attributes or constants:
//!    ```ignore
//!    Rule::new("neg-neg", "Neg(Neg(x)) = x, exactly (sign flips are exact)",
//!              "(Neg (Neg ?x))", "?x")
//!        .example("graph @g { in %0: f32[3] %1: f32[3] = Neg(%0) %2: f32[3] = Neg(%1) out %2 }")
//!    ```
//!    Pattern syntax (see [`crate::egraph::lang`]): `(Op ?a ?b)`, attributes
//!    in `.kir` syntax without spaces `Transpose[perm=[1,0]]`, `Op[*]` for
//!    "any attributes" (left-hand side only), `Split#3[axis=0]` for a node
//!    with 3 outputs and `(proj1 ...)` for its output 1, `_` for an omitted
//!    optional operand.
//! 3. Side conditions: [`Rule::when`] with a closure over the e-graph, the
//!    matched class and the substitution; read types and constants with
//!    [`ty`], [`konst`] and [`class`]. The analysis also carries the
//!    precision policy (`eg.analysis.precision`).
//! 4. A right-hand side that needs computed attributes or new constants:
//!    [`Rule::custom`] with a closure that builds an [`Rhs`] (nodes over
//!    local handles; [`Rhs::union_with`] says which existing class each
//!    result joins; several unions per match are allowed) or returns `None`.
//! 5. Every right-hand side, pattern or custom, goes through admission
//!    control ([`crate::egraph::admit`]): it is type-checked node by node
//!    before anything is added, and dropped if its type differs from the
//!    class it joins. A rule cannot make the e-graph ill-typed; a rule that
//!    tries is counted in the report's `rejected`.
//! 6. Give it one or more `.example(...)`: a `.kir` graph whose outputs
//!    contain an instance of the left-hand side (use shapes that make the
//!    side conditions hold). The harness builds an e-graph from it, runs only
//!    this rule, checks that the rule fired, extracts the graph preferring
//!    the nodes the rule created (and avoiding the original ones), checks
//!    that the result differs from the input, and compares both on random
//!    inputs with the interpreter (tolerances in [`harness::tolerance`]).
//!    A rule without an example fails the test that iterates over all tables.
//!
//! Rule names are unique across all tables (checked by a test); the report
//! counts extracted nodes per rule name.

pub mod algebra;
pub mod fusion;
pub mod precision;

use crate::egraph::analysis::{admit, KAnalysis, KData, KEGraph, Rhs};
use crate::egraph::lang::KNode;
use egg::{Applier, Id, Pattern, PatternAst, SearchMatches, Subst, Symbol, Var};
use kiln_ir::{Tensor, TensorType};
use std::sync::Arc;

/// The optimizer's phases, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Algebra,
    Fusion,
    Precision,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Algebra, Phase::Fusion, Phase::Precision];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Algebra => "algebra",
            Phase::Fusion => "fusion",
            Phase::Precision => "precision",
        }
    }

    pub fn from_name(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The phase's rule table.
    pub fn rules(self) -> Vec<Rule> {
        match self {
            Phase::Algebra => algebra::rules(),
            Phase::Fusion => fusion::rules(),
            Phase::Precision => precision::rules(),
        }
    }
}

/// A side condition: the e-graph, the matched class, the substitution.
pub type Condition = Arc<dyn Fn(&KEGraph, Id, &Subst) -> bool + Send + Sync>;
/// A custom right-hand side builder: `None` means "does not apply here".
pub type Builder = Arc<dyn Fn(&mut KEGraph, Id, &Subst) -> Option<Rhs> + Send + Sync>;

/// One named rewrite rule.
pub struct Rule {
    /// Unique across all tables; the report's key.
    pub name: &'static str,
    /// The law it applies and its side conditions, in words.
    pub law: &'static str,
    /// `.kir` graphs containing an instance of the left-hand side.
    pub examples: Vec<&'static str>,
    lhs: Result<Pattern<KNode>, String>,
    rhs: Rhs_,
    conds: Vec<Condition>,
}

enum Rhs_ {
    Pattern(Result<Pattern<KNode>, String>),
    Custom(Builder),
}

fn parse_pattern(name: &str, side: &str, s: &str) -> Result<Pattern<KNode>, String> {
    s.parse::<Pattern<KNode>>()
        .map_err(|e| format!("rule `{name}`: {side} `{s}`: {e}"))
}

impl Rule {
    /// A pattern rule `lhs → rhs`.
    pub fn new(name: &'static str, law: &'static str, lhs: &str, rhs: &str) -> Rule {
        Rule {
            name,
            law,
            examples: Vec::new(),
            lhs: parse_pattern(name, "left-hand side", lhs),
            rhs: Rhs_::Pattern(parse_pattern(name, "right-hand side", rhs)),
            conds: Vec::new(),
        }
    }

    /// A rule whose right-hand side `build` computes for each match.
    pub fn custom(
        name: &'static str,
        law: &'static str,
        lhs: &str,
        build: impl Fn(&mut KEGraph, Id, &Subst) -> Option<Rhs> + Send + Sync + 'static,
    ) -> Rule {
        Rule {
            name,
            law,
            examples: Vec::new(),
            lhs: parse_pattern(name, "left-hand side", lhs),
            rhs: Rhs_::Custom(Arc::new(build)),
            conds: Vec::new(),
        }
    }

    /// Adds a side condition (all must hold).
    pub fn when(
        mut self,
        cond: impl Fn(&KEGraph, Id, &Subst) -> bool + Send + Sync + 'static,
    ) -> Rule {
        self.conds.push(Arc::new(cond));
        self
    }

    /// Adds an example graph for the soundness harness.
    pub fn example(mut self, kir: &'static str) -> Rule {
        self.examples.push(kir);
        self
    }

    /// The egg rewrite, or why the rule is malformed (a pattern that does not
    /// parse, a right-hand side variable the left-hand side does not bind).
    pub fn rewrite(&self) -> Result<egg::Rewrite<KNode, KAnalysis>, String> {
        let lhs = self.lhs.clone()?;
        let rhs = match &self.rhs {
            Rhs_::Pattern(p) => Kind::Pattern(p.clone()?.ast),
            Rhs_::Custom(b) => Kind::Custom(b.clone()),
        };
        let applier = Admitted {
            rule: Symbol::from(self.name),
            conds: self.conds.clone(),
            rhs,
        };
        egg::Rewrite::new(self.name, lhs, applier).map_err(|e| format!("rule `{}`: {e}", self.name))
    }

    /// The left-hand side as written (for listings).
    pub fn lhs_text(&self) -> String {
        match &self.lhs {
            Ok(p) => p.to_string(),
            Err(e) => e.clone(),
        }
    }
}

enum Kind {
    Pattern(PatternAst<KNode>),
    Custom(Builder),
}

/// The applier every rule uses: conditions, then admission control.
struct Admitted {
    rule: Symbol,
    conds: Vec<Condition>,
    rhs: Kind,
}

impl Applier<KNode, KAnalysis> for Admitted {
    fn apply_one(
        &self,
        eg: &mut KEGraph,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<KNode>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        if !self.conds.iter().all(|c| c(eg, eclass, subst)) {
            return vec![];
        }
        let rhs = match &self.rhs {
            Kind::Pattern(ast) => Rhs::from_pattern(ast, subst, eclass),
            Kind::Custom(b) => b(eg, eclass, subst),
        };
        let Some(rhs) = rhs else { return vec![] };
        match admit(eg, &rhs, self.rule) {
            Ok(changed) => changed,
            Err(_) => {
                *eg.analysis.rejected.entry(self.rule).or_insert(0) += 1;
                vec![]
            }
        }
    }

    fn apply_matches(
        &self,
        eg: &mut KEGraph,
        matches: &[SearchMatches<KNode>],
        rule: Symbol,
    ) -> Vec<Id> {
        let mut out = vec![];
        for m in matches {
            for s in &m.substs {
                out.extend(self.apply_one(eg, m.eclass, s, None, rule));
            }
        }
        out
    }

    fn vars(&self) -> Vec<Var> {
        match &self.rhs {
            Kind::Pattern(ast) => ast
                .as_ref()
                .iter()
                .filter_map(|n| match n {
                    egg::ENodeOrVar::Var(v) => Some(*v),
                    _ => None,
                })
                .collect(),
            Kind::Custom(_) => vec![],
        }
    }
}

/// The class bound to pattern variable `var` (written with its `?`).
pub fn class(subst: &Subst, var: &str) -> Option<Id> {
    let v: Var = var.parse().ok()?;
    subst.get(v).copied()
}

/// The analysis data of the class bound to `var`.
pub fn data<'a>(eg: &'a KEGraph, subst: &Subst, var: &str) -> Option<&'a KData> {
    class(subst, var).map(|id| &eg[id].data)
}

/// The (first) type of the class bound to `var`.
pub fn ty<'a>(eg: &'a KEGraph, subst: &Subst, var: &str) -> Option<&'a TensorType> {
    data(eg, subst, var)?.ty()
}

/// The constant value of the class bound to `var`, if it is constant.
pub fn konst<'a>(eg: &'a KEGraph, subst: &Subst, var: &str) -> Option<&'a Tensor> {
    data(eg, subst, var)?.value()
}

/// Every rule of every phase, with its phase.
pub fn all_rules() -> Vec<(Phase, Rule)> {
    Phase::ALL
        .into_iter()
        .flat_map(|p| p.rules().into_iter().map(move |r| (p, r)))
        .collect()
}

#[cfg(test)]
pub(crate) mod harness;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_well_formed_and_uniquely_named() {
        let mut seen = std::collections::HashSet::new();
        for (phase, r) in all_rules() {
            assert!(seen.insert(r.name), "rule name `{}` is used twice", r.name);
            assert!(
                !r.law.is_empty(),
                "rule `{}` ({}) states no law",
                r.name,
                phase.name()
            );
            if let Err(e) = r.rewrite() {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn the_harness_catches_a_wrong_rule_and_a_rule_that_does_not_fire() {
        let ex =
            "graph @g {\n in %0: f32[4]\n %1: f32[4] = Neg(%0)\n %2: f32[4] = Exp(%1)\n out %2\n}";
        // type-correct but false: Neg(x) = x
        let wrong = Rule::new("wrong", "false", "(Neg ?x)", "?x").example(ex);
        let e = harness::check_rule(&wrong, ex, 0).unwrap_err();
        assert!(e.contains("output 0"), "{e}");
        // ill-typed right-hand sides are refused, so the rule never fires
        let ill = Rule::new("ill", "false", "(Neg ?x)", "(ReduceSum ?x)").example(ex);
        let e = harness::check_rule(&ill, ex, 0).unwrap_err();
        assert!(
            e.contains("did not fire") || e.contains("is the original"),
            "{e}"
        );
    }

    /// The soundness test: every rule of every table, on every example.
    #[test]
    fn sound_on_all_examples() {
        let mut failures = Vec::new();
        let mut checked = 0;
        for (phase, r) in all_rules() {
            if r.examples.is_empty() {
                failures.push(format!("{}/{}: no example", phase.name(), r.name));
            }
            for (i, ex) in r.examples.iter().enumerate() {
                eprintln!("checking {}/{} example {i}", phase.name(), r.name);
                for seed in 0..3 {
                    if let Err(e) = harness::check_rule(&r, ex, seed) {
                        failures.push(format!("{}/{} example {i}: {e}", phase.name(), r.name));
                        break;
                    }
                }
                checked += 1;
            }
        }
        eprintln!("checked {checked} rule examples");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
