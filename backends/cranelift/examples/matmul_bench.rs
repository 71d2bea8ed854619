//! f32 MatMul through the scheduler and Cranelift, in GFLOP/s.
//!
//! `cargo run --release -p kiln-cranelift --example matmul_bench -- [M K N] [--threads T] [--runs R]`
//! (default 256 512 1024; weights as a graph input and as a constant,
//! which the scheduler pre-packs into panels).

use kiln_cranelift::{compile, Options};
use kiln_ir::Tensor;
use kiln_passes::schedule;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dims = vec![];
    let mut threads = Options::default().threads;
    let mut runs = 20;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--threads" => {
                threads = args[i + 1].parse().expect("threads");
                i += 1;
            }
            "--runs" => {
                runs = args[i + 1].parse().expect("runs");
                i += 1;
            }
            a => dims.push(a.parse::<usize>().expect("dimension")),
        }
        i += 1;
    }
    let (m, k, n) = if dims.len() == 3 {
        (dims[0], dims[1], dims[2])
    } else {
        (256, 512, 1024)
    };
    let x = Tensor::from_vec(
        vec![m, k],
        (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
        .collect();
    for constant in [false, true] {
        let src = if constant {
            let vals: Vec<String> = w.iter().map(|v| format!("{v:?}")).collect();
            format!(
                "graph @mm {{\n in %0: f32[{m},{k}]\n const %1: f32[{k},{n}] = [{}]\n %2: f32[{m},{n}] = MatMul(%0, %1) @mm\n out %2\n}}",
                vals.join(", ")
            )
        } else {
            format!("graph @mm {{\n in %0: f32[{m},{k}]\n in %1: f32[{k},{n}]\n %2: f32[{m},{n}] = MatMul(%0, %1) @mm\n out %2\n}}")
        };
        let g = kiln_ir::text::parse(&src, "bench").expect("graph");
        let t0 = Instant::now();
        let mut p = schedule::lower(&g, &schedule::Options::default()).expect("lower");
        kiln_passes::memplan::plan(&mut p);
        let t1 = Instant::now();
        let exe = compile(
            &p,
            &Options {
                threads,
                ..Options::default()
            },
        )
        .expect("compile");
        let t2 = Instant::now();
        let ins = if constant {
            vec![x.clone()]
        } else {
            vec![x.clone(), Tensor::from_vec(vec![k, n], w.clone()).unwrap()]
        };
        exe.run(&ins).expect("warm-up");
        let mut times = Vec::new();
        for _ in 0..runs {
            let s = Instant::now();
            std::hint::black_box(exe.run(&ins).expect("run"));
            times.push(s.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = times[times.len() / 2];
        let flops = 2.0 * (m * k * n) as f64;
        println!(
            "matmul {m}x{k}x{n} weights={}: median {:.3} ms, best {:.3} ms, {:.1} GFLOP/s (median), {:.1} GFLOP/s (best); threads {}; schedule {:.1} ms, cranelift {:.1} ms (clif {:.1} ms)",
            if constant { "const(packed)" } else { "input" },
            med * 1e3,
            times[0] * 1e3,
            flops / med / 1e9,
            flops / times[0] / 1e9,
            exe.threads(),
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            exe.timings().clif_build.as_secs_f64() * 1e3,
        );
    }
}
