//! Helpers shared by kiln's integration tests.
#![allow(dead_code)]

use kiln::ir::Tensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folder of generated end-to-end models (`scripts/make_models.py build/models`,
/// run by `scripts/test.sh`). Panics with instructions when it is missing: a
/// missing suite must fail loudly, never pass silently.
pub fn models_dir() -> PathBuf {
    let d = std::env::var_os("KILN_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("build/models"));
    assert!(
        d.join("bert_torchscript/model.onnx").is_file(),
        "{} has no generated models: run scripts/test.sh (or `.venv/bin/python scripts/make_models.py build/models`) first",
        d.display()
    );
    d
}

/// Runs the `kiln` binary.
pub fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().expect("the kiln binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh, empty temporary folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// max |a - b| / max |b|: the error relative to the reference's magnitude.
pub fn rel_error(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.ty(), want.ty(), "type mismatch");
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let scale = w.iter().fold(0f64, |m, x| m.max(x.abs())).max(f64::MIN_POSITIVE);
    g.iter().zip(&w).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale
}

pub fn read(p: &Path) -> Tensor {
    kiln::io::read_tensor(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
