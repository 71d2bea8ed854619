//! # kiln-passes
//!
//! Graph passes and analyses, one per file. Each file's doc comment says what
//! it does, what it deliberately does not do, what it requires and what it
//! establishes.
//!
//! - [`patch`]: the graph-edit API every pass uses ([`patch::Editor`],
//!   [`patch::compact`]);
//! - [`const_fold`]: evaluates nodes whose operands are constants, and
//!   Shape/Size of static shapes;
//! - [`reinfer`]: re-runs shape and dtype inference, filling in `?` dimensions;
//! - [`cse`]: merges identical constants and identical nodes;
//! - [`dce`]: deletes nodes that no graph output depends on;
//! - [`pipeline`]: [`simplify`], the passes above in a fixed order to a fixed point;
//! - [`stats`]: per-node FLOP and memory-traffic estimates (an analysis; it
//!   changes nothing);
//! - [`cost`]: roofline time estimates per op, node and graph for a target (an analysis);
//! - [`egraph`]: the e-graph optimizer ([`egraph::optimize`]): phases of
//!   [`rules`] under budgets, extraction by cost, a report;
//! - [`precision`]: `--precision f32|f16|bf16|auto` under an accuracy budget
//!   ([`precision::choose_precision`]).

pub mod const_fold;
pub mod cost;
pub mod cse;
pub mod dce;
pub mod egraph;
pub mod error;
pub mod memplan;
pub mod patch;
pub mod pipeline;
pub mod precision;
pub mod reinfer;
pub mod rules;
pub mod schedule;
pub mod stats;
#[cfg(test)]
mod testutil;

pub use error::{PassError, Result};
pub use pipeline::{simplify, Report};
