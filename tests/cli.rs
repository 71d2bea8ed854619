//! The CLI's behaviour on good and bad input: every failure is one clear
//! message naming the file, node, op or input at fault, and a non-zero exit.

mod common;
use common::*;

fn example() -> std::path::PathBuf {
    root().join("examples/tiny_bert")
}

fn assert_fails_with(o: &std::process::Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "kiln panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr should mention `{n}`:\n{err}");
    }
}

#[test]
fn runs_the_bundled_example() {
    let m = example().join("model.onnx");
    let o = kiln(&["run", m.to_str().unwrap(), "--inputs", example().join("test_data_set_0").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("last_hidden_state: f32[1,8,32]"), "{s}");
    assert!(s.contains("pooler_output: f32[1,32]"), "{s}");
}

#[test]
fn writes_npy_outputs_that_match_onnxruntime() {
    let out = temp_dir("example-out");
    let m = example().join("model.onnx");
    let o = kiln(&["run", m.to_str().unwrap(), "--inputs", example().join("test_data_set_0").to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (i, name) in ["last_hidden_state", "pooler_output"].iter().enumerate() {
        let got = read(&out.join(format!("{name}.npy")));
        let want = read(&example().join(format!("test_data_set_0/output_{i}.pb")));
        assert!(rel_error(&got, &want) <= 1e-4);
    }
}

#[test]
fn named_npy_inputs_work() {
    let dir = temp_dir("named-inputs");
    for (i, name) in ["input_ids", "attention_mask"].iter().enumerate() {
        let t = read(&example().join(format!("test_data_set_0/input_{i}.pb")));
        kiln::io::write_npy(&dir.join(format!("{name}.npy")), &t).unwrap();
    }
    let m = example().join("model.onnx");
    let o = kiln(&["run", m.to_str().unwrap(), "--inputs", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = kiln(&[
        "run",
        m.to_str().unwrap(),
        "--input",
        &format!("input_ids={}", dir.join("input_ids.npy").display()),
        "--input",
        &format!("attention_mask={}", dir.join("attention_mask.npy").display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn dump_and_info_work() {
    let m = example().join("model.onnx");
    let o = kiln(&["dump", m.to_str().unwrap(), "--stage", "graph"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("MatMul("), "{}", stdout(&o));
    let o = kiln(&["dump", m.to_str().unwrap(), "--stage", "onnx"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("MatMul"), "{}", stdout(&o));
    let o = kiln(&["info", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    for needle in ["inputs:", "input_ids", "outputs:", "MatMul", "parameters:", "flops:"] {
        assert!(s.contains(needle), "info lacks {needle}:\n{s}");
    }
}

#[test]
fn a_full_dump_runs_like_the_model() {
    let dir = temp_dir("dump-run");
    let kir = dir.join("tiny.kir");
    let m = example().join("model.onnx");
    let o = kiln(&["dump", m.to_str().unwrap(), "--stage", "graph", "--full-constants", "-o", kir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let data = example().join("test_data_set_0");
    // bit for bit on the reference path; the optimizer may fuse the two differently
    let interp = ["--backend", "interp", "--no-opt"];
    let a = kiln(&[&["run", m.to_str().unwrap(), "--inputs", data.to_str().unwrap()][..], &interp].concat());
    let b = kiln(&[&["run", kir.to_str().unwrap(), "--inputs", data.to_str().unwrap()][..], &interp].concat());
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(stdout(&a), stdout(&b));
}

#[test]
fn garbage_model_is_a_clear_error() {
    let dir = temp_dir("garbage");
    let p = dir.join("garbage.onnx");
    std::fs::write(&p, b"this is not a protobuf \xff\xff\xff\xff").unwrap();
    assert_fails_with(&kiln(&["info", p.to_str().unwrap()]), &["garbage.onnx"]);
}

#[test]
fn truncated_model_is_a_clear_error() {
    let dir = temp_dir("truncated");
    let bytes = std::fs::read(example().join("model.onnx")).unwrap();
    let p = dir.join("truncated.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails_with(&kiln(&["info", p.to_str().unwrap()]), &["truncated.onnx"]);
}

#[test]
fn missing_model_file_is_a_clear_error() {
    assert_fails_with(&kiln(&["info", "no/such/model.onnx"]), &["no/such/model.onnx"]);
}

#[test]
fn unknown_op_names_the_node_and_op() {
    let p = models_dir().join("unknown_op/model.onnx");
    assert_fails_with(&kiln(&["info", p.to_str().unwrap()]), &["fancy_node", "FancyOp"]);
}

#[test]
fn unsupported_opset_is_a_clear_error() {
    let p = models_dir().join("future_opset/model.onnx");
    assert_fails_with(&kiln(&["info", p.to_str().unwrap()]), &["opset", "999"]);
}

#[test]
fn missing_external_data_names_the_file() {
    let src = models_dir().join("ext_data");
    let dir = temp_dir("ext-missing");
    std::fs::copy(src.join("model.onnx"), dir.join("model.onnx")).unwrap();
    assert_fails_with(&kiln(&["info", dir.join("model.onnx").to_str().unwrap()]), &["weights.bin"]);
}

#[test]
fn missing_input_is_named() {
    let dir = temp_dir("missing-input");
    let t = read(&example().join("test_data_set_0/input_0.pb"));
    kiln::io::write_npy(&dir.join("input_ids.npy"), &t).unwrap();
    let m = example().join("model.onnx");
    assert_fails_with(&kiln(&["run", m.to_str().unwrap(), "--inputs", dir.to_str().unwrap()]), &["attention_mask"]);
}

#[test]
fn input_of_wrong_dtype_is_named() {
    let dir = temp_dir("wrong-dtype");
    let ids = kiln::ir::Tensor::from_vec(vec![1, 8], vec![1.0f32; 8]).unwrap();
    kiln::io::write_npy(&dir.join("input_ids.npy"), &ids).unwrap();
    let t = read(&example().join("test_data_set_0/input_1.pb"));
    kiln::io::write_npy(&dir.join("attention_mask.npy"), &t).unwrap();
    let m = example().join("model.onnx");
    assert_fails_with(&kiln(&["run", m.to_str().unwrap(), "--inputs", dir.to_str().unwrap()]), &["input_ids", "i64", "f32"]);
}

#[test]
fn input_of_wrong_rank_is_named() {
    let dir = temp_dir("wrong-rank");
    let ids = kiln::ir::Tensor::from_vec(vec![8], vec![1i64; 8]).unwrap();
    kiln::io::write_npy(&dir.join("ids.npy"), &ids).unwrap();
    let t = read(&example().join("test_data_set_0/input_1.pb"));
    kiln::io::write_npy(&dir.join("mask.npy"), &t).unwrap();
    let m = example().join("model.onnx");
    let o = kiln(&[
        "run",
        m.to_str().unwrap(),
        "--input",
        &format!("input_ids={}", dir.join("ids.npy").display()),
        "--input",
        &format!("attention_mask={}", dir.join("mask.npy").display()),
    ]);
    assert_fails_with(&o, &["input_ids", "[8]"]);
}

#[test]
fn inconsistent_symbolic_dims_are_named() {
    let dir = temp_dir("sym-dims");
    kiln::io::write_npy(&dir.join("input_ids.npy"), &kiln::ir::Tensor::from_vec(vec![1, 8], vec![1i64; 8]).unwrap()).unwrap();
    kiln::io::write_npy(&dir.join("attention_mask.npy"), &kiln::ir::Tensor::from_vec(vec![1, 6], vec![1i64; 6]).unwrap()).unwrap();
    let m = example().join("model.onnx");
    assert_fails_with(&kiln(&["run", m.to_str().unwrap(), "--inputs", dir.to_str().unwrap()]), &["attention_mask", "sequence"]);
}

#[test]
fn unknown_input_name_is_a_usage_error() {
    let m = example().join("model.onnx");
    assert_fails_with(&kiln(&["run", m.to_str().unwrap(), "--input", "nope=x.npy"]), &["nope", "input_ids"]);
}

#[test]
fn bad_npy_input_names_the_file() {
    let dir = temp_dir("bad-npy");
    std::fs::write(dir.join("input_ids.npy"), b"\x93NUMPY\x01\x00garbage").unwrap();
    let m = example().join("model.onnx");
    assert_fails_with(&kiln(&["run", m.to_str().unwrap(), "--inputs", dir.to_str().unwrap()]), &["input_ids.npy"]);
}

#[test]
fn kir_syntax_error_has_a_location() {
    let dir = temp_dir("bad-kir");
    let p = dir.join("bad.kir");
    std::fs::write(&p, "graph @g {\n  in %0: f32[2]\n  %1: f32[2] = Relu(%0\n  out %1\n}\n").unwrap();
    assert_fails_with(&kiln(&["info", p.to_str().unwrap()]), &["bad.kir:"]);
}

#[test]
fn help_documents_the_flags() {
    let o = kiln(&["run", "--help"]);
    let s = stdout(&o);
    for f in ["--backend", "--inputs", "--input", "--out", "Examples"] {
        assert!(s.contains(f), "run --help lacks {f}");
    }
    let s = stdout(&kiln(&["dump", "--help"]));
    for f in ["--stage", "onnx", "graph", "-o"] {
        assert!(s.contains(f), "dump --help lacks {f}");
    }
}

#[test]
fn dims_can_be_bound_to_count_flops() {
    let m = example().join("model.onnx");
    let o = kiln(&["info", m.to_str().unwrap()]);
    assert!(stdout(&o).contains("symbolic shapes not counted"), "{}", stdout(&o));
    let o = kiln(&["info", m.to_str().unwrap(), "--dim", "batch=1", "--dim", "sequence=8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("input_ids: i64[1,8]"), "{s}");
    assert!(!s.contains("not counted"), "{s}");
    assert!(!s.contains("flops: 0 "), "{s}");
    // the bound model still runs, and a wrong binding is caught at the input
    let data = example().join("test_data_set_0");
    let o = kiln(&["run", m.to_str().unwrap(), "--dim", "batch=1", "--dim", "sequence=8", "--inputs", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = kiln(&["run", m.to_str().unwrap(), "--dim", "batch=2", "--inputs", data.to_str().unwrap()]);
    assert_fails_with(&o, &["input_ids", "[1,8]"]);
    // a misspelt dimension lists the real ones
    assert_fails_with(&kiln(&["info", m.to_str().unwrap(), "--dim", "batsh=1"]), &["batsh", "batch, sequence"]);
}

#[test]
fn simplified_dump_folds_shape_arithmetic_and_still_runs() {
    let dir = temp_dir("simplified");
    let m = example().join("model.onnx");
    let kir = dir.join("s.kir");
    let dims = ["--dim", "batch=1", "--dim", "sequence=8"];
    let o = kiln(&[&["dump", m.to_str().unwrap(), "--stage", "simplified", "--full-constants", "-o", kir.to_str().unwrap()][..], &dims].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&kir).unwrap();
    assert!(!text.contains("= Shape("), "shape arithmetic should be folded:\n{text}");
    let data = example().join("test_data_set_0");
    // bit for bit on the reference path; the optimizer may fuse the two differently
    let interp = ["--backend", "interp", "--no-opt"];
    let a = kiln(&[&["run", m.to_str().unwrap(), "--inputs", data.to_str().unwrap()][..], &interp].concat());
    let b = kiln(&[&["run", kir.to_str().unwrap(), "--inputs", data.to_str().unwrap()][..], &interp].concat());
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(stdout(&a), stdout(&b));
}

#[test]
fn help_documents_the_compiler_flags() {
    for (cmd, flags) in [
        ("run", &["--backend", "cranelift", "interp", "--timings", "--no-opt", "--threads"][..]),
        ("bench", &["--runs", "--json", "median_ms", "min_ms", "max_ms", "compile_ms", "peak_bytes", "--backend", "--inputs"][..]),
        ("opt", &["--target", "--print-after", "--report", "kernels", "ops", "phases", "stop_reason", "egraph_nodes", "compile_ms", "--precision", "--max-rel-error", "--extractor", "--calibration"][..]),
        ("explain", &["--node", "--target"][..]),
        ("dump", &["egraph", "fused", "kernel", "clif", "--format", "dot"][..]),
        ("calibrate", &["-o", "--target"][..]),
    ] {
        let s = stdout(&kiln(&[cmd, "--help"]));
        for f in flags {
            assert!(s.contains(f), "{cmd} --help lacks {f}:\n{s}");
        }
    }
}

#[test]
fn the_backends_agree_on_the_example() {
    let m = example().join("model.onnx");
    let data = example().join("test_data_set_0");
    let dir = temp_dir("backends");
    for backend in ["interp", "cranelift"] {
        let out = dir.join(backend);
        let o = kiln(&["run", m.to_str().unwrap(), "--backend", backend, "--inputs", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "{backend}: {}", stderr(&o));
        let got = read(&out.join("last_hidden_state.npy"));
        let want = read(&data.join("output_0.pb"));
        assert!(rel_error(&got, &want) <= 1e-4, "{backend}: {}", rel_error(&got, &want));
    }
}

#[test]
fn opt_writes_the_report_and_a_graph_that_runs() {
    let dir = temp_dir("opt");
    let m = example().join("model.onnx");
    let report = dir.join("r.json");
    let kir = dir.join("o.kir");
    let o = kiln(&["opt", m.to_str().unwrap(), "--dim", "batch=1", "--dim", "sequence=8", "--target", "x86-64-avx512", "--report", report.to_str().unwrap(), "--full-constants", "-o", kir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = std::fs::read_to_string(&report).unwrap();
    for key in ["\"kernels\":", "\"ops\":", "\"phases\":", "\"name\":", "\"stop_reason\":", "\"iterations\":", "\"egraph_nodes\":", "\"ms\":", "\"compile_ms\":"] {
        assert!(r.contains(key), "report lacks {key}: {r}");
    }
    let text = std::fs::read_to_string(&kir).unwrap();
    assert!(text.contains("= Attention["), "{text}");
    assert!(text.contains("FusedMatMul"), "{text}");
    let data = example().join("test_data_set_0");
    let out = dir.join("out");
    let o = kiln(&["run", kir.to_str().unwrap(), "--backend", "interp", "--inputs", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(rel_error(&read(&out.join("last_hidden_state.npy")), &read(&data.join("output_0.pb"))) <= 1e-4);
    // an unknown target lists the known ones
    assert_fails_with(&kiln(&["opt", m.to_str().unwrap(), "--target", "z80"]), &["z80", "x86-64-avx512", "sm80"]);
}

#[test]
fn explain_names_the_kernel_and_the_alternatives() {
    let m = example().join("model.onnx");
    let o = kiln(&["explain", m.to_str().unwrap(), "--node", "/encoder/layer.0/attention/self/Softmax", "--dim", "batch=1", "--dim", "sequence=8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("Attention"), "{s}");
    assert!(s.contains("alternatives"), "{s}");
    assert_fails_with(&kiln(&["explain", m.to_str().unwrap(), "--node", "nope"]), &["no node named `nope`"]);
}

#[test]
fn bench_prints_json() {
    let m = example().join("model.onnx");
    let o = kiln(&["bench", m.to_str().unwrap(), "--dim", "batch=1", "--dim", "sequence=8", "--runs", "3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    for key in ["\"median_ms\":", "\"min_ms\":", "\"max_ms\":", "\"compile_ms\":", "\"peak_bytes\":"] {
        assert!(s.contains(key), "bench --json lacks {key}: {s}");
    }
    // symbolic dims without inputs: a usage error naming the input
    assert_fails_with(&kiln(&["bench", m.to_str().unwrap(), "--runs", "1"]), &["input_ids", "--dim"]);
}

#[test]
fn dumps_of_every_stage() {
    let m = example().join("model.onnx");
    let dims = ["--dim", "batch=1", "--dim", "sequence=8"];
    for (stage, needle) in [("egraph", "class"), ("fused", "FusedMatMul"), ("kernel", "kernel"), ("clif", "function")] {
        let o = kiln(&[&["dump", m.to_str().unwrap(), "--stage", stage][..], &dims].concat());
        assert!(o.status.success(), "{stage}: {}", stderr(&o));
        assert!(stdout(&o).contains(needle), "{stage} dump lacks `{needle}`");
    }
    let o = kiln(&[&["dump", m.to_str().unwrap(), "--stage", "fused", "--format", "dot"][..], &dims].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.starts_with("digraph") && s.contains("kernels"), "{s}");
    assert_fails_with(&kiln(&["dump", m.to_str().unwrap(), "--stage", "kernel"]), &["input_ids", "--dim"]);
}
