//! The library API: `kiln::Compiler` → `CompiledModel::run`, called many
//! times and from several threads, with inputs checked.

use kiln::ir::Tensor;
use kiln::{Backend, Compiler};
use std::path::PathBuf;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/tiny_bert/model.onnx")
}

fn inputs(seed: i64) -> Vec<Tensor> {
    let ids: Vec<i64> = (0..8).map(|i| (i * 7 + seed) % 50).collect();
    vec![
        Tensor::from_vec(vec![1, 8], ids).unwrap(),
        Tensor::from_vec(vec![1, 8], vec![1i64, 1, 1, 1, 1, 1, 1, 0]).unwrap(),
    ]
}

#[test]
fn runs_from_several_threads_and_agrees_with_the_interpreter() {
    let model = Compiler::new().dim("batch", 1).dim("sequence", 8).compile_file(&example()).unwrap();
    let reference = Compiler::new().backend(Backend::Interp).optimize(false).compile_file(&example()).unwrap();
    let want: Vec<Vec<Tensor>> = (0..4).map(|s| reference.run(&inputs(s)).unwrap()).collect();
    std::thread::scope(|sc| {
        for t in 0..4 {
            let (model, want) = (&model, &want);
            sc.spawn(move || {
                for _ in 0..3 {
                    let got = model.run(&inputs(t)).unwrap();
                    for (g, w) in got.iter().zip(&want[t as usize]) {
                        assert_eq!(g.shape(), w.shape());
                        let err = g.to_f64_vec().iter().zip(w.to_f64_vec()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                        assert!(err < 1e-4, "thread {t}: max abs error {err}");
                    }
                }
            });
        }
    });
    assert!(model.peak_bytes().is_some());
    let stages: Vec<&str> = model.timings().stages.iter().map(|s| s.0).collect();
    for s in ["import", "simplify", "optimize", "lower", "memplan", "codegen"] {
        assert!(stages.contains(&s), "no {s} stage in {stages:?}");
    }
}

#[test]
fn symbolic_models_compile_per_shape() {
    let model = Compiler::new().compile_file(&example()).unwrap();
    let a = model.run(&inputs(1)).unwrap();
    assert_eq!(a[0].shape(), &[1, 8, 32]);
    // batch 2 (the example's position table fixes the sequence at 8)
    let ids = Tensor::from_vec(vec![2, 8], (0..16).map(|i| i % 50).collect::<Vec<i64>>()).unwrap();
    let mask = Tensor::from_vec(vec![2, 8], vec![1i64; 16]).unwrap();
    let b = model.run(&[ids, mask]).unwrap();
    assert_eq!(b[0].shape(), &[2, 8, 32]);
    // a shape the model cannot take is an error naming the node, not a crash
    let ids = Tensor::from_vec(vec![1, 3], vec![1i64, 2, 3]).unwrap();
    let mask = Tensor::from_vec(vec![1, 3], vec![1i64; 3]).unwrap();
    let e = model.run(&[ids, mask]).unwrap_err().to_string();
    assert!(e.contains("/embeddings/Add"), "{e}");
}

#[test]
fn bad_inputs_are_errors_naming_the_input() {
    let model = Compiler::new().dim("batch", 1).dim("sequence", 8).compile_file(&example()).unwrap();
    let wrong_dtype = vec![Tensor::from_vec(vec![1, 8], vec![0.0f32; 8]).unwrap(), inputs(0).remove(1)];
    let e = model.run(&wrong_dtype).unwrap_err().to_string();
    assert!(e.contains("input_ids"), "{e}");
    let wrong_shape = vec![Tensor::from_vec(vec![1, 4], vec![0i64; 4]).unwrap(), inputs(0).remove(1)];
    let e = model.run(&wrong_shape).unwrap_err().to_string();
    assert!(e.contains("input_ids"), "{e}");
    let e = model.run(&inputs(0)[..1]).unwrap_err().to_string();
    assert!(e.contains("attention_mask") || e.contains("2"), "{e}");
}

#[test]
fn an_op_without_a_kernel_is_a_compile_error_naming_it() {
    // NonZero's output shape depends on the data (100 elements: too many to specialise on):
    // no static kernel, and no silent fallback to the interpreter
    let src = "graph @g {\n  in %0 \"x\": f32[100]\n  %1: i64[1,?NonZero] = NonZero(%0) @nz\n  out %1\n}";
    let g = kiln::ir::text::parse(src, "g.kir").unwrap();
    let model = Compiler::new().compile(g).unwrap();
    let e = model.run(&[Tensor::from_vec(vec![100], vec![1.0f32; 100]).unwrap()]).unwrap_err().to_string();
    assert!(e.contains("NonZero") || e.contains("static"), "{e}");
}
