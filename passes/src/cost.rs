//! Roofline cost estimates per node and per graph for a [`TargetInfo`]: the
//! first cost model the optimizer will use to rank equivalent graphs.
//!
//! A node's time is `max(flops / peak, bytes / bandwidth) + launch overhead`,
//! with flops and bytes from [`stats::node_stats`]. The peak depends on the
//! dtype only for matrix products (the Linalg, Conv and Attention classes),
//! where tensor cores and dot-product instructions apply: the node's output
//! dtype picks it, except for the integer-input products (MatMulInteger,
//! ConvInteger, QLinear*), whose i8/u8 operand picks the i8 peak. Every other
//! op runs at the f32 (vector) peak, as do dtypes without an entry.
//!
//! Requires: a typed graph (as for [`stats`]); nodes with a symbolic shape get
//! no estimate and are counted in [`GraphCost::unknown_nodes`]. Establishes
//! nothing: it is an analysis and changes nothing.
//!
//! Limits: no fusion modelling yet — every node is its own kernel, paying its
//! overhead and moving all its operands and results through main memory;
//! choosing fusions is the optimizer's job. No cache reuse, no per-op-class
//! efficiency (every kernel reaches peak), no parallel streams: the graph's
//! time is the sum of its nodes'.

use crate::stats;
use kiln_ir::{DType, Graph, Node, Op, OpClass, TargetInfo};

/// What limits a node's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Arithmetic: `flops / peak` is the largest term.
    Compute,
    /// Memory traffic: `bytes / bandwidth` is the largest term.
    Memory,
    /// The fixed launch or dispatch cost exceeds both.
    Overhead,
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

/// The dtype whose peak applies to `node`, for matrix products; `None` for
/// everything else (the f32 vector peak).
fn compute_dtype(g: &Graph, node: &Node) -> Option<DType> {
    match node.op.class() {
        OpClass::Linalg | OpClass::Conv | OpClass::Attention => {}
        _ => return None,
    }
    let integer_inputs = matches!(
        node.op,
        Op::MatMulInteger | Op::ConvInteger | Op::QLinearMatMul | Op::QLinearConv
    );
    let v = if integer_inputs {
        node.inputs.first().copied().flatten()?
    } else {
        *node.outputs.first()?
    };
    Some(g.ty(v).dtype)
}

/// The roofline estimate for one node on `t`, or `None` if a shape it needs
/// is symbolic.
pub fn node_cost(g: &Graph, node: &Node, t: &TargetInfo) -> Option<Cost> {
    let s = stats::node_stats(g, node)?;
    let peak = t.peak_flops(compute_dtype(g, node).unwrap_or(DType::F32));
    let compute = s.flops as f64 / peak;
    let memory = s.bytes as f64 / t.mem_bandwidth;
    let overhead = t.launch_overhead;
    let bound = if overhead >= compute.max(memory) {
        Bound::Overhead
    } else if compute >= memory {
        Bound::Compute
    } else {
        Bound::Memory
    };
    Some(Cost {
        seconds: compute.max(memory) + overhead,
        flops: s.flops,
        bytes: s.bytes,
        bound,
    })
}

/// [`node_cost`] for every node, and the total.
pub fn graph_cost(g: &Graph, t: &TargetInfo) -> GraphCost {
    let per_node: Vec<Option<Cost>> = g.nodes.iter().map(|n| node_cost(g, n, t)).collect();
    GraphCost {
        seconds: per_node.iter().flatten().map(|c| c.seconds).sum(),
        unknown_nodes: per_node.iter().filter(|c| c.is_none()).count(),
        per_node,
    }
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
