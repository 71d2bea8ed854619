//! MatMul through the whole native path (schedule → Cranelift JIT), square
//! sizes 256..2048 with a constant (pre-packed) B: checks the cache-blocked
//! schedule against the reference interpreter (small sizes) and against the
//! unblocked schedule (bit for bit: both accumulate every element in K
//! order), and prints GFLOP/s of both, single-threaded and on every core.
//!
//! Run with `cargo test --release --test matmul_native -- --nocapture` for
//! meaningful numbers (the JIT-compiled code is the same in a debug build,
//! but the set-up is slower). `KILN_MATMUL_SIZES=256,512` picks the sizes.

use kiln_ir::kernel::Program;
use kiln_ir::{Attrs, DType, Graph, Op, Tensor, TensorType};
use kiln_passes::schedule::{self, Options};
use std::time::Instant;

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `Y = X · W` with X an input `[n, n]` and W a constant `[n, n]`.
fn graph(n: usize) -> Graph {
    let ty = TensorType::new(DType::F32, vec![n, n]);
    let mut g = Graph::new("matmul");
    let x = g.add_input("x", ty.clone());
    let w = g.add_const(
        Some("w".into()),
        Tensor::from_vec(vec![n, n], rand(n * n, 7)).unwrap(),
    );
    let y = g.add_node(
        "mm",
        Op::MatMul,
        Attrs::new(),
        vec![Some(x), Some(w)],
        vec![(Some("y".into()), ty)],
    );
    g.outputs.push(y[0]);
    g
}

/// The default blocking, or `KILN_MATMUL_BLOCK=mc,nc,kc`.
fn blocked() -> Options {
    let v: Vec<usize> = std::env::var("KILN_MATMUL_BLOCK")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default();
    match v.as_slice() {
        [mc, nc, kc] => Options {
            mc: *mc,
            nc: *nc,
            kc: *kc,
            ..Options::default()
        },
        _ => Options::default(),
    }
}

fn unblocked() -> Options {
    Options {
        mc: 1 << 30,
        nc: 1 << 30,
        kc: 1 << 30,
        ..Options::default()
    }
}

/// Best-of-`reps` seconds per run, and the outputs.
fn time(p: &Program, x: &Tensor, threads: usize, reps: usize) -> (f64, Tensor) {
    let copts = kiln_cranelift::Options {
        threads,
        ..Default::default()
    };
    let exe = kiln_cranelift::compile(p, &copts).unwrap_or_else(|e| panic!("{e}"));
    let mut out = exe
        .run(std::slice::from_ref(x))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        out = exe.run(std::slice::from_ref(x)).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, out.remove(0))
}

#[test]
fn matmul_native_gflops() {
    let sizes: Vec<usize> = std::env::var("KILN_MATMUL_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 512, 1024, 2048]);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("MatMul f32 [n,n]·[n,n] (B constant, packed), GFLOP/s, best of 3");
    println!(
        "{:>6} {:>14} {:>14} {:>14} {:>14}",
        "n",
        "blocked 1t",
        "unblocked 1t",
        format!("blocked {cores}t"),
        format!("unblocked {cores}t")
    );
    for n in sizes {
        let g = graph(n);
        let pb = schedule::lower(&g, &blocked()).unwrap_or_else(|e| panic!("{e}"));
        let pu = schedule::lower(&g, &unblocked()).unwrap_or_else(|e| panic!("{e}"));
        let x = Tensor::from_vec(vec![n, n], rand(n * n, 3)).unwrap();
        let flops = 2.0 * (n as f64).powi(3);
        let reps = if n >= 2048 { 1 } else { 3 };
        let (tb1, yb) = time(&pb, &x, 1, reps);
        let (tu1, yu) = time(&pu, &x, 1, reps);
        let (tbn, ybn) = time(&pb, &x, cores, reps);
        let (tun, _) = time(&pu, &x, cores, reps);
        assert!(yb.bit_eq(&yu), "n={n}: blocking changed the result");
        assert!(yb.bit_eq(&ybn), "n={n}: threads changed the result");
        if n <= 512 {
            let want = kiln_ir::interp::run(&g, std::slice::from_ref(&x))
                .unwrap()
                .remove(0);
            for (a, b) in yb.to_f64_vec().iter().zip(want.to_f64_vec()) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "n={n}: {a} vs {b}");
            }
        }
        let gf = |t: f64| flops / t / 1e9;
        println!(
            "{n:>6} {:>14.2} {:>14.2} {:>14.2} {:>14.2}",
            gf(tb1),
            gf(tu1),
            gf(tbn),
            gf(tun)
        );
    }
}

