//! The classic simplification pipeline: [`simplify`] runs the named stages
//! [`STAGES`] in a fixed order, `const_fold → reinfer → cse → dce`, and
//! repeats the sequence until one round changes nothing (or
//! [`Options::max_rounds`] is reached; the report says which).
//!
//! Why this order: folding turns shape arithmetic into constants; inference
//! then makes the shapes downstream static, which lets the next round fold
//! `Shape` of them; CSE merges the identical constants folding produced and
//! the nodes that use them; DCE removes what nothing needs any more.
//!
//! Each stage is timed and reported ([`Report`]), and an observer sees the
//! graph after every stage (for `--print-after=<stage>` style dumps). With
//! [`Options::verify`] (on in debug builds) [`kiln_ir::verify::verify`] runs
//! after every stage, and a failure names the stage.
//!
//! Deliberately not done: anything beyond the classic passes (algebraic
//! rewrites and fusion come with the e-graph, later).
//!
//! Requires: a graph that verifies (checked first, in every build: a graph
//! that does not is an error). Establishes: what each pass establishes, at
//! once, when the report says it converged.

use crate::error::{PassError, Result};
use kiln_ir::Graph;
use std::fmt;
use std::time::Instant;

/// A stage: a pass that returns how many edits it made.
pub type Pass = fn(&mut Graph) -> Result<usize>;

/// The stages of [`simplify`], in order.
pub const STAGES: [(&str, Pass); 4] = [
    (crate::const_fold::PASS, crate::const_fold::const_fold),
    (crate::reinfer::PASS, crate::reinfer::reinfer),
    (crate::cse::PASS, crate::cse::cse),
    (crate::dce::PASS, crate::dce::dce),
];

/// Pipeline settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// How many rounds of all stages at most (a round that changes nothing ends it sooner).
    pub max_rounds: usize,
    /// Verify the graph after each stage.
    pub verify: bool,
}

impl Default for Options {
    /// Up to 1000 rounds (a fixed point in practice); verification in debug
    /// builds. Exporter graphs need many: PyTorch's TorchScript form takes the
    /// `Shape` of each layer's output to build the next layer's Reshape, so
    /// binding `batch`/`sequence` after import makes one more layer static
    /// per round (fold → re-infer), and a 24-layer model needs ~30 rounds.
    fn default() -> Options {
        Options {
            max_rounds: 1000,
            verify: cfg!(debug_assertions),
        }
    }
}

/// One stage run.
#[derive(Clone, Debug, PartialEq)]
pub struct StageReport {
    /// 1-based.
    pub round: usize,
    pub stage: &'static str,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// The pass's edit count (nodes folded, types tightened, merges, nodes deleted).
    pub edits: usize,
    pub ms: f64,
}

/// What [`simplify`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub stages: Vec<StageReport>,
    pub rounds: usize,
    /// Whether the last round changed nothing (false: stopped by `max_rounds`).
    pub converged: bool,
    pub nodes_before: usize,
    pub nodes_after: usize,
}

impl Report {
    /// Per stage name, in pipeline order: (name, edits, nodes removed, ms), summed over rounds.
    pub fn totals(&self) -> Vec<(&'static str, usize, isize, f64)> {
        STAGES
            .iter()
            .map(|&(name, _)| {
                self.stages.iter().filter(|s| s.stage == name).fold(
                    (name, 0, 0, 0.0),
                    |(n, e, d, t), s| {
                        (
                            n,
                            e + s.edits,
                            d + s.nodes_before as isize - s.nodes_after as isize,
                            t + s.ms,
                        )
                    },
                )
            })
            .collect()
    }

    pub fn total_ms(&self) -> f64 {
        self.stages.iter().map(|s| s.ms).sum()
    }
}

impl fmt::Display for Report {
    /// A small table: one line per stage run, then the totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>5}  {:<10} {:>7} {:>7} {:>7} {:>9}",
            "round", "stage", "before", "after", "edits", "ms"
        )?;
        for s in &self.stages {
            writeln!(
                f,
                "{:>5}  {:<10} {:>7} {:>7} {:>7} {:>9.2}",
                s.round, s.stage, s.nodes_before, s.nodes_after, s.edits, s.ms
            )?;
        }
        write!(
            f,
            "nodes {} -> {} in {} round(s), {:.2} ms{}",
            self.nodes_before,
            self.nodes_after,
            self.rounds,
            self.total_ms(),
            if self.converged {
                ""
            } else {
                " (round limit reached before a fixed point)"
            }
        )
    }
}

