//! Scheduling: lowering a (possibly fused) graph to a kernel-IR [`Program`].
//!
//! Requires: a graph with static shapes (shape arithmetic folded, e.g. by
//! [`crate::simplify`]); any symbolic dimension is an error naming the node.
//! Establishes: a verified [`Program`] with one kernel per node (none for the
//! nodes that become aliases: Reshape, Squeeze, Unsqueeze, Flatten, Identity
//! of a contiguous buffer), plus one copy kernel per graph output that is an
//! input, a constant, a repeated output or an alias whose shape differs.
//! Temps are left unplanned (`offset: None`); see [`crate::memplan`].
//!
//! One file per schedule:
//! - [`elementwise`]: elementwise ops and `FusedElementwise` (broadcasting by
//!   index expressions, vectorised inner loop, parallel over outer dims);
//! - [`reduce`]: the Reduce* ops and ArgMax/ArgMin;
//! - [`norm`]: row ops (Softmax, LogSoftmax, LayerNormalization,
//!   RMSNormalization, BatchNormalization in inference mode);
//! - [`matmul`]: MatMul, Gemm, FusedMatMul (register-tiled micro-kernel,
//!   constant weights pre-packed into panels);
//! - [`conv`]: Conv and FusedConv (im2col + the MatMul micro-kernel, or
//!   direct for depthwise and other dtypes);
//! - [`pool`]: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool;
//! - [`attention`]: ONNX Attention, FlashAttention-style (online softmax);
//! - [`movement`]: Transpose, Slice, Gather, Concat, Split, Expand and the
//!   aliasing reshapes;
//! - [`gather`]: GatherElements, GatherND; [`scatter`]: ScatterElements,
//!   ScatterND; [`layout`]: Tile, Pad, DepthToSpace, SpaceToDepth;
//!   [`select`]: Trilu, ReverseSequence, OneHot, EyeLike; [`scan`]: CumSum;
//!   [`misc`]: Range, TopK; [`resize`]: Resize; [`einsum`]: Einsum.
//! - [`quant`]: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear;
//!   [`intmm`]: MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv;
//!   [`norm_extra`]: LayerNormalization's Mean/InvStdDev outputs, Hardmax,
//!   LpNormalization, MeanVarianceNormalization; [`extra_outputs`]:
//!   Dropout's mask and MaxPool's Indices.
//!
//! The list of what is supported is [`supports`]; every other node is a
//! [`PassError`] naming it, never a silent fallback.

pub mod attention;
pub mod conv;
pub mod einsum;
pub mod elementwise;
pub mod extra_outputs;
pub mod gather;
pub mod intmm;
mod indexing;
pub mod layout;
pub mod matmul;
pub mod misc;
pub mod movement;
pub mod norm;
pub mod norm_extra;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod resize;
pub mod scan;
pub mod scatter;
pub mod select;

use crate::error::PassError;
use kiln_ir::kernel::{
    Access, BufId, BufKind, Buffer, Expr, IndexExpr, Kernel, ParAxis, ParLevel, Param, Program,
    Stmt, Var,
};
use kiln_ir::{DType, Graph, Node, Op, OpClass, Tensor, TensorType, ValueId};
use std::collections::{BTreeMap, HashMap};

const PASS: &str = "schedule";

/// Scheduling options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Vector width for f32 inner loops (4 for 128-bit SIMD; 1 disables vectors).
    pub lanes: u32,
    /// Rows of the MatMul register tile.
    pub mr: usize,
    /// Vectors per row of the MatMul register tile (the tile is `mr × nr_vecs·lanes`).
    pub nr_vecs: usize,
    /// Repack constant MatMul weights into panels at compile time.
    pub pack_weights: bool,
    /// MatMul/Conv cache blocks (used when K > `kc` or N > `nc`): rows per
    /// grid point, columns per grid point, K block.
    pub mc: usize,
    pub nc: usize,
    pub kc: usize,
    /// Key/value block length of the attention schedule.
    pub attn_block: usize,
    /// Elements per grid point of flat elementwise kernels.
    pub chunk: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            lanes: 4,
            mr: 4,
            nr_vecs: 2,
            pack_weights: true,
            mc: 64,
            nc: 256,
            kc: 256,
            attn_block: 64,
            chunk: 4096,
        }
    }
}

