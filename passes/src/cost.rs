//! Roofline cost estimates per op, node and graph for a [`TargetInfo`]: the
//! cost model the optimizer ranks equivalent graphs with.
//!
//! An op's time is
//! `max(flops / (peak · efficiency), bytes / (bandwidth · memory efficiency))
//! + launch overhead · overhead scale`, with flops and bytes from
//! [`stats::op_stats`] and the coefficients from [`Coefficients`]. The peak
//! depends on the dtype only for matrix products (the Linalg, Conv and
//! Attention classes and FusedMatMul/FusedConv), where tensor cores and
//! dot-product instructions apply: the product's first operand's dtype
//! picks it (so integer-input products use the i8 peak). Every other op runs
//! at the f32 (vector) peak, as do dtypes without an entry.
//!
//! Fusion is modelled by construction: a fused node's bytes are only its
//! external operands and results, and it pays one launch, so a fused form
//! is cheaper than the chain it replaces. Pure views ([`is_view`]: Reshape,
//! Flatten, Squeeze, Unsqueeze, Identity, Dropout in inference) are not
//! kernels ([`is_kernel`]) and cost [`Coefficients::view_seconds`] (0 by
//! default). Transpose, Slice and Split are counted as copies: whether a
//! consumer could read them through an affine index depends on the consumer,
//! which a per-op cost cannot see (the fused ops absorb them instead).
//!
//! Requires: a typed graph (as for [`stats`]); nodes with a symbolic shape get
//! no estimate and are counted in [`GraphCost::unknown_nodes`]. Establishes
//! nothing: it is an analysis and changes nothing.
//!
//! Limits: no cache reuse, no parallel streams: the graph's time is the sum
//! of its nodes'. The default coefficients are 1 (every kernel reaches the
//! roofline); a calibration can replace them ([`Coefficients`] is plain data).

use crate::stats;
use kiln_ir::{Attrs, DType, Graph, Node, Op, OpClass, TargetInfo, TensorType};

/// What limits a node's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Arithmetic: `flops / peak` is the largest term.
    Compute,
    /// Memory traffic: `bytes / bandwidth` is the largest term.
    Memory,
    /// The fixed launch or dispatch cost exceeds both.
    Overhead,
    /// Not a kernel: a view of its operand ([`is_view`]).
    View,
}

/// The estimate for one node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    pub seconds: f64,
    pub flops: u64,
    pub bytes: u64,
    pub bound: Bound,
}

/// The estimate for a graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphCost {
    /// Sum over the nodes with an estimate.
    pub seconds: f64,
    /// Nodes without an estimate (a symbolic shape).
    pub unknown_nodes: usize,
    /// One entry per node of `g.nodes`, in order.
    pub per_node: Vec<Option<Cost>>,
}

/// How close each kind of kernel gets to the target's peaks, and scales on
/// the fixed costs: the calibrated part of the model. Plain data, so a
/// calibration file can fill it; [`Coefficients::default`] is the ideal
/// roofline (every factor 1, views free).
#[derive(Clone, Debug, PartialEq)]
pub struct Coefficients {
    /// Fraction of the compute peak reached, per kind of kernel.
    pub matmul_efficiency: f64,
    pub conv_efficiency: f64,
    pub attention_efficiency: f64,
    pub elementwise_efficiency: f64,
    pub reduction_efficiency: f64,
    pub normalization_efficiency: f64,
    pub other_efficiency: f64,
    /// Fraction of the memory bandwidth reached.
    pub memory_efficiency: f64,
    /// Multiplies the target's launch or dispatch overhead.
    pub overhead_scale: f64,
    /// What a view (not a kernel) costs, in seconds.
    pub view_seconds: f64,
}

impl Default for Coefficients {
    fn default() -> Coefficients {
        Coefficients {
            matmul_efficiency: 1.0,
            conv_efficiency: 1.0,
            attention_efficiency: 1.0,
            elementwise_efficiency: 1.0,
            reduction_efficiency: 1.0,
            normalization_efficiency: 1.0,
            other_efficiency: 1.0,
            memory_efficiency: 1.0,
            overhead_scale: 1.0,
            view_seconds: 0.0,
        }
    }
}

impl Coefficients {
    /// The compute efficiency that applies to `op`.
    pub fn efficiency(&self, op: Op) -> f64 {
        let e = match op {
            Op::FusedMatMul => self.matmul_efficiency,
            Op::FusedConv => self.conv_efficiency,
            _ => match op.class() {
                OpClass::Linalg => self.matmul_efficiency,
                OpClass::Conv => self.conv_efficiency,
                OpClass::Attention => self.attention_efficiency,
                OpClass::Elementwise | OpClass::Fused => self.elementwise_efficiency,
                OpClass::Reduction => self.reduction_efficiency,
                OpClass::Normalization => self.normalization_efficiency,
                _ => self.other_efficiency,
            },
        };
        if e > 0.0 { e } else { 1.0 }
    }
}

/// Ops that only reinterpret their operand's buffer (no data moves).
pub fn is_view(op: Op) -> bool {
    matches!(op, Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze | Op::Identity | Op::Dropout)
}

