//! # kiln
//!
//! kiln is a tensor compiler. This crate is its facade: it ties the
//! [frontend](kiln_frontend) (ONNX and `.kir` text in), the [graph IR](kiln_ir)
//! and its reference interpreter, and the passes together, and it is the
//! library that runtimes embed and the `kiln` CLI is built on.
//!
//! The whole path, from an ONNX file to output tensors, through native code:
//!
//! ```
//! use kiln::{Compiler, ir::Tensor};
//!
//! # fn main() -> Result<(), kiln::Error> {
//! // import, simplify, optimize (egg), lower to kernel IR, plan memory, JIT with Cranelift
//! let model = Compiler::new()
//!     .dim("batch", 1)
//!     .dim("sequence", 8)
//!     .compile_file("examples/tiny_bert/model.onnx".as_ref())?;
//! let ids = Tensor::from_vec(vec![1, 8], vec![1i64, 7, 3, 9, 4, 2, 0, 0])?;
//! let mask = Tensor::from_vec(vec![1, 8], vec![1i64, 1, 1, 1, 1, 1, 0, 0])?;
//! let outputs = model.run(&[ids, mask])?; // checked against the declared types
//! assert_eq!(outputs[0].shape(), &[1, 8, 32]);
//! // the same model on the reference interpreter agrees
//! let reference = kiln::ir::interp::run(model.graph(), &[
//!     Tensor::from_vec(vec![1, 8], vec![1i64, 7, 3, 9, 4, 2, 0, 0])?,
//!     Tensor::from_vec(vec![1, 8], vec![1i64, 1, 1, 1, 1, 1, 0, 0])?,
//! ])?;
//! let (a, b) = (outputs[0].to_f64_vec(), reference[0].to_f64_vec());
//! assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-4));
//! # Ok(())
//! # }
//! ```
//!
//! The same thing end to end on a graph written in kiln's text IR:
//!
//! ```
//! use kiln::ir::{text, interp, Tensor};
//!
//! let src = r#"
//! graph @double {
//!   in %0 "x": f32[3]
//!   const %1: f32[] = [2.0]
//!   %2 "y": f32[3] = Mul(%0, %1)
//!   out %2
//! }"#;
//! let g = text::parse(src, "double.kir").unwrap();
//! let y = interp::run(&g, &[Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap()]).unwrap();
//! assert_eq!(y[0].as_slice::<f32>().unwrap(), &[2.0, 4.0, 6.0]);
//! // and the printer gives the text back
//! assert!(text::print(&g, &text::PrintOptions::default()).contains("Mul(%0, %1)"));
//! ```

pub mod calibrate;
pub mod compiler;
pub mod dot;
pub mod io;

pub use compiler::{Backend, CompiledModel, Compiler, Timings};

pub use kiln_frontend as frontend;
pub use kiln_cranelift as cranelift;
pub use kiln_ir as ir;
pub use kiln_passes as passes;

use std::path::{Path, PathBuf};

/// Everything that can go wrong in kiln, with the file, node or input at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ir(#[from] kiln_ir::Error),
    #[error(transparent)]
    Frontend(#[from] kiln_frontend::FrontendError),
    #[error(transparent)]
    Pass(#[from] kiln_passes::PassError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    /// Code generation or native execution failed.
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The model formats kiln reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    Onnx,
    Kir,
}

impl ModelFormat {
    /// `.kir` files are text IR; everything else is read as ONNX.
    pub fn of(path: &Path) -> ModelFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some("kir") => ModelFormat::Kir,
            _ => ModelFormat::Onnx,
        }
    }
}

/// Loads a model (ONNX or `.kir`) into the graph IR and verifies it.
pub fn load_model(path: &Path) -> Result<kiln_ir::Graph> {
    load_model_with(path, &kiln_frontend::ImportOptions::default())
}

/// [`load_model`] with import options, such as values for symbolic input
/// dimensions (ONNX models only).
pub fn load_model_with(path: &Path, opts: &kiln_frontend::ImportOptions) -> Result<kiln_ir::Graph> {
    let g = match ModelFormat::of(path) {
        ModelFormat::Onnx => kiln_frontend::import_file_with(path, opts)?,
        ModelFormat::Kir if !opts.dims.is_empty() => {
            return Err(Error::Usage(format!(
                "{}: binding symbolic dimensions (--dim) needs an ONNX model; a .kir graph's types are as written",
                path.display()
            )))
        }
        ModelFormat::Kir => {
            let src = std::fs::read_to_string(path)
                .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
            kiln_ir::text::parse(&src, &path.display().to_string())?
        }
    };
    kiln_ir::verify::verify(&g)?;
    Ok(g)
}

/// The report `kiln info` prints: inputs, outputs, op histogram, parameter
/// count, and FLOPs and bytes estimates (see [`kiln_passes::stats`]).
pub fn info(g: &kiln_ir::Graph) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "graph {}", g.name);
    let _ = writeln!(s, "inputs:");
    for &v in &g.inputs {
        let _ = writeln!(s, "  {}: {}", g.display_name(v), g.ty(v));
    }
    let _ = writeln!(s, "outputs:");
    for &v in &g.outputs {
        let _ = writeln!(s, "  {}: {}", g.display_name(v), g.ty(v));
    }
    let _ = writeln!(s, "nodes: {}", g.nodes.len());
    let mut hist: Vec<_> = g.op_histogram().into_iter().collect();
    hist.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (op, n) in hist {
        let _ = writeln!(s, "  {:<24} {n}", op.name());
    }
    let st = kiln_passes::stats::graph_stats(g);
    let _ = writeln!(s, "parameters: {} ({} in {} constants)", g.param_count(), human_bytes(st.const_bytes), g.consts.len());
    let _ = writeln!(s, "flops: {} ({})", st.flops, human(st.flops as f64, "FLOP"));
    let _ = writeln!(s, "bytes moved (unfused): {}", human_bytes(st.bytes));
    if st.unknown_nodes > 0 {
        let _ = writeln!(
            s,
            "  ({} nodes with symbolic shapes not counted; bind the input dimensions with --dim NAME=N)",
            st.unknown_nodes
        );
    }
    s
}

fn human(x: f64, unit: &str) -> String {
    let (v, p) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{v:.2} {p}{unit}")
}

fn human_bytes(b: u64) -> String {
    let x = b as f64;
    if x >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", x / (1024.0 * 1024.0 * 1024.0))
    } else if x >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", x / (1024.0 * 1024.0))
    } else if x >= 1024.0 {
        format!("{:.2} KiB", x / 1024.0)
    } else {
        format!("{b} B")
    }
}
