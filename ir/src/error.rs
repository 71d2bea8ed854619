//! Errors of the IR crate. Every error names what is at fault: the node (by
//! its provenance name), the op, the input or attribute, and the shapes.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// A tensor could not be built (element count, bytes, dtype).
    #[error("{0}")]
    Tensor(String),

    /// An attribute is missing, of the wrong kind, or has a bad value.
    #[error("attribute `{attr}`: {msg}")]
    Attr { attr: String, msg: String },

    /// The op cannot be applied to these operands (shape, dtype, arity).
    #[error("{0}")]
    Invalid(String),

    /// The op or this use of it is not supported by kiln.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// An error inside a node, with the node's provenance.
    #[error("node `{node}` ({op}): {source}")]
    Node {
        node: String,
        op: crate::Op,
        #[source]
        source: Box<Error>,
    },

    /// A runtime input does not match the graph.
    #[error("input `{name}`: {msg}")]
    Input { name: String, msg: String },

    /// Text-IR syntax error.
    #[error("{file}:{line}:{col}: {msg}")]
    Parse { file: String, line: usize, col: usize, msg: String },

    /// The verifier found broken invariants (all of them are listed).
    #[error("graph `{graph}` failed verification:\n{}", .errors.join("\n"))]
    Verify { graph: String, errors: Vec<String> },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(msg: impl Into<String>) -> Error {
        Error::Unsupported(msg.into())
    }

    /// Attaches node provenance.
    pub fn in_node(self, node: &str, op: crate::Op) -> Error {
        match self {
            e @ Error::Node { .. } => e,
            e => Error::Node { node: node.to_string(), op, source: Box::new(e) },
        }
    }
}