/// Whether a node of `op` runs as a kernel of its own: the one definition
/// behind the optimizer report's `kernels` count. Views are not; neither
/// are the shape computations that are folded at compile time.
pub fn is_kernel(op: Op) -> bool {
    !is_view(op) && !matches!(op, Op::Shape | Op::Size)
}

/// Whether `op` is a matrix product, whose peak depends on its dtype.
fn is_product(op: Op) -> bool {
    matches!(op.class(), OpClass::Linalg | OpClass::Conv | OpClass::Attention)
        || matches!(op, Op::FusedMatMul | Op::FusedConv)
}

/// The roofline estimate for `op` with `attrs` on operands of types `ins`
/// (present ones, in order) and results `outs`, on `t` with coefficients
/// `k`; `None` if a shape it needs is symbolic.
pub fn op_cost(
    op: Op,
    attrs: &Attrs,
    ins: &[&TensorType],
    outs: &[&TensorType],
    t: &TargetInfo,
    k: &Coefficients,
) -> Option<Cost> {
    if is_view(op) {
        return Some(Cost { seconds: k.view_seconds, flops: 0, bytes: 0, bound: Bound::View });
    }
    let s = stats::op_stats(op, attrs, ins, outs)?;
    let dtype = if is_product(op) {
        ins.first().or(outs.first()).map_or(DType::F32, |t| t.dtype)
    } else {
        DType::F32
    };
    let compute = s.flops as f64 / (t.peak_flops(dtype) * k.efficiency(op));
    let mem_eff = if k.memory_efficiency > 0.0 { k.memory_efficiency } else { 1.0 };
    let memory = s.bytes as f64 / (t.mem_bandwidth * mem_eff);
    let overhead = t.launch_overhead * k.overhead_scale;
    let bound = if overhead >= compute.max(memory) {
        Bound::Overhead
    } else if compute >= memory {
        Bound::Compute
    } else {
        Bound::Memory
    };
    Some(Cost { seconds: compute.max(memory) + overhead, flops: s.flops, bytes: s.bytes, bound })
}

/// The roofline estimate for one node on `t` with the default
/// coefficients, or `None` if a shape it needs is symbolic.
pub fn node_cost(g: &Graph, node: &Node, t: &TargetInfo) -> Option<Cost> {
    node_cost_with(g, node, t, &Coefficients::default())
}

/// [`node_cost`] with explicit coefficients.
pub fn node_cost_with(g: &Graph, node: &Node, t: &TargetInfo, k: &Coefficients) -> Option<Cost> {
    let ins: Vec<&TensorType> = node.inputs.iter().flatten().map(|&v| g.ty(v)).collect();
    let outs: Vec<&TensorType> = node.outputs.iter().map(|&v| g.ty(v)).collect();
    op_cost(node.op, &node.attrs, &ins, &outs, t, k)
}

/// [`node_cost`] for every node, and the total.
pub fn graph_cost(g: &Graph, t: &TargetInfo) -> GraphCost {
    graph_cost_with(g, t, &Coefficients::default())
}

/// [`graph_cost`] with explicit coefficients.
pub fn graph_cost_with(g: &Graph, t: &TargetInfo, k: &Coefficients) -> GraphCost {
    let per_node: Vec<Option<Cost>> = g.nodes.iter().map(|n| node_cost_with(g, n, t, k)).collect();
    GraphCost {
        seconds: per_node.iter().flatten().map(|c| c.seconds).sum(),
        unknown_nodes: per_node.iter().filter(|c| c.is_none()).count(),
        per_node,
    }
}

