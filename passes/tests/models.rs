//! End to end: [`kiln_passes::simplify`] on the generated models in
//! `build/models` (made by `scripts/make_models.py`, which `scripts/test.sh`
//! runs) changes no output bit on their test data, and the TorchScript BERT
//! export loses its shape arithmetic once its input dimensions are bound.
//!
//! Run with `--nocapture` to see the node counts and stage timings.

use kiln_frontend::{import_file, import_file_with, read_tensor_pb, ImportOptions};
use kiln_ir::{Graph, Op, Tensor};
use std::path::{Path, PathBuf};

/// Models that exist to test the frontend's errors: they do not import.
const NOT_IMPORTABLE: &[&str] = &["unknown_op", "future_opset"];
/// Models with a test of their own below.
const NAMED: &[&str] = &[
    "bert_torchscript",
    "bert_dynamo",
    "minilm",
    "resnet50",
    "qdq",
    "ext_data",
];

/// The generated models. A missing suite fails loudly, never passes silently.
fn models_dir() -> PathBuf {
    let d = std::env::var_os("KILN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/models"));
    assert!(
        d.join("bert_torchscript/model.onnx").is_file(),
        "{} has no generated models: run scripts/test.sh (or `.venv/bin/python scripts/make_models.py build/models`) first",
        d.display()
    );
    d
}

/// `test_data_set_0/input_<i>.pb`, in order.
fn test_inputs(dir: &Path) -> Vec<Tensor> {
    let data = dir.join("test_data_set_0");
    (0..)
        .map(|i| data.join(format!("input_{i}.pb")))
        .take_while(|p| p.is_file())
        .map(|p| {
            read_tensor_pb(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .1
        })
        .collect()
}

/// Simplifies `g` and checks it against the original on the model's test
/// data, bit for bit. Returns the simplified graph.
fn check_simplify(label: &str, dir: &Path, g: &Graph) -> Graph {
    let inputs = test_inputs(dir);
    assert!(
        !inputs.is_empty(),
        "{label}: no test inputs in {}",
        dir.display()
    );
    let want =
        kiln_ir::interp::run(g, &inputs).unwrap_or_else(|e| panic!("{label}: original: {e}"));
    let mut h = g.clone();
    let report = kiln_passes::simplify(&mut h).unwrap_or_else(|e| panic!("{label}: {e}"));
    println!("{label}:\n{report}");
    assert!(report.converged, "{label}: no fixed point\n{report}");
    kiln_ir::verify::verify_types(&h).unwrap_or_else(|e| panic!("{label}: {e}"));
    let names = |g: &Graph, vs: &[kiln_ir::ValueId]| -> Vec<String> {
        vs.iter().map(|&v| g.display_name(v)).collect()
    };
    assert_eq!(
        names(g, &g.inputs),
        names(&h, &h.inputs),
        "{label}: inputs changed"
    );
    assert_eq!(
        names(g, &g.outputs),
        names(&h, &h.outputs),
        "{label}: outputs changed"
    );
    let got =
        kiln_ir::interp::run(&h, &inputs).unwrap_or_else(|e| panic!("{label}: simplified: {e}"));
    for (k, (w, o)) in want.iter().zip(&got).enumerate() {
        assert!(
            w.bit_eq(o),
            "{label}: output {k} ({}) changed",
            g.display_name(g.outputs[k])
        );
    }
    assert!(h.nodes.len() <= g.nodes.len());
    println!("{label}: nodes {} -> {}", g.nodes.len(), h.nodes.len());
    h
}

fn check_model(name: &str) -> Graph {
    let dir = models_dir().join(name);
    let g = import_file(&dir.join("model.onnx")).unwrap_or_else(|e| panic!("{name}: {e}"));
    check_simplify(name, &dir, &g)
}

/// Nodes that compute on shapes: Shape and Size, and every node whose
/// operands are all shape-derived or constant (Gather, Unsqueeze, Concat on
/// a shape vector). A Reshape of data by a computed shape is not one.
fn shape_nodes(g: &Graph) -> Vec<String> {
    let mut derived = vec![false; g.values.len()];
    let mut found = Vec::new();
    for n in &g.nodes {
        let operands: Vec<_> = n.inputs.iter().flatten().collect();
        let is_shape = matches!(n.op, Op::Shape | Op::Size)
            || (operands.iter().any(|v| derived[v.index()])
                && operands
                    .iter()
                    .all(|v| derived[v.index()] || g.consts.contains_key(v)));
        if is_shape {
            n.outputs.iter().for_each(|v| derived[v.index()] = true);
            found.push(format!("{} ({})", n.name, n.op));
        }
    }
    found
}

#[test]
fn bert_torchscript_is_unchanged_in_meaning() {
    check_model("bert_torchscript");
}

/// Imports `name` with its symbolic input dimensions bound, simplifies it,
/// and checks that no shape arithmetic is left and every shape is static.
fn check_shape_arithmetic_folds(name: &str, dims: &[(&str, usize)]) {
    let dir = models_dir().join(name);
    let dims = dims.iter().map(|&(d, n)| (d.to_string(), n)).collect();
    let g = import_file_with(&dir.join("model.onnx"), &ImportOptions { dims })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let before = shape_nodes(&g);
    println!(
        "{name}: {} shape arithmetic nodes before simplify",
        before.len()
    );
    assert!(
        before.len() >= 10,
        "{name}: the export should compute shapes: {before:?}"
    );
    let h = check_simplify(&format!("{name} (dims bound)"), &dir, &g);
    assert_eq!(
        shape_nodes(&h),
        Vec::<String>::new(),
        "{name}: shape arithmetic is left:\n{h}"
    );
    assert!(
        h.values.iter().all(|v| v.ty.shape.is_fixed()),
        "{name}: a shape is not static:\n{h}"
    );
}

#[test]
fn bert_torchscript_with_bound_dims_loses_its_shape_arithmetic() {
    check_shape_arithmetic_folds("bert_torchscript", &[("batch", 1), ("sequence", 16)]);
}

#[test]
fn minilm_with_bound_dims_loses_its_shape_arithmetic() {
    check_shape_arithmetic_folds("minilm", &[("batch", 1), ("sequence", 128)]);
}

#[test]
fn bert_dynamo_is_unchanged_in_meaning() {
    check_model("bert_dynamo");
}

#[test]
fn minilm_is_unchanged_in_meaning() {
    check_model("minilm");
}

#[test]
fn resnet50_is_unchanged_in_meaning() {
    check_model("resnet50");
}

#[test]
fn qdq_is_unchanged_in_meaning_and_keeps_its_quantized_weights() {
    let h = check_model("qdq");
    let g = import_file(&models_dir().join("qdq/model.onnx")).unwrap();
    let dq = |g: &Graph| {
        g.nodes
            .iter()
            .filter(|n| n.op == Op::DequantizeLinear)
            .count()
    };
    assert_eq!(
        dq(&h),
        dq(&g),
        "weight DequantizeLinear nodes must not fold into f32 weights"
    );
}

#[test]
fn ext_data_is_unchanged_in_meaning() {
    check_model("ext_data");
}

/// Any other generated model (new ones included) is simplified and checked too.
#[test]
fn every_other_model_is_unchanged_in_meaning() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(models_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    for d in dirs {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        if NAMED.contains(&name.as_str()) {
            continue;
        }
        if NOT_IMPORTABLE.contains(&name.as_str()) {
            assert!(
                import_file(&d.join("model.onnx")).is_err(),
                "{name} was expected not to import"
            );
            continue;
        }
        check_model(&name);
    }
}
