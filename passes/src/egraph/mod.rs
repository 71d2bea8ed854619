//! The e-graph optimizer: graph → e-graph, rule phases under budgets,
//! extraction by the target's cost model, and a report.
//!
//! Requires: a graph that satisfies [`kiln_ir::verify`] (typed; symbolic
//! dimensions are costed at [`runner::SYMBOLIC_DIM`]). Establishes, via
//! [`optimize`]: an equivalent graph that verifies, chosen by the cost model
//! among the forms the rules found, and a [`Report`].
//!
//! - [`lang`]: the e-node language ([`KNode`]) and its pattern syntax;
//! - [`analysis`]: types and constants per class, admission control ([`admit`]);
//! - [`build`]: graph → e-graph;
//! - [`extract`]: greedy and ILP extraction, choice → graph;
//! - [`runner`]: the phases, the cost of an e-node, [`optimize`];
//! - [`report`]: the [`Report`], its JSON, [`dump_egraph`].

pub mod analysis;
pub mod build;
pub mod extract;
pub mod lang;
pub mod report;
pub mod runner;

pub use analysis::{admit, KAnalysis, KData, KEGraph, PrecisionPolicy, Rhs};
pub use lang::{AttrKey, KNode, OpNode};
pub use report::{dump_egraph, NodeExplanation, PhaseReport, Report, StopReason};
pub use runner::{optimize, Extractor, Limits, OptimizeOptions};
