//! # kiln-ir
//!
//! kiln's graph IR and everything that defines its meaning:
//!
//! - [`DType`], [`Shape`], [`TensorType`], [`Tensor`]: values and their types;
//! - [`Op`] (a closed enum with [`OpClass`] sets) and [`Attrs`];
//! - [`Graph`]: typed values in an arena, nodes in topological order;
//! - [`verify`]: the invariants, checked all at once;
//! - [`text`]: the `.kir` printer and parser, which round-trip;
//! - [`infer`]: shape and dtype inference per op;
//! - [`interp`]: the reference interpreter, the oracle for every backend and rewrite;
//! - [`fused`] and [`expr`]: kiln's fused ops and their elementwise bodies, defined by decomposition;
//! - [`npy`]: `.npy` reading and writing;
//! - [`target`]: [`TargetInfo`], compilation targets as plain data for cost models.

pub mod attr;
pub mod dtype;
pub mod error;
pub mod expr;
pub mod fused;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod kernel;
pub mod npy;
pub mod op;
pub mod shape;
pub mod target;
pub mod tensor;
pub mod text;
pub mod verify;

pub use attr::{Attr, Attrs};
pub use dtype::DType;
pub use error::{Error, Result};
pub use graph::{Graph, Node, ValueId, ValueInfo};
pub use op::{Op, OpClass};
pub use shape::{Dim, Shape, TensorType};
pub use target::TargetInfo;
pub use tensor::{Data, Element, Tensor};
