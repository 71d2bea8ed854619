//! The frontend's error type. Every message starts with the file it is about
//! and names the node, op, tensor or value at fault.

use thiserror::Error;

/// Everything that can go wrong while importing an ONNX file.
#[derive(Debug, Error)]
pub enum FrontendError {
    /// The file could not be read.
    #[error("{file}: cannot read the file: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },

    /// The bytes are not a protobuf message of the expected kind.
    #[error("{file}: not a valid ONNX {what}: {msg}")]
    Decode {
        file: String,
        what: &'static str,
        msg: String,
    },

    /// A problem with the model as a whole (opsets, missing graph, ...).
    #[error("{file}: {msg}")]
    Model { file: String, msg: String },

    /// An op kiln does not support (other domains, unknown ops, subgraph ops).
    #[error("{file}: node \"{node}\" (op {op}, domain \"{domain}\"): unsupported op{detail}")]
    UnsupportedOp {
        file: String,
        node: String,
        op: String,
        domain: String,
        detail: String,
    },

    /// A node is malformed or uses a form kiln does not support (a bad
    /// attribute, an undefined input, ...).
    #[error("{file}: node \"{node}\" (op {op}): {msg}")]
    Node {
        file: String,
        node: String,
        op: String,
        msg: String,
    },

    /// A tensor (initializer, Constant value, `.pb` file) cannot be decoded.
    #[error("{file}: tensor \"{tensor}\": {msg}")]
    Tensor {
        file: String,
        tensor: String,
        msg: String,
    },

    /// A graph input or output is malformed or conflicts with inference.
    #[error("{file}: {kind} \"{value}\": {msg}")]
    Value {
        file: String,
        kind: &'static str,
        value: String,
        msg: String,
    },

    /// Shape and dtype inference rejected a node.
    #[error("{file}: node \"{node}\" (op {op}): shape inference failed: {source}")]
    Inference {
        file: String,
        node: String,
        op: String,
        #[source]
        source: Box<kiln_ir::Error>,
    },
}

pub type Result<T, E = FrontendError> = std::result::Result<T, E>;
