//! Differential tests: random graphs, compiled by the whole pipeline (classic
//! passes, e-graph optimizer, schedules, memory planning, Cranelift), against
//! the reference interpreter on the unoptimized graph.
//!
//! Graphs are chains and diamonds of elementwise ops (unary and broadcasting
//! binary), MatMuls with constant weights, row reductions, Softmax and
//! Transposes over small odd shapes, so that fusion, epilogues, vector tails
//! and broadcasting index expressions all get exercised. Tolerance: 1e-4
//! relative to the output's largest magnitude (fusion and reassociation
//! change roundings; transcendentals are libm's in both).

use kiln::ir::Tensor;
use kiln::{Backend, Compiler};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Unary(&'static str),
    /// A binary op with an earlier value (index back from the newest) or a row constant.
    Binary(&'static str, usize, bool),
    MatMul,
    Softmax,
    ReduceSum,
    Transpose,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        prop::sample::select(vec!["Relu", "Tanh", "Sigmoid", "Neg", "Abs", "Gelu", "Erf"]).prop_map(Step::Unary),
        (prop::sample::select(vec!["Add", "Sub", "Mul", "Max", "Min"]), 0usize..4, any::<bool>())
            .prop_map(|(op, back, row)| Step::Binary(op, back, row)),
        Just(Step::MatMul),
        Just(Step::Softmax),
        Just(Step::ReduceSum),
        Just(Step::Transpose),
    ]
}

/// Builds the `.kir` text of a graph: input `x: f32[m, n]`, the steps, and the last value as output.
fn build(m: usize, n: usize, steps: &[Step], seed: u64) -> String {
    let mut lines = vec![format!("  in %0 \"x\": f32[{m},{n}]")];
    // (value id, rows, cols)
    let mut vals: Vec<(usize, usize, usize)> = vec![(0, m, n)];
    let mut next = 1;
    let mut rnd = seed;
    let mut consts = |len: usize| -> String {
        (0..len)
            .map(|_| {
                rnd = rnd.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                format!("{:.3}", ((rnd >> 40) as f64 / (1u64 << 24) as f64) * 2.0 - 1.0)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for s in steps {
        let &(cur, r, c) = vals.last().unwrap();
        match s {
            Step::Unary(op) => {
                lines.push(format!("  %{next}: f32[{r},{c}] = {op}(%{cur})"));
                vals.push((next, r, c));
                next += 1;
            }
            Step::Binary(op, back, row) => {
                let other = if *row {
                    let k = next;
                    lines.push(format!("  const %{k}: f32[{c}] = [{}]", consts(c)));
                    next += 1;
                    k
                } else {
                    // an earlier value of the same shape, else x itself when shapes agree, else a constant
                    match vals.iter().rev().skip(*back).find(|v| v.1 == r && v.2 == c) {
                        Some(v) => v.0,
                        None => {
                            let k = next;
                            lines.push(format!("  const %{k}: f32[{c}] = [{}]", consts(c)));
                            next += 1;
                            k
                        }
                    }
                };
                lines.push(format!("  %{next}: f32[{r},{c}] = {op}(%{cur}, %{other})"));
                vals.push((next, r, c));
                next += 1;
            }
            Step::MatMul => {
                let k = next;
                let out_c = (c % 5) + 3;
                lines.push(format!("  const %{k}: f32[{c},{out_c}] = [{}]", consts(c * out_c)));
                lines.push(format!("  %{}: f32[{r},{out_c}] = MatMul(%{cur}, %{k})", k + 1));
                vals.push((k + 1, r, out_c));
                next += 2;
            }
            Step::Softmax => {
                lines.push(format!("  %{next}: f32[{r},{c}] = Softmax(%{cur})"));
                vals.push((next, r, c));
                next += 1;
            }
            Step::ReduceSum => {
                let k = next;
                lines.push(format!("  const %{k}: i64[1] = [1]"));
                lines.push(format!("  %{}: f32[{r},1] = ReduceSum(%{cur}, %{k})", k + 1));
                vals.push((k + 1, r, 1));
                next += 2;
            }
            Step::Transpose => {
                lines.push(format!("  %{next}: f32[{c},{r}] = Transpose[perm=[1,0]](%{cur})"));
                vals.push((next, c, r));
                next += 1;
            }
        }
    }
    let last = vals.last().unwrap().0;
    format!("graph @random {{\n{}\n  out %{last}\n}}\n", lines.join("\n"))
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(&b).map(|(x, y)| if x.is_nan() && y.is_nan() { 0.0 } else { (x - y).abs() }).fold(0.0, f64::max) / scale
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn cranelift_agrees_with_the_interpreter(
        m in 1usize..7, n in 1usize..11, steps in prop::collection::vec(step(), 1..7), seed in any::<u64>()
    ) {
        let src = build(m, n, &steps, seed);
        let g = kiln::ir::text::parse(&src, "random.kir").map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
        let x: Vec<f32> = (0..m * n).map(|i| ((i as f32 * 0.37 + seed as f32 * 1e-9).sin()) * 2.0).collect();
        let x = Tensor::from_vec(vec![m, n], x).unwrap();
        let want = kiln::ir::interp::run(&g, &[x.clone()]).map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
        let native = Compiler::new().threads(2).compile(g.clone()).map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
        let got = native.run(&[x.clone()]).map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
        let err = rel_err(&got[0], &want[0]);
        prop_assert!(err <= 1e-4, "relative error {err:.2e}\n{src}\noptimized:\n{}", native.graph());
        // and the optimized graph on the interpreter
        let opt = Compiler::new().backend(Backend::Interp).compile(g).map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
        let got = opt.run(&[x]).map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
        let err = rel_err(&got[0], &want[0]);
        prop_assert!(err <= 1e-4, "optimized graph on the interpreter: relative error {err:.2e}\n{src}");
    }
}