/// Number of nodes of `g` that are kernels ([`is_kernel`]).
pub fn kernel_count(g: &Graph) -> usize {
    g.nodes.iter().filter(|n| is_kernel(n.op)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::parse;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs()
    }

    fn only(g: &Graph, t: &TargetInfo) -> Cost {
        let gc = graph_cost(g, t);
        assert_eq!(gc.unknown_nodes, 0);
        assert_eq!(gc.per_node.len(), 1);
        let c = gc.per_node[0].unwrap();
        assert!(close(gc.seconds, c.seconds));
        c
    }

    fn matmul(dtype: &str, n: usize) -> Graph {
        parse(&format!(
            "graph @g {{\n  in %0 \"a\": {dtype}[{n},{n}]\n  in %1 \"b\": {dtype}[{n},{n}]\n  \
             %2 \"y\": {dtype}[{n},{n}] = MatMul(%0, %1)\n  out %2\n}}"
        ))
    }

    #[test]
    fn big_matmul_is_compute_bound_on_a_cpu() {
        let t = TargetInfo::x86_64_avx2();
        let c = only(&matmul("f32", 512), &t);
        assert_eq!(c.flops, 2 * 512 * 512 * 512); // 268_435_456
        assert_eq!(c.bytes, 3 * 4 * 512 * 512); // 3_145_728
        assert_eq!(c.bound, Bound::Compute);
        // 268_435_456 / 0.9e12 = 298.26 µs  >  3_145_728 / 50e9 = 62.9 µs; + 1 µs
        assert!(close(c.seconds, 268_435_456.0 / 0.9e12 + 1e-6));
    }

    #[test]
    fn elementwise_add_is_memory_bound() {
        let g = parse(
            r#"
graph @g {
  in %0 "x": f32[1048576]
  in %1 "y": f32[1048576]
  %2 "z": f32[1048576] = Add(%0, %1)
  out %2
}"#,
        );
        let t = TargetInfo::x86_64_avx512();
        let c = only(&g, &t);
        assert_eq!((c.flops, c.bytes), (1 << 20, 12 << 20));
        assert_eq!(c.bound, Bound::Memory);
        // 12_582_912 B / 200e9 B/s = 62.9 µs  >  1_048_576 / 2.56e12 = 0.41 µs; + 1 µs
        assert!(close(c.seconds, 12_582_912.0 / 200e9 + 1e-6));
    }

    #[test]
    fn tiny_op_on_a_gpu_is_overhead_bound() {
        let g = parse(
            r#"
graph @g {
  in %0 "x": f32[4]
  %1 "y": f32[4] = Relu(%0)
  out %1
}"#,
        );
        let c = only(&g, &TargetInfo::sm90());
        assert_eq!((c.flops, c.bytes), (4, 32));
        assert_eq!(c.bound, Bound::Overhead);
        // 32 B / 3.35e12 B/s ≈ 1e-11 s, negligible beside the 5 µs launch
        assert!(close(c.seconds, 32.0 / 3.35e12 + 5e-6));
    }

    #[test]
    fn gpu_beats_cranelift_on_a_large_matmul() {
        for dtype in ["f32", "f16"] {
            let g = matmul(dtype, 1024);
            let gpu = graph_cost(&g, &TargetInfo::sm90()).seconds;
            let cl = graph_cost(&g, &TargetInfo::cranelift()).seconds;
            assert!(
                gpu * 100.0 < cl,
                "{dtype}: sm90 {gpu} s vs cranelift {cl} s"
            );
        }
        // f16 uses the tensor-core peak on sm90: 2·1024³ / 989e12 = 2.17 µs,
        // above the memory term 6 MiB / 3.35e12 = 1.88 µs; + 5 µs launch
        let c = only(&matmul("f16", 1024), &TargetInfo::sm90());
        let flops = 2.0 * 1024f64.powi(3);
        assert!(close(c.seconds, flops / 989e12 + 5e-6));
        // and cranelift has no f16 path: the f32 peak
        let c = only(&matmul("f16", 1024), &TargetInfo::cranelift());
        assert!(close(c.seconds, flops / 0.45e12 + 1e-6));
    }

    #[test]
    fn integer_matmul_uses_the_i8_peak() {
        let g = parse(
            r#"
graph @g {
  in %0 "a": u8[256,256]
  in %1 "b": u8[256,256]
  %2 "y": i32[256,256] = MatMulInteger(%0, %1)
  out %2
}"#,
        );
        let t = TargetInfo::x86_64_avx512();
        let c = only(&g, &t);
        // 2·256³ = 33_554_432 ops / 10.24e12 = 3.28 µs
        // > (2·65_536 + 4·65_536) B / 200e9 = 1.97 µs
        assert_eq!(c.bound, Bound::Compute);
        assert!(close(c.seconds, 33_554_432.0 / 10.24e12 + 1e-6));
    }

    #[test]
    fn views_are_free_and_not_kernels() {
        let g = parse(
            r#"
graph @g {
  in %0 "x": f32[4,8]
  const %1: i64[1] = [32]
  %2 "y": f32[32] = Reshape(%0, %1)
  %3 "z": f32[32] = Relu(%2)
  out %3
}"#,
        );
        let gc = graph_cost(&g, &TargetInfo::sm90());
        assert_eq!(gc.per_node[0].unwrap().bound, Bound::View);
        assert_eq!(gc.per_node[0].unwrap().seconds, 0.0);
        assert_eq!(kernel_count(&g), 1);
    }

    #[test]
    fn efficiency_and_overhead_coefficients_scale_the_terms() {
        let g = matmul("f32", 512);
        let t = TargetInfo::x86_64_avx2();
        let k = Coefficients { matmul_efficiency: 0.5, overhead_scale: 2.0, ..Coefficients::default() };
        let c = graph_cost_with(&g, &t, &k).per_node[0].unwrap();
        assert!(close(c.seconds, 268_435_456.0 / (0.9e12 * 0.5) + 2e-6));
    }

    #[test]
    fn symbolic_nodes_are_unknown_and_not_summed() {
        let g = parse(
            r#"
graph @g {
  in %0 "x": f32[n]
  in %1 "w": f32[4]
  %2 "y": f32[n] = Relu(%0)
  %3 "z": f32[4] = Relu(%1)
  out %2, %3
}"#,
        );
        let gc = graph_cost(&g, &TargetInfo::sm80());
        assert_eq!(gc.unknown_nodes, 1);
        assert_eq!(gc.per_node[0], None);
        let known = gc.per_node[1].unwrap();
        assert!(close(known.seconds, 32.0 / 1555e9 + 5e-6));
        assert_eq!(gc.seconds, known.seconds);
    }
}