/// The Conv, pool and channel-norm schedules through Cranelift agree with the
/// reference interpreter (every kernel-IR construct they emit compiles).
#[test]
fn conv_pool_norm_native_match_the_reference() {
    let src = r#"graph @cnn {
 in %0 "x": f32[2,6,13,12]
 in %1 "w": f32[8,6,3,3]
 in %2 "b": f32[8]
 in %3 "dw": f32[8,1,3,3]
 in %4 "s": f32[8]
 in %5 "w1": f32[16,8,1,1]
 in %6 "bias": f32[16,1,1]
 %7: f32[2,8,7,6] = Conv[pads=[1,1,1,1], strides=[2,2]](%0, %1, %2) @conv
 %8: f32[2,8,7,6] = FusedConv[epilogue="Relu(%0)", group=8, pads=[1,1,1,1]](%7, %3) @dw
 %9: f32[2,8,7,6] = InstanceNormalization(%8, %4, %2) @inorm
 %10: f32[2,8,7,6] = GroupNormalization[num_groups=2](%9, %4, %2) @gnorm
 %11: f32[2,16,7,6] = FusedConv[epilogue="Add(Add(%0, %1), %2)"](%10, %5, %6, %6) @pw
 %12: f32[2,16,4,3] = MaxPool[kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]](%11) @mp
 %13: f32[2,16,4,3] = AveragePool[kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1], count_include_pad=1](%11) @ap
 %14: f32[2,16,1,1] = GlobalAveragePool(%12) @gap
 %15: f32[2,16,1,1] = GlobalMaxPool(%13) @gmp
 out %11, %12, %13, %14, %15
}"#;
    let g = kiln_ir::text::parse(src, "<cnn>").unwrap_or_else(|e| panic!("{e}"));
    let inputs: Vec<Tensor> = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let dims = g.ty(v).shape.fixed().unwrap();
            let n = dims.iter().product();
            Tensor::from_vec(dims, rand(n, 100 + i as u64)).unwrap()
        })
        .collect();
    let want = kiln_ir::interp::run(&g, &inputs).unwrap_or_else(|e| panic!("{e}"));
    for opts in [
        Options::default(),
        Options {
            mc: 8,
            nc: 16,
            kc: 8,
            ..Options::default()
        },
    ] {
        let p = schedule::lower(&g, &opts).unwrap_or_else(|e| panic!("{e}"));
        let exe = kiln_cranelift::compile(&p, &kiln_cranelift::Options::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let got = exe.run(&inputs).unwrap_or_else(|e| panic!("{e}"));
        let interp = kiln_ir::kernel::interp::run(&p, &inputs).unwrap();
        for (k, ((a, b), c)) in got.iter().zip(&want).zip(&interp).enumerate() {
            assert!(
                a.bit_eq(c),
                "output {k}: native and kernel interpreter differ"
            );
            for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "output {k}: {x} vs {y}"
                );
            }
        }
    }
}

/// Instruction-count harness, ignored by default: compiles the blocked
/// schedule (`KILN_MATMUL_BLOCK`) of one `n`, runs it once, then `reps` more
/// times on one thread and nothing else (no reference interpreter), so that
/// `KILN_MATMUL_PROFILE=n,reps valgrind --tool=callgrind <test binary>
/// --ignored matmul_native_profile` minus the same with `n,0` is the
/// instruction count of `reps` runs of the kernel (likewise with
/// `perf stat -e instructions:u` where counters exist). Prints the best time.
/// With `KILN_MATMUL_PROFILE_CHECK` set it also checks the result against the
/// unblocked schedule, bit for bit.
#[test]
#[ignore]
fn matmul_native_profile() {
    let v: Vec<usize> = std::env::var("KILN_MATMUL_PROFILE")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default();
    let (n, reps) = match v.as_slice() {
        [n, reps] => (*n, *reps),
        [n] => (*n, 3),
        _ => (256, 3),
    };
    let g = graph(n);
    let p = schedule::lower(&g, &blocked()).unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::from_vec(vec![n, n], rand(n * n, 3)).unwrap();
    let (t, y) = time(&p, &x, 1, reps);
    if std::env::var("KILN_MATMUL_PROFILE_CHECK").is_ok() {
        let pu = schedule::lower(&g, &unblocked()).unwrap_or_else(|e| panic!("{e}"));
        let (_, yu) = time(&pu, &x, 1, 0);
        assert!(y.bit_eq(&yu), "n={n}: blocking changed the result");
    }
    println!(
        "n={n} reps={reps}: best {:.3} ms, {:.2} GFLOP/s",
        t * 1e3,
        2.0 * (n as f64).powi(3) / t / 1e9
    );
}