/// Simplifies `g` with the default [`Options`].
pub fn simplify(g: &mut Graph) -> Result<Report> {
    simplify_with(g, &Options::default(), |_, _| {})
}

/// Simplifies `g`, calling `after_stage` with each stage's report and the
/// graph it left.
pub fn simplify_with(
    g: &mut Graph,
    opts: &Options,
    mut after_stage: impl FnMut(&StageReport, &Graph),
) -> Result<Report> {
    // Every pass indexes values and nodes by the ids the graph holds: check them first.
    kiln_ir::verify::verify(g).map_err(|source| PassError::Graph {
        pass: "simplify",
        source,
    })?;
    let mut report = Report {
        nodes_before: g.nodes.len(),
        ..Report::default()
    };
    for round in 1..=opts.max_rounds {
        report.rounds = round;
        let mut edits = 0;
        for (stage, pass) in STAGES {
            let nodes_before = g.nodes.len();
            let t = Instant::now();
            let n = pass(g)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if opts.verify {
                kiln_ir::verify::verify(g).map_err(|source| PassError::Graph {
                    pass: stage,
                    source,
                })?;
            }
            let s = StageReport {
                round,
                stage,
                nodes_before,
                nodes_after: g.nodes.len(),
                edits: n,
                ms,
            };
            after_stage(&s, g);
            report.stages.push(s);
            edits += n;
        }
        if edits == 0 {
            report.converged = true;
            break;
        }
    }
    report.nodes_after = g.nodes.len();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use kiln_ir::Op;

    /// A BERT-like shape computation on a static input, a duplicated
    /// subexpression, and a dead branch.
    const SRC: &str = r#"
graph @g {
  in %0 "x": f32[2,3,4]
  const %1: i64[] = 0
  const %2: i64[] = 1
  const %3: i64[1] = [0]
  const %4: i64[1] = [-1]
  %5: i64[3] = Shape(%0)
  %6: i64[] = Gather[axis=0](%5, %1)
  %7: i64[] = Gather[axis=0](%5, %2)
  %8: i64[] = Mul(%6, %7)
  %9: i64[1] = Unsqueeze(%8, %3)
  %10: i64[2] = Concat[axis=0](%9, %4)
  %11: f32[?Reshape,?Reshape] = Reshape(%0, %10)
  %12: i64[2] = Shape(%11)
  %13: f32[?ConstantOfShape,?ConstantOfShape] = ConstantOfShape[value=tensor<f32[1]> [0.5]](%12)
  %14: f32[?Add,?Add] = Add(%11, %13)
  %15: f32[?Reshape,?Reshape] = Relu(%11)
  %16: f32[?Reshape,?Reshape] = Relu(%11)
  %17: f32[?Add,?Add] = Mul(%15, %16)
  %18: f32[?Add,?Add] = Sub(%14, %17)
  %19: f32[2,3,4] = Exp(%0) @dead
  out %18
}"#;

    #[test]
    fn simplify_reaches_a_fixed_point_and_preserves_meaning() {
        let g = parse(SRC);
        let mut h = g.clone();
        let mut seen = Vec::new();
        let r = simplify_with(
            &mut h,
            &Options {
                max_rounds: 8,
                verify: true,
            },
            |s, _| seen.push(s.stage),
        )
        .unwrap();
        assert!(r.converged, "{r}");
        assert_eq!(r.nodes_before, 15);
        // Reshape, Add, Relu, Mul, Sub are left; the shape chain, the
        // ConstantOfShape, the duplicate Relu and the dead Exp are gone.
        let ops: Vec<Op> = h.nodes.iter().map(|n| n.op).collect();
        assert_eq!(
            ops,
            vec![Op::Reshape, Op::Add, Op::Relu, Op::Mul, Op::Sub],
            "{h}"
        );
        assert_eq!(r.nodes_after, 5);
        assert!(
            h.to_string().contains("f32[6,4] = Reshape"),
            "shapes are static now:\n{h}"
        );
        assert_eq!(seen.len(), r.stages.len());
        assert_eq!(&seen[..4], &["const_fold", "reinfer", "cse", "dce"]);
        assert_same_outputs(&g, &h);
        // a second simplify is one quiet round
        let r2 = simplify(&mut h).unwrap();
        assert_eq!((r2.rounds, r2.converged, r2.nodes_after), (1, true, 5));
        let totals = r.totals();
        assert_eq!(totals.len(), 4);
        assert!(r.to_string().contains("nodes 15 -> 5"), "{r}");
    }

    /// A random DAG of f32[2,3] values: inputs, constants, unary and
    /// binary elementwise nodes, exact duplicates of earlier nodes, subgraphs
    /// of constants only, nodes nothing uses, and outputs that are inputs,
    /// constants or repeated.
    fn random_graph(seed: u64) -> Graph {
        use kiln_ir::{Attrs, DType, Tensor, TensorType};
        let mut rng = Rng::new(seed);
        let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
        let ty = TensorType::new(DType::F32, vec![2, 3]);
        let mut g = Graph::new(format!("random_{seed}"));
        let mut vals = vec![g.add_input("x", ty.clone()), g.add_input("y", ty.clone())];
        for k in 0..3 {
            let data: Vec<f32> = (0..6)
                .map(|i| (i as f32 - 2.5) * (k as f32 + 0.5))
                .collect();
            vals.push(g.add_const(None, Tensor::from_vec(vec![2, 3], data).unwrap()));
        }
        let unary = [Op::Relu, Op::Neg, Op::Exp, Op::Tanh, Op::Abs, Op::Sigmoid];
        let binary = [Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Max, Op::Min];
        for i in 0..12 {
            let (op, inputs) = if i > 0 && pick(4) == 0 {
                let n = &g.nodes[pick(g.nodes.len())];
                (n.op, n.inputs.clone())
            } else if pick(2) == 0 {
                (unary[pick(unary.len())], vec![Some(vals[pick(vals.len())])])
            } else {
                let (a, b) = (vals[pick(vals.len())], vals[pick(vals.len())]);
                (binary[pick(binary.len())], vec![Some(a), Some(b)])
            };
            let out = g.add_node(
                format!("n{i}"),
                op,
                Attrs::new(),
                inputs,
                vec![(None, ty.clone())],
            );
            vals.push(out[0]);
        }
        g.outputs = (0..4).map(|_| vals[pick(vals.len())]).collect();
        g
    }

    #[test]
    fn simplify_preserves_random_graphs_bit_for_bit() {
        let mut work = [0usize; 4];
        for seed in 0..60 {
            let g = random_graph(seed);
            kiln_ir::verify::verify_types(&g).unwrap();
            let mut h = g.clone();
            let r = simplify(&mut h).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert!(r.converged, "seed {seed}: {r}");
            for (w, (_, edits, _, _)) in work.iter_mut().zip(r.totals()) {
                *w += edits;
            }
            assert_same_outputs(&g, &h);
            // the result is a fixed point of every pass
            for (name, pass) in STAGES {
                let mut k = h.clone();
                assert_eq!(
                    pass(&mut k).unwrap(),
                    0,
                    "seed {seed}: {name} still finds work\n{h}"
                );
                assert_eq!(k, h, "seed {seed}: {name}");
            }
            // no node is left with only constant operands, none is dead, none duplicated
            for n in &h.nodes {
                assert!(
                    n.op == Op::Identity
                        || n.inputs.iter().flatten().any(|v| !h.consts.contains_key(v)),
                    "seed {seed}: {} has only constant operands\n{h}",
                    n.name
                );
            }
        }
        // every stage had work to do somewhere (reinfer has none: all shapes are static)
        let [fold, _, cse, dce] = work;
        assert!(fold > 20 && cse > 20 && dce > 20, "{work:?}");
    }

    #[test]
    fn the_round_limit_is_reported() {
        let mut h = parse(SRC);
        let r = simplify_with(
            &mut h,
            &Options {
                max_rounds: 1,
                verify: true,
            },
            |_, _| {},
        )
        .unwrap();
        assert!(!r.converged);
        assert_eq!(r.rounds, 1);
        assert!(r.to_string().contains("round limit"));
    }

    #[test]
    fn a_broken_graph_is_refused_up_front() {
        let mut h = parse(SRC);
        h.nodes[0].inputs[0] = Some(kiln_ir::ValueId(999));
        let e = simplify(&mut h).unwrap_err();
        assert_eq!(e.pass(), "simplify");
        assert!(e.to_string().contains("%999 does not exist"), "{e}");
    }

    #[test]
    fn errors_name_the_stage_and_node() {
        let src = r#"
graph @g {
  const %0: f32[2] = [1, 2]
  %1: f32[3] = Neg(%0) @bad
  out %1
}"#;
        let mut h = parse(src);
        let e = simplify(&mut h).unwrap_err();
        assert_eq!(e.pass(), "const_fold");
        assert!(
            e.to_string().starts_with("const_fold: node `bad` (Neg)"),
            "{e}"
        );
    }
}
