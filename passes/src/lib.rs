//! # kiln-passes
//!
//! Graph passes and analyses, one per file. Each file's doc comment says what
//! it requires and what it establishes.
//!
//! - [`stats`]: per-node FLOP and memory-traffic estimates (an analysis; it
//!   changes nothing).

pub mod stats;