/// Why a node has no schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Reason(pub String);

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `op` with these attributes and operand/result types has a
/// schedule. This is the one list of supported ops; `lower` calls it for
/// every node first. `inputs` are the operand types (None: omitted optional
/// input), `outputs` the result types.
pub fn supports(
    op: Op,
    attrs: &kiln_ir::Attrs,
    inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), Reason> {
    let no = |m: String| Err(Reason(m));
    for t in inputs.iter().flatten().chain(outputs.iter()) {
        if !t.shape.is_fixed() {
            return no(format!(
                "shape {} is not static (fold shapes or bind dimensions first)",
                t.shape
            ));
        }
    }
    // Ops whose schedules live outside their class's module.
    match op {
        Op::GatherElements | Op::GatherND => return gather::supports(op, attrs, inputs, outputs),
        Op::ScatterElements | Op::ScatterND => {
            return scatter::supports(op, attrs, inputs, outputs)
        }
        Op::Tile | Op::Pad | Op::DepthToSpace | Op::SpaceToDepth => {
            return layout::supports(op, attrs, inputs, outputs)
        }
        Op::Trilu | Op::ReverseSequence | Op::OneHot | Op::EyeLike => {
            return select::supports(op, attrs, inputs, outputs)
        }
        Op::CumSum => return scan::supports(op, attrs, inputs, outputs),
        Op::Range | Op::TopK => return misc::supports(op, attrs, inputs, outputs),
        Op::Resize => return resize::supports(op, attrs, inputs, outputs),
        Op::Einsum => return einsum::supports(op, attrs, inputs, outputs),
        Op::QuantizeLinear | Op::DequantizeLinear | Op::DynamicQuantizeLinear => {
            return quant::supports(op, attrs, inputs, outputs)
        }
        Op::MatMulInteger | Op::QLinearMatMul | Op::ConvInteger | Op::QLinearConv => {
            return intmm::supports(op, attrs, inputs, outputs)
        }
        o if norm_extra::claims(o, attrs, outputs.len()) => {
            return norm_extra::supports(op, attrs, inputs, outputs)
        }
        o if extra_outputs::claims(o, outputs.len()) => {
            return extra_outputs::supports(op, attrs, inputs, outputs)
        }
        _ => {}
    }
    match op.class() {
        OpClass::Elementwise => elementwise::supports(op, attrs, inputs, outputs),
        OpClass::Fused if op == Op::FusedElementwise => {
            elementwise::supports(op, attrs, inputs, outputs)
        }
        OpClass::Fused if op == Op::FusedMatMul => matmul::supports(op, attrs, inputs, outputs),
        OpClass::Linalg if matches!(op, Op::MatMul | Op::Gemm) => {
            matmul::supports(op, attrs, inputs, outputs)
        }
        OpClass::Reduction => reduce::supports(op, attrs, inputs, outputs),
        OpClass::Normalization => norm::supports(op, attrs, inputs, outputs),
        OpClass::Conv => conv::supports(op, attrs, inputs, outputs),
        OpClass::Fused if op == Op::FusedConv => conv::supports(op, attrs, inputs, outputs),
        OpClass::Pool => pool::supports(op, attrs, inputs, outputs),
        OpClass::Movement => movement::supports(op, attrs, inputs, outputs),
        OpClass::Attention => attention::supports(op, attrs, inputs, outputs),
        _ => no(format!("{op} has no kernel schedule")),
    }
}

