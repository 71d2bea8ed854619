//! kiln facade (placeholder).
pub use kiln_ir as ir;
