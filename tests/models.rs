//! End to end: models in the forms PyTorch's exporters produce and a
//! ResNet-50-class CNN, run through `kiln run` on the interpreter (optimized
//! graph) and on the Cranelift backend, against onnxruntime's outputs (made by
//! scripts/make_models.py), a QDQ-quantized model (interpreter only: the
//! backend has no quantized kernels yet), plus the text-IR round trip on each.

mod common;
use common::*;

/// The largest error we accept against onnxruntime, relative to the output's magnitude.
const MAX_REL_ERROR: f64 = 1e-4;

fn check_model(name: &str) {
    check_model_on(name, "interp");
}

fn check_model_on(name: &str, backend: &str) {
    let dir = models_dir().join(name);
    let out = temp_dir(&format!("{name}-{backend}"));
    let o = kiln(&[
        "run",
        "--backend",
        backend,
        dir.join("model.onnx").to_str().unwrap(),
        "--inputs",
        dir.join("test_data_set_0").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "kiln run --backend {backend} {name} failed:\n{}", stderr(&o));
    let g = kiln::load_model(&dir.join("model.onnx")).unwrap();
    for (i, &v) in g.outputs.iter().enumerate() {
        let want = read(&dir.join(format!("test_data_set_0/output_{i}.pb")));
        let got = read(&out.join(format!("{}.npy", kiln::io::sanitize_name(&g.display_name(v)))));
        let err = rel_error(&got, &want);
        println!("{name} ({backend}): output {} rel error {err:.2e}", g.display_name(v));
        assert!(err <= MAX_REL_ERROR, "{name} ({backend}): output {} differs from onnxruntime by {err:.2e}", g.display_name(v));
    }
    // the model survives print -> parse -> print, and parses back to the same graph
    let opts = kiln::ir::text::PrintOptions::lossless();
    let text = kiln::ir::text::print(&g, &opts);
    let back = kiln::ir::text::parse(&text, name).unwrap();
    assert_eq!(kiln::ir::text::print(&back, &opts), text, "{name}: text round trip changed the dump");
    assert!(back == g, "{name}: parse(print(g)) != g");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn bert_torchscript_export_matches_onnxruntime() {
    check_model("bert_torchscript");
}

#[test]
fn bert_dynamo_export_matches_onnxruntime() {
    check_model("bert_dynamo");
}

#[test]
fn minilm_sized_bert_matches_onnxruntime() {
    check_model("minilm");
}

#[test]
fn resnet50_matches_onnxruntime() {
    check_model("resnet50");
}

#[test]
fn external_data_is_read() {
    check_model("ext_data");
}

#[test]
fn qdq_quantized_model_matches_onnxruntime() {
    check_model("qdq");
}

#[test]
fn bert_torchscript_export_on_cranelift() {
    check_model_on("bert_torchscript", "cranelift");
}

#[test]
fn bert_dynamo_export_on_cranelift() {
    check_model_on("bert_dynamo", "cranelift");
}

#[test]
fn minilm_sized_bert_on_cranelift() {
    check_model_on("minilm", "cranelift");
}

#[test]
fn resnet50_on_cranelift() {
    check_model_on("resnet50", "cranelift");
}

#[test]
fn external_data_on_cranelift() {
    check_model_on("ext_data", "cranelift");
}