/// Lowers `graph` to a kernel program. Every node gets a kernel (or becomes
/// an alias); unsupported nodes are errors naming the node and the reason.
pub fn lower(graph: &Graph, opts: &Options) -> Result<Program, PassError> {
    let mut cx = Lower::new(graph, opts);
    for (i, &v) in graph.inputs.iter().enumerate() {
        let b = cx.new_buffer(v, BufKind::Input(i));
        cx.val_buf.insert(v, b);
    }
    for node in &graph.nodes {
        let ins: Vec<Option<&TensorType>> =
            node.inputs.iter().map(|o| o.map(|v| graph.ty(v))).collect();
        let outs: Vec<&TensorType> = node.outputs.iter().map(|&v| graph.ty(v)).collect();
        supports(node.op, &node.attrs, &ins, &outs)
            .map_err(|r| PassError::node(PASS, node, r.0))?;
        cx.node(node)?;
    }
    cx.finish_outputs()?;
    let prog = cx.prog;
    kiln_ir::kernel::verify::verify(&prog).map_err(|e| PassError::graph(PASS, e.to_string()))?;
    Ok(prog)
}

/// Lowering state shared by the schedules.
pub struct Lower<'g> {
    pub graph: &'g Graph,
    pub opts: &'g Options,
    pub prog: Program,
    /// The buffer holding each value computed so far (aliases share buffers).
    pub val_buf: HashMap<ValueId, BufId>,
    /// Kernel-local buffer ids (above every program buffer id).
    next_local: u32,
}

/// First id given to kernel-local (`Alloc`) buffers.
pub const LOCAL_BASE: u32 = 1 << 24;

