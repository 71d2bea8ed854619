//! Tensor files: reading model inputs and writing outputs.
//!
//! Inputs are `.npy` files or ONNX `TensorProto` (`.pb`) files. A folder of
//! inputs is either in the ONNX test-data layout (`input_<i>.pb`, numbered in
//! graph-input order, inputs with an initializer already skipped) or holds one
//! `<input name>.npy` per input. Outputs are written as `<output name>.npy`,
//! with characters outside `[A-Za-z0-9._-]` replaced by `_`.

use crate::{Error, Result};
use kiln_ir::{Graph, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Reads one tensor from a `.npy` or `.pb` file (by extension; `.npy` magic is also sniffed).
pub fn read_tensor(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let is_npy = bytes.starts_with(b"\x93NUMPY")
        || path.extension().and_then(|e| e.to_str()) == Some("npy");
    if is_npy {
        kiln_ir::npy::read(&bytes).map_err(|e| Error::File { path: path.to_path_buf(), msg: e.to_string() })
    } else {
        let (_, t) = kiln_frontend::read_tensor_pb(path)?;
        Ok(t)
    }
}

/// Writes a tensor as `.npy`.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    std::fs::write(path, kiln_ir::npy::write(t)).map_err(io_err(path))
}

/// A file name for an output called `name`: `[A-Za-z0-9._-]` kept, the rest `_`.
pub fn sanitize_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        format!("_{s}")
    } else {
        s
    }
}

/// Gathers a graph's runtime inputs from a folder (`--inputs`) and from
/// `NAME=FILE` pairs (`--input`, which override the folder). Returns them in
/// graph-input order; a missing input is an error naming it.
pub fn collect_inputs(g: &Graph, dir: Option<&Path>, pairs: &[(String, PathBuf)]) -> Result<Vec<Tensor>> {
    let names: Vec<String> = g.inputs.iter().map(|&v| g.display_name(v)).collect();
    let mut found: BTreeMap<usize, Tensor> = BTreeMap::new();
    if let Some(dir) = dir {
        if !dir.is_dir() {
            return Err(Error::File { path: dir.to_path_buf(), msg: "not a directory".into() });
        }
        for (i, name) in names.iter().enumerate() {
            let pb = dir.join(format!("input_{i}.pb"));
            let npy = dir.join(format!("{}.npy", sanitize_name(name)));
            if pb.is_file() {
                found.insert(i, read_tensor(&pb)?);
            } else if npy.is_file() {
                found.insert(i, read_tensor(&npy)?);
            }
        }
    }
    for (name, file) in pairs {
        let i = names.iter().position(|n| n == name).ok_or_else(|| {
            Error::Usage(format!(
                "--input {name}=...: the model has no input named `{name}` (its inputs: {})",
                names.join(", ")
            ))
        })?;
        found.insert(i, read_tensor(file)?);
    }
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        match found.remove(&i) {
            Some(t) => out.push(t),
            None => {
                let ty = g.ty(g.inputs[i]);
                return Err(Error::Usage(format!(
                    "missing input `{name}` ({ty}): give it with --input {name}=FILE.npy or --inputs DIR"
                )));
            }
        }
    }
    Ok(out)
}

/// Writes one `<output name>.npy` per graph output into `dir` (created if
/// needed). Returns the paths written.
pub fn write_outputs(g: &Graph, outputs: &[Tensor], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut paths = Vec::new();
    for (&v, t) in g.outputs.iter().zip(outputs) {
        let p = dir.join(format!("{}.npy", sanitize_name(&g.display_name(v))));
        write_npy(&p, t)?;
        paths.push(p);
    }
    Ok(paths)
}

/// A one-line summary of a tensor: type, a few values, and min/mean/max for numbers.
pub fn summarize(t: &Tensor) -> String {
    let vals = t.to_f64_vec();
    let shown: Vec<String> = vals.iter().take(6).map(|v| format_num(*v, t.dtype())).collect();
    let more = if vals.len() > 6 { ", ..." } else { "" };
    let mut s = format!("{} [{}{}]", t.ty(), shown.join(", "), more);
    if !vals.is_empty() && t.dtype().is_numeric() {
        let min = vals.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        s += &format!("  min {} mean {:.6} max {}", format_num(min, t.dtype()), mean, format_num(max, t.dtype()));
    }
    s
}

fn format_num(v: f64, d: kiln_ir::DType) -> String {
    if d.is_float() {
        format!("{v:.6}")
    } else if d == kiln_ir::DType::Bool {
        (v != 0.0).to_string()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("logits"), "logits");
        assert_eq!(sanitize_name("/encoder/layer.0/out:0"), "_encoder_layer.0_out_0");
        assert_eq!(sanitize_name(""), "_");
        assert_eq!(sanitize_name(".."), "_..");
    }
}

/// Random inputs of each graph input's type, deterministic in `seed`:
/// integers in [0, 2) (valid as indices and masks), booleans alternating,
/// floats uniform in [-1, 1). Symbolic dimensions are an error.
pub fn random_inputs(g: &Graph, seed: u64) -> Result<Vec<Tensor>> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    g.inputs
        .iter()
        .map(|&v| {
            let ty = g.ty(v);
            let dims = ty.shape.fixed().ok_or_else(|| {
                Error::Usage(format!(
                    "input `{}` has the symbolic type {ty}: bind its dimensions with --dim NAME=N, or give inputs",
                    g.display_name(v)
                ))
            })?;
            let n: usize = dims.iter().product();
            let vals: Vec<f64> = (0..n)
                .map(|_| {
                    let r = next();
                    if ty.dtype.is_float() {
                        (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
                    } else {
                        (r >> 63) as f64
                    }
                })
                .collect();
            Ok(Tensor::from_f64s(ty.dtype, dims, &vals)?)
        })
        .collect()
}
