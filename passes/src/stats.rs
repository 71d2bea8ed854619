//! Per-node work estimates: floating-point (or integer) operations and bytes
//! moved, for `kiln info` and, later, as the cost model's raw inputs.
//!
//! Requires: a graph whose node types are inferred (any graph the frontend or
//! the text parser produced). Establishes nothing; it only reads.
//!
//! Conventions: a multiply-add counts as 2 operations; an elementwise op as 1
//! per output element (transcendentals too); a reduction as 1 per input
//! element; normalisations as 5 per element (mean, variance, scale). Movement
//! and shape ops count 0 operations. Bytes are what an unfused execution
//! reads and writes: every operand plus every result, once. Nodes with a
//! symbolic dimension are counted in [`GraphStats::unknown_nodes`] instead.

use kiln_ir::{Attrs, Graph, Node, Op, OpClass, TensorType};

/// Estimated work of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeStats {
    pub flops: u64,
    pub bytes: u64,
}

/// Totals over a graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphStats {
    pub flops: u64,
    pub bytes: u64,
    /// Bytes held in constants (weights).
    pub const_bytes: u64,
    /// Nodes whose estimate is unknown because a shape is symbolic.
    pub unknown_nodes: usize,
}

fn numel(t: &TensorType) -> Option<u64> {
    t.shape.numel().map(|n| n as u64)
}

fn bytes(t: &TensorType) -> Option<u64> {
    numel(t).map(|n| n * t.dtype.size_bytes() as u64)
}

/// The estimate for one node, or `None` if a shape it needs is symbolic.
pub fn node_stats(g: &Graph, node: &Node) -> Option<NodeStats> {
    let ins: Vec<&TensorType> = node.inputs.iter().flatten().map(|&v| g.ty(v)).collect();
    let outs: Vec<&TensorType> = node.outputs.iter().map(|&v| g.ty(v)).collect();
    op_stats(node.op, &node.attrs, &ins, &outs)
}

/// The estimate for `op` with `attrs` on operands of types `ins` (present
/// ones only, in order) giving results of types `outs`, or `None` if a shape
/// it needs is symbolic. What [`node_stats`] computes, without a graph (the
/// e-graph's cost model calls it per e-node).
pub fn op_stats(op: Op, attrs: &Attrs, ins: &[&TensorType], outs: &[&TensorType]) -> Option<NodeStats> {
    let mut moved = 0u64;
    for t in ins.iter().chain(outs) {
        moved += bytes(t)?;
    }
    let out_elems = match outs.first() {
        Some(t) => numel(t)?,
        None => 0,
    };
    let in_elems = match ins.first() {
        Some(t) => numel(t)?,
        None => 0,
    };
    let dims = |t: &TensorType| t.shape.fixed();
    let flops = match op.class() {
        OpClass::Elementwise => out_elems,
        OpClass::Reduction => in_elems,
        OpClass::Normalization | OpClass::Quantization => 5 * in_elems,
        OpClass::Movement | OpClass::Shape | OpClass::Misc => 0,
        OpClass::Pool => {
            // one op per window element: output elements × window size
            let x = dims(ins.first()?)?;
            let y = dims(outs.first()?)?;
            let window: u64 = x.iter().skip(2).product::<usize>() as u64
                / y.iter().skip(2).product::<usize>().max(1) as u64;
            out_elems * window.max(1)
        }
        OpClass::Linalg => match op {
            Op::MatMul | Op::MatMulInteger | Op::QLinearMatMul | Op::Gemm => {
                // 2·K per output element; K is A's last (or, transposed, first) dim
                let a = ins.first()?.shape.fixed()?;
                let trans_a = op == Op::Gemm && attrs.int_or("transA", 0).ok()? != 0;
                let k = if trans_a { a.first().copied() } else { a.last().copied() }.unwrap_or(1);
                2 * out_elems * k as u64
            }
            _ => out_elems * in_elems.max(1).isqrt(),
        },
        OpClass::Conv => {
            // 2 · output elements · (Cin/group · kernel size)
            let w = ins.get(1)?.shape.fixed()?;
            let per_out: usize = w.iter().skip(1).product();
            2 * out_elems * per_out as u64
        }
        OpClass::Attention => {
            // QKᵀ and PV: 2 · 2 · (query rows) · (key rows) · head size, per head
            let q = dims(ins.first()?)?;
            let k = dims(ins.get(1)?)?;
            let q_elems: usize = q.iter().product();
            let kv_len = if k.len() == 4 { k[2] } else { *k.get(1)? };
            4 * q_elems as u64 * kv_len as u64
        }
        OpClass::Fused => fused_flops(op, attrs, ins, out_elems)?,
    };
    Some(NodeStats { flops, bytes: moved })
}

/// A fused op's work: its product's (2·M·N·K for FusedMatMul, as Conv for
/// FusedConv) plus one operation per output element per epilogue op.
fn fused_flops(op: Op, attrs: &Attrs, ins: &[&TensorType], out_elems: u64) -> Option<u64> {
    let body = kiln_ir::fused::body(op, attrs).ok()?;
    let per_elem = body.num_ops() as u64 * out_elems;
    let product = match op {
        Op::FusedMatMul => {
            let a = ins.first()?.shape.fixed()?;
            let k = if attrs.int_or("transA", 0).ok()? != 0 { *a.get(a.len().checked_sub(2)?)? } else { *a.last()? };
            2 * out_elems * k as u64
        }
        Op::FusedConv => {
            let w = ins.get(1)?.shape.fixed()?;
            let per_out: usize = w.iter().skip(1).product();
            2 * out_elems * per_out as u64
        }
        _ => 0,
    };
    Some(product + per_elem)
}

/// Sums [`node_stats`] over the graph.
pub fn graph_stats(g: &Graph) -> GraphStats {
    let mut s = GraphStats {
        const_bytes: g.consts.values().map(|t| (t.numel() * t.dtype().size_bytes()) as u64).sum(),
        ..GraphStats::default()
    };
    for n in &g.nodes {
        match node_stats(g, n) {
            Some(ns) => {
                s.flops += ns.flops;
                s.bytes += ns.bytes;
            }
            None => s.unknown_nodes += 1,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Attrs, DType, Dim, Shape};

    #[test]
    fn matmul_counts_two_flops_per_multiply_add() {
        let mut g = Graph::new("t");
        let a = g.add_input("a", TensorType::new(DType::F32, vec![2, 3]));
        let b = g.add_input("b", TensorType::new(DType::F32, vec![3, 4]));
        g.add_node("mm", Op::MatMul, Attrs::new(), vec![Some(a), Some(b)], vec![(None, TensorType::new(DType::F32, vec![2, 4]))]);
        let s = graph_stats(&g);
        assert_eq!(s.flops, 2 * 2 * 3 * 4);
        assert_eq!(s.bytes, 4 * (6 + 12 + 8));
        assert_eq!(s.unknown_nodes, 0);
    }

    #[test]
    fn symbolic_shapes_are_counted_as_unknown() {
        let mut g = Graph::new("t");
        let ty = TensorType { dtype: DType::F32, shape: Shape(vec![Dim::Sym("n".into())]) };
        let a = g.add_input("a", ty.clone());
        g.add_node("r", Op::Relu, Attrs::new(), vec![Some(a)], vec![(None, ty)]);
        assert_eq!(graph_stats(&g).unknown_nodes, 1);
    }
}
