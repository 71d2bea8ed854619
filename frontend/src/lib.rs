//! # kiln-frontend
//!
//! ONNX import: reads a `.onnx` file (protobuf, decoded with prost from the
//! committed generated code in [`proto`]) and produces a [`kiln_ir::Graph`]
//! whose values all have dtypes and shapes.
//!
//! - [`import_file`] / [`import_bytes`]: a whole model. Initializers (and graph
//!   inputs that have one) and `Constant` nodes become graph constants; every
//!   node is normalised to kiln's one form of its op, the newest ONNX opset's
//!   (see `normalize.rs` and `docs/onnx-import.md`), and typed with
//!   [`kiln_ir::infer::infer_op`];
//! - [`read_tensor_pb`], [`tensor_from_proto`], [`tensor_to_proto`],
//!   [`write_tensor_pb`]: ONNX `TensorProto` files such as the test data's
//!   `input_0.pb`;
//! - [`dump_onnx_file`]: a readable listing of an ONNX file as it is, before import.
//!
//! Every failure is a [`FrontendError`] naming the file and the node, op,
//! tensor or value at fault; no input bytes make the frontend panic.

mod attrs;
mod dump;
mod error;
mod import;
mod normalize;
pub mod proto;
mod tensor;
mod types;

pub use dump::{dump_onnx_bytes, dump_onnx_file};
pub use error::{FrontendError, Result};
pub use import::{import_bytes, import_bytes_with, import_file, import_file_with, ImportOptions};
pub use tensor::{read_tensor_pb, tensor_from_proto, tensor_to_proto, write_tensor_pb};

/// The oldest default-domain opset kiln imports.
pub const MIN_OPSET: i64 = 7;
/// The newest default-domain opset kiln knows (onnx 1.23's).
pub const MAX_OPSET: i64 = 28;
