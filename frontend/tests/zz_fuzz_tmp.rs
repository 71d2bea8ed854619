mod common;
use common::*;
use kiln_ir::Tensor;

fn rich(opset: i64) -> kiln_frontend::proto::onnx::ModelProto {
    let g = graph(
        vec![
            node("Shape", &["x"], &["s"], vec![]),
            node("Gather", &["s", "zero"], &["n"], vec![a_int("axis", 0)]),
            node("Unsqueeze", &["n"], &["n1"], vec![a_ints("axes", &[0])]),
            node("Concat", &["n1", "minus1"], &["shape"], vec![a_int("axis", 0)]),
            node("Reshape", &["x", "shape"], &["r"], vec![]),
            node("Slice", &["r"], &["sl"], vec![a_ints("starts", &[0]), a_ints("ends", &[5]), a_ints("axes", &[1])]),
            node("Softmax", &["x"], &["sm"], vec![a_int("axis", 1)]),
            node("Pad", &["x"], &["p"], vec![a_ints("pads", &[0, 1, 0, 0, 1, 0]), a_float("value", 1.0)]),
            node("Split", &["x"], &["a", "b"], vec![a_int("axis", 1), a_ints("split", &[1, 2])]),
            node("TopK", &["x"], &["tv", "ti"], vec![a_int("k", 2)]),
            node("Constant", &[], &["cs"], vec![a_ints("value_ints", &[2, 3])]),
            node("ConstantOfShape", &["cs"], &["co"], vec![a_tensor("value", &Tensor::from_vec(vec![1], vec![2.0f32]).unwrap())]),
            node("Range", &["zero", "five", "one"], &["rg"], vec![]),
            node("Expand", &["co", "cs"], &["ex"], vec![]),
            node("Tile", &["co", "cs"], &["ti2"], vec![]),
            node("Transpose", &["x"], &["tr"], vec![a_ints("perm", &[2, 0, 1])]),
            node("Resize", &["x4", "sc"], &["rs"], vec![]),
            node("ReduceSum", &["x"], &["rsum"], vec![a_ints("axes", &[1])]),
            node("Squeeze", &["n1"], &["sq"], vec![a_ints("axes", &[0])]),
            node("Gather", &["co", "idx"], &["gi"], vec![a_int("axis", 1)]),
            node("Cast", &["co"], &["cc"], vec![a_int("to", 7)]),
            node("Where", &["cond", "co", "co"], &["wh"], vec![]),
        ],
        vec![f32s("x", &[2, 3, 4]), f32s("x4", &[1, 1, 2, 2])],
        vec![
            init("zero", &Tensor::scalar(0i64)),
            init("one", &Tensor::scalar(1i64)),
            init("five", &Tensor::scalar(5i64)),
            init("minus1", &i64s(&[-1])),
            init("sc", &Tensor::from_vec(vec![4], vec![1.0f32, 1.0, 2.0, 2.0]).unwrap()),
            init("idx", &i64s(&[0, 2, -1])),
            init("cond", &Tensor::from_vec(vec![3], vec![true, false, true]).unwrap()),
        ],
        vec![f32s("r", &[2, 12])],
    );
    model(opset, g)
}

#[test]
fn fuzz_rich() {
    let good = bytes(&rich(9));
    if let Err(e) = kiln_frontend::import_bytes(&good, None, "rich.onnx") { println!("base: {e}"); }
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
    let n: usize = std::env::var("FUZZ_N").ok().and_then(|s| s.parse().ok()).unwrap_or(20000);
    let mut ok = 0;
    for it in 0..n {
        let mut b = good.clone();
        for _ in 0..(1 + next() % 3) {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        let r = std::panic::catch_unwind(|| kiln_frontend::import_bytes(&b, None, "f.onnx"));
        match r {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(_)) => {}
            Err(_) => {
                std::fs::write(format!("/tmp/fecheck/panic_{it}.onnx"), &b).unwrap();
                println!("PANIC at iteration {it}");
            }
        }
    }
    println!("{ok} of {n} imported");
}
