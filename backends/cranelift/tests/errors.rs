//! Error paths and the runtime contract: input validation, constructs the
//! backend refuses (naming kernel and construct), concurrent runs, dumps.

mod common;

use kiln_cranelift::{compile, dump_clif, Error, Options};
use kiln_ir::kernel::text;
use kiln_ir::Tensor;

const ADD: &str = r#"
program "add" arena 0 {
  buffer b0 "x": f32[4,8] input 0
  buffer b1 "z": i32[8] input 1
  buffer b2: f32[4,8] output 0
  kernel "add_k" (b0 read, b1 read, b2 write) grid [v0 < 4] {
    store b2[v0 * 8] = add(load(b0, v0 * 8, 8), cast(f32, load(b1, 0, 8)))
  }
}
"#;

fn inputs() -> Vec<Tensor> {
    vec![
        Tensor::from_vec(vec![4, 8], (0..32).map(|i| i as f32).collect::<Vec<_>>()).unwrap(),
        Tensor::from_vec(vec![8], (0..8).collect::<Vec<i32>>()).unwrap(),
    ]
}

#[test]
fn inputs_are_validated_by_count_dtype_and_shape() {
    let exe = compile(&text::parse(ADD).unwrap(), &Options::default()).unwrap();
    let e = exe.run(&inputs()[..1]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InputCount {
                expected: 2,
                given: 1
            }
        ),
        "{e}"
    );
    let mut bad = inputs();
    bad[1] = Tensor::from_vec(vec![8], vec![0f32; 8]).unwrap();
    let e = exe.run(&bad).unwrap_err().to_string();
    assert!(
        e.contains("input 1") && e.contains("`z`") && e.contains("i32") && e.contains("f32"),
        "{e}"
    );
    let mut bad = inputs();
    bad[0] = Tensor::from_vec(vec![8, 4], vec![0f32; 32]).unwrap();
    let e = exe.run(&bad).unwrap_err().to_string();
    assert!(
        e.contains("input 0") && e.contains("`x`") && e.contains("[4, 8]") && e.contains("[8, 4]"),
        "{e}"
    );
}

#[test]
fn values_crossing_a_barrier_with_block_axes_are_refused() {
    let src = r#"
program "cross" arena 0 {
  buffer b0 "x": f32[8] input 0
  buffer b1: f32[8] output 0
  kernel "crossing" (b0 read, b1 write) grid [v0 < 2, v1 < 4 block] {
    let v2 = load(b0, v0 * 4 + v1, 1)
    barrier
    store b1[v0 * 4 + v1] = v2
  }
}
"#;
    let p = text::parse(src).unwrap();
    kiln_ir::kernel::verify::verify(&p).unwrap();
    let e = compile(&p, &Options::default()).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    let s = e.to_string();
    assert!(
        s.contains("crossing") && s.contains("v2") && s.contains("barrier"),
        "{s}"
    );
}

#[test]
fn programs_failing_verification_are_refused() {
    let src = ADD.replace("load(b1, 0, 8)", "load(b1, 1, 8)");
    let e = compile(&text::parse(&src).unwrap(), &Options::default()).unwrap_err();
    assert!(matches!(e, Error::Verify(_)), "{e}");
}

#[test]
fn runs_concurrently_from_many_threads() {
    let exe = compile(
        &text::parse(ADD).unwrap(),
        &Options {
            threads: 3,
            ..Options::default()
        },
    )
    .unwrap();
    let want = kiln_ir::kernel::interp::run(&text::parse(ADD).unwrap(), &inputs()).unwrap();
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                for _ in 0..50 {
                    let got = exe.run(&inputs()).unwrap();
                    assert!(got[0].bit_eq(&want[0]));
                }
            });
        }
    });
}

#[test]
fn clif_dump_names_every_kernel() {
    let s = dump_clif(&text::parse(ADD).unwrap()).unwrap();
    assert!(s.contains("; kernel \"add_k\""), "{s}");
    assert!(s.contains("f32x4") && s.contains("fcvt_from_sint"), "{s}");
}

#[test]
fn timings_and_peak_bytes_are_reported() {
    let src = r#"
program "arena" arena 128 {
  buffer b0 "x": f32[16] input 0
  buffer b1: f32[16] temp @64
  buffer b2: f32[16] output 0
  kernel "a" (b0 read, b1 write) grid [] {
    store b1[0] = load(b0, 0, 16)
  }
  kernel "b" (b1 read, b2 write) grid [] {
    store b2[0] = load(b1, 0, 16)
  }
}
"#;
    let exe = compile(&text::parse(src).unwrap(), &Options::default()).unwrap();
    assert_eq!(exe.peak_bytes(), 128);
    let t = exe.timings();
    assert_eq!(t.kernels, 2);
    assert!(t.cranelift_compile > std::time::Duration::ZERO);
}

#[test]
fn fast_exp_is_within_its_tolerance() {
    let src = r#"
program "exp" arena 0 {
  buffer b0 "x": f32[4096] input 0
  buffer b1: f32[4096] output 0
  kernel "exp" (b0 read, b1 write) grid [v0 < 1024] {
    store b1[v0 * 4] = exp(load(b0, v0 * 4, 4))
  }
}
"#;
    let p = text::parse(src).unwrap();
    // -87..88 (normal results), plus specials.
    let mut xs: Vec<f32> = (0..4090)
        .map(|i| -87.0 + 175.0 * i as f32 / 4090.0)
        .collect();
    xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 100.0]);
    let ins = vec![Tensor::from_vec(vec![4096], xs).unwrap()];
    let opts = Options {
        fast_exp: true,
        ..Options::default()
    };
    common::check_program_with(&p, &ins, &opts, common::FAST_EXP_ULP).unwrap();
    assert!(
        dump_clif(&p).unwrap().contains("call"),
        "default exp calls libm"
    );
}