impl<'g> Lower<'g> {
    fn new(graph: &'g Graph, opts: &'g Options) -> Lower<'g> {
        Lower {
            graph,
            opts,
            prog: Program {
                name: graph.name.clone(),
                buffers: Vec::new(),
                kernels: Vec::new(),
                arena_bytes: 0,
            },
            val_buf: HashMap::new(),
            next_local: LOCAL_BASE,
        }
    }

    /// The static dims of a value (checked by `supports`).
    pub fn dims(&self, v: ValueId) -> Vec<usize> {
        self.graph.ty(v).shape.fixed().unwrap_or_default()
    }

    pub fn dtype(&self, v: ValueId) -> DType {
        self.graph.ty(v).dtype
    }

    /// Adds a program buffer for value `v`.
    pub fn new_buffer(&mut self, v: ValueId, kind: BufKind) -> BufId {
        let ty = self.graph.ty(v).clone();
        let name = self.graph.value(v).name.clone();
        self.add_buffer(name, ty.dtype, ty.shape.fixed().unwrap_or_default(), kind)
    }

    pub fn add_buffer(
        &mut self,
        name: Option<String>,
        dtype: DType,
        shape: Vec<usize>,
        kind: BufKind,
    ) -> BufId {
        let id = BufId(self.prog.buffers.len() as u32);
        self.prog.buffers.push(Buffer {
            id,
            name,
            dtype,
            shape,
            kind,
        });
        id
    }

    /// A fresh kernel-local buffer id.
    pub fn local(&mut self) -> BufId {
        let b = BufId(self.next_local);
        self.next_local += 1;
        b
    }

    /// The buffer of an operand: computed, input, or a constant (added on first use).
    pub fn buf(&mut self, v: ValueId) -> BufId {
        if let Some(&b) = self.val_buf.get(&v) {
            return b;
        }
        let t = self
            .graph
            .consts
            .get(&v)
            .cloned()
            .unwrap_or_else(|| Tensor::zeros(self.dtype(v), self.dims(v)));
        let b = self.new_buffer(v, BufKind::Const(t));
        self.val_buf.insert(v, b);
        b
    }

    /// A constant operand's tensor, if it is one.
    pub fn const_of(&self, v: ValueId) -> Option<&Tensor> {
        self.graph.consts.get(&v)
    }

    /// A fresh temp buffer for node output `v`.
    pub fn out_buf(&mut self, v: ValueId) -> BufId {
        let b = self.new_buffer(v, BufKind::Temp { offset: None });
        self.val_buf.insert(v, b);
        b
    }

    pub fn push(&mut self, k: Kernel) {
        self.prog.kernels.push(k);
    }

    fn node(&mut self, node: &Node) -> Result<(), PassError> {
        let r = match node.op {
            Op::GatherElements | Op::GatherND => gather::lower(self, node),
            Op::ScatterElements | Op::ScatterND => scatter::lower(self, node),
            Op::Tile | Op::Pad | Op::DepthToSpace | Op::SpaceToDepth => layout::lower(self, node),
            Op::Trilu | Op::ReverseSequence | Op::OneHot | Op::EyeLike => select::lower(self, node),
            Op::CumSum => scan::lower(self, node),
            Op::Range | Op::TopK => misc::lower(self, node),
            Op::Resize => resize::lower(self, node),
            Op::Einsum => einsum::lower(self, node),
            Op::QuantizeLinear | Op::DequantizeLinear | Op::DynamicQuantizeLinear => {
                quant::lower(self, node)
            }
            Op::MatMulInteger | Op::QLinearMatMul | Op::ConvInteger | Op::QLinearConv => {
                intmm::lower(self, node)
            }
            o if norm_extra::claims(o, &node.attrs, node.outputs.len()) => {
                norm_extra::lower(self, node)
            }
            o if extra_outputs::claims(o, node.outputs.len()) => extra_outputs::lower(self, node),
            _ => self.node_by_class(node),
        };
        r.map_err(|m| PassError::node(PASS, node, m))
    }

    fn node_by_class(&mut self, node: &Node) -> Result<(), String> {
        match node.op.class() {
            OpClass::Elementwise => elementwise::lower(self, node),
            OpClass::Fused if node.op == Op::FusedElementwise => elementwise::lower(self, node),
            OpClass::Conv => conv::lower(self, node),
            OpClass::Fused if node.op == Op::FusedConv => conv::lower(self, node),
            OpClass::Pool => pool::lower(self, node),
            OpClass::Fused | OpClass::Linalg => matmul::lower(self, node),
            OpClass::Reduction => reduce::lower(self, node),
            OpClass::Normalization => norm::lower(self, node),
            OpClass::Movement => movement::lower(self, node),
            OpClass::Attention => attention::lower(self, node),
            _ => Err(format!("{} has no kernel schedule", node.op)),
        }
    }

    /// Turns graph outputs into Output buffers: a temp computed for exactly
    /// that output becomes the output; anything else gets a copy kernel.
    fn finish_outputs(&mut self) -> Result<(), PassError> {
        let g = self.graph;
        let mut taken: HashMap<BufId, ()> = HashMap::new();
        for (i, &v) in g.outputs.iter().enumerate() {
            let src = self.buf(v);
            let dims = self.dims(v);
            let b = &self.prog.buffers[src.index()];
            let reuse = matches!(b.kind, BufKind::Temp { .. })
                && !taken.contains_key(&src)
                && b.len() == dims.iter().product::<usize>();
            if reuse {
                let b = &mut self.prog.buffers[src.index()];
                b.kind = BufKind::Output(i);
                b.shape = dims;
                b.name = g.value(v).name.clone().or(b.name.take());
                taken.insert(src, ());
            } else {
                let dst = self.new_buffer(v, BufKind::Output(i));
                let k =
                    movement::copy_kernel(self, &format!("output {}", g.display_name(v)), src, dst);
                self.push(k);
            }
        }
        Ok(())
    }
}

/// A kernel under construction: variables, parameters and grid.
pub struct KernelBuilder {
    pub name: String,
    params: BTreeMap<BufId, Access>,
    pub grid: Vec<ParAxis>,
    next_var: u32,
}

