//! Helpers for the passes' unit tests: parse a `.kir` graph, make random
//! inputs, and check that a pass preserved the graph's meaning by running
//! both graphs in the reference interpreter.

use kiln_ir::{DType, Dim, Graph, Op, Tensor};

/// Parses and verifies a test graph.
pub fn parse(src: &str) -> Graph {
    let g = kiln_ir::text::parse(src, "<test>").unwrap_or_else(|e| panic!("{e}"));
    kiln_ir::verify::verify(&g).unwrap_or_else(|e| panic!("{e}"));
    g
}

/// splitmix64: small, seedable, good enough for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Random inputs for `g`: symbolic dimensions are 3; floats are uniform in
/// [-2, 2), integers in [0, 3) (valid indices for small axes), bools fair.
pub fn random_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    g.inputs
        .iter()
        .map(|&v| {
            let ty = g.ty(v);
            let dims: Vec<usize> = ty
                .shape
                .0
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Sym(_) => 3,
                })
                .collect();
            let n: usize = dims.iter().product();
            let vals: Vec<f64> = (0..n)
                .map(|_| match ty.dtype {
                    d if d.is_float() => rng.unit() * 4.0 - 2.0,
                    DType::Bool => (rng.unit() < 0.5) as u8 as f64,
                    _ => (rng.unit() * 3.0).floor(),
                })
                .collect();
            Tensor::from_f64s(ty.dtype, dims, &vals).unwrap()
        })
        .collect()
}

/// Checks that `after` is a valid graph with `before`'s interface (input and
/// output names and types up to `?` dimensions) and computes bit-identical
/// outputs on a few random inputs.
pub fn assert_same_outputs(before: &Graph, after: &Graph) {
    kiln_ir::verify::verify_types(after).unwrap_or_else(|e| panic!("{e}\n{after}"));
    kiln_ir::text::check_round_trip(after).unwrap_or_else(|e| panic!("{e}"));
    // source names (unnamed values are `%N`, which compaction renumbers)
    let names = |g: &Graph, vs: &[kiln_ir::ValueId]| -> Vec<Option<String>> {
        vs.iter().map(|&v| g.value(v).name.clone()).collect()
    };
    assert_eq!(names(before, &before.inputs), names(after, &after.inputs));
    assert_eq!(names(before, &before.outputs), names(after, &after.outputs));
    for seed in 1..=3 {
        let inputs = random_inputs(before, seed);
        let want = kiln_ir::interp::run(before, &inputs).unwrap_or_else(|e| panic!("before: {e}"));
        let got =
            kiln_ir::interp::run(after, &inputs).unwrap_or_else(|e| panic!("after: {e}\n{after}"));
        assert_eq!(want.len(), got.len());
        for (k, (w, g)) in want.iter().zip(&got).enumerate() {
            assert!(
                w.bit_eq(g),
                "output {k} differs (seed {seed}):\n  before {w:?}\n  after  {g:?}"
            );
        }
    }
}

/// How many nodes of `op` the graph has.
pub fn count(g: &Graph, op: Op) -> usize {
    g.nodes.iter().filter(|n| n.op == op).count()
}
