//! Errors of the graph passes. Every error names the pass (or pipeline
//! stage) that raised it and, where there is one, the node by its provenance
//! name and op, like [`kiln_ir::Error::Node`] does for the interpreter.

use kiln_ir::Op;
use thiserror::Error;

pub type Result<T, E = PassError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum PassError {
    /// Something is wrong at one node: a folded value that contradicts the
    /// node's declared type, an inference conflict, an edit that does not fit.
    #[error("{pass}: node `{node}` ({op}): {msg}")]
    Node {
        pass: &'static str,
        node: String,
        op: Op,
        msg: String,
    },

    /// A graph-wide problem: the graph does not verify after a stage, or an
    /// edit names a value the graph does not have.
    #[error("{pass}: {source}")]
    Graph {
        pass: &'static str,
        #[source]
        source: kiln_ir::Error,
    },
}

impl PassError {
    /// The pass or stage that raised the error.
    pub fn pass(&self) -> &'static str {
        match self {
            PassError::Node { pass, .. } | PassError::Graph { pass, .. } => pass,
        }
    }

    pub(crate) fn node(
        pass: &'static str,
        node: &kiln_ir::Node,
        msg: impl Into<String>,
    ) -> PassError {
        PassError::Node {
            pass,
            node: node.name.clone(),
            op: node.op,
            msg: msg.into(),
        }
    }

    pub(crate) fn graph(pass: &'static str, msg: impl Into<String>) -> PassError {
        PassError::Graph {
            pass,
            source: kiln_ir::Error::invalid(msg),
        }
    }
}