impl KernelBuilder {
    pub fn new(name: impl Into<String>) -> KernelBuilder {
        KernelBuilder {
            name: name.into(),
            params: BTreeMap::new(),
            grid: Vec::new(),
            next_var: 0,
        }
    }

    /// A fresh variable.
    pub fn var(&mut self) -> Var {
        let v = Var(self.next_var);
        self.next_var += 1;
        v
    }

    /// Adds a grid axis `0..extent` and returns its variable.
    pub fn axis(&mut self, extent: usize) -> Var {
        let v = self.var();
        self.grid.push(ParAxis {
            var: v,
            extent: extent.max(1) as u64,
            level: ParLevel::Grid,
        });
        v
    }

    pub fn read(&mut self, b: BufId) {
        let e = self.params.entry(b).or_insert(Access::Read);
        if *e == Access::Write {
            *e = Access::ReadWrite;
        }
    }

    pub fn write(&mut self, b: BufId) {
        let e = self.params.entry(b).or_insert(Access::Write);
        if *e == Access::Read {
            *e = Access::ReadWrite;
        }
    }

    pub fn finish(self, body: Vec<Stmt>) -> Kernel {
        Kernel {
            name: self.name,
            params: self
                .params
                .into_iter()
                .map(|(buf, access)| Param { buf, access })
                .collect(),
            grid: self.grid,
            body,
        }
    }
}

/// `for v in start..end step s { body }`.
pub fn for_(v: Var, start: IndexExpr, end: IndexExpr, step: i64, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var: v,
        start,
        end,
        step,
        body,
    }
}

/// `for v in 0..n { body }`.
pub fn for_n(v: Var, n: usize, body: Vec<Stmt>) -> Stmt {
    for_(v, IndexExpr::c(0), IndexExpr::c(n as i64), 1, body)
}

/// Index of element `idx` (one variable/expr per output axis) of an operand of
/// shape `in_dims` broadcast to an output of rank `idx.len()` (numpy rules).
pub fn broadcast_index(in_dims: &[usize], idx: &[IndexExpr]) -> IndexExpr {
    let off = idx.len() - in_dims.len();
    let st = kiln_ir::shape::strides(in_dims);
    let mut e = IndexExpr::c(0);
    for (d, (&n, &s)) in in_dims.iter().zip(&st).enumerate() {
        if n != 1 {
            e = e.add(idx[off + d].clone().mul(s as i64));
        }
    }
    e
}

/// Splits a flat row-major index `flat` over `dims` into per-axis index expressions.
pub fn unflatten(flat: IndexExpr, dims: &[usize]) -> Vec<IndexExpr> {
    let st = kiln_ir::shape::strides(dims);
    dims.iter()
        .zip(&st)
        .enumerate()
        .map(|(i, (&n, &s))| {
            if n == 1 {
                IndexExpr::c(0)
            } else {
                let q = flat.clone().div(s as i64);
                if i == 0 {
                    q
                } else {
                    q.rem(n as i64)
                }
            }
        })
        .collect()
}

/// The compute type of a storage dtype: f16/bf16 compute in f32.
pub fn compute_dtype(d: DType) -> DType {
    match d {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// Loads element(s) of a buffer of storage dtype `d`, converted to the compute type.
pub fn load_c(buf: BufId, d: DType, index: IndexExpr, lanes: u32) -> Expr {
    let e = Expr::load(buf, index, lanes);
    if compute_dtype(d) != d {
        Expr::cast(DType::F32, e)
    } else {
        e
    }
}

/// Converts a compute-type value to storage dtype `d` for a store.
pub fn to_storage(e: Expr, d: DType) -> Expr {
    if compute_dtype(d) != d {
        Expr::cast(d, e)
    } else {
        e
    }
}

/// A scalar float constant of compute type `d` (f32 or f64), splatted to `lanes`.
pub fn fconst(d: DType, v: f64, lanes: u32) -> Expr {
    Expr::splat(lanes, Expr::float(compute_dtype(d), v))
}

#[cfg(test)]
mod testing;
