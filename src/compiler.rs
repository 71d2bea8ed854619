//! The compiler as a library: [`Compiler`] (target and options) turns a graph
//! into a [`CompiledModel`], whose [`run`](CompiledModel::run) can be called
//! many times and from several threads.
//!
//! The pipeline, with each stage timed ([`Timings`]):
//!
//! ```text
//! import → simplify → optimize (e-graph) → simplify → lower (kernel IR) → memplan → codegen
//! ```
//!
//! Native code needs static shapes. A model whose inputs have symbolic
//! dimensions (unbound by [`Compiler::dim`]) is optimized once in its symbolic
//! form and compiled again for each new combination of input shapes it is run
//! with (cached), so that all shape arithmetic is folded at compile time.
//!
//! An op the backend cannot compile is a compile error naming the node and
//! the op; there is no silent fallback to the interpreter.

use crate::{Error, Result};
use kiln_ir::kernel::Program;
use kiln_ir::{Dim, Graph, Op, Tensor, TargetInfo};
use kiln_passes::egraph::{self, OptimizeOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which backend executes the compiled model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// The reference interpreter, on the optimized graph.
    Interp,
    /// Native code through Cranelift's JIT (the default).
    #[default]
    Cranelift,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Interp => "interp",
            Backend::Cranelift => "cranelift",
        }
    }
}

/// Time spent in each compile stage, in order. A stage that ran several
/// times (per input-shape specialisation) is listed each time.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub stages: Vec<(&'static str, Duration)>,
}

impl Timings {
    fn time<T>(&mut self, stage: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t0 = Instant::now();
        let r = f();
        self.stages.push((stage, t0.elapsed()));
        r
    }

    pub fn total(&self) -> Duration {
        self.stages.iter().map(|s| s.1).sum()
    }

    /// One line per stage and a total, in milliseconds.
    pub fn table(&self) -> String {
        let mut s = String::new();
        for (name, d) in &self.stages {
            s.push_str(&format!("  {name:<10} {:>9.2} ms\n", d.as_secs_f64() * 1e3));
        }
        s.push_str(&format!("  {:<10} {:>9.2} ms\n", "total", self.total().as_secs_f64() * 1e3));
        s
    }
}

/// Compiler settings. `Compiler::default()` compiles for this machine with
/// Cranelift, optimizing in f32.
#[derive(Clone, Debug)]
pub struct Compiler {
    pub backend: Backend,
    /// The cost model's target (the optimizer's choices depend on it).
    pub target: TargetInfo,
    /// Run the e-graph optimizer (on by default).
    pub optimize: bool,
    /// Optimizer options; `None`: [`OptimizeOptions::new`] for the target.
    pub optimize_options: Option<OptimizeOptions>,
    /// Values for symbolic input dimensions.
    pub dims: BTreeMap<String, usize>,
    /// Worker threads for native code (`None`: the machine's parallelism).
    pub threads: Option<usize>,
    /// Lower MatMul/Conv/Attention precision (`None` or f32: as written);
    /// `auto` measures on random samples against the accuracy budget.
    pub precision: Option<kiln_passes::precision::PrecisionOptions>,
}

impl Default for Compiler {
    fn default() -> Compiler {
        Compiler {
            backend: Backend::Cranelift,
            target: TargetInfo::cranelift(),
            optimize: true,
            optimize_options: None,
            dims: BTreeMap::new(),
            threads: None,
            precision: None,
        }
    }
}

impl Compiler {
    pub fn new() -> Compiler {
        Compiler::default()
    }

    pub fn backend(mut self, b: Backend) -> Compiler {
        self.backend = b;
        self
    }

    pub fn target(mut self, t: TargetInfo) -> Compiler {
        self.target = t;
        self
    }

    pub fn optimize(mut self, on: bool) -> Compiler {
        self.optimize = on;
        self
    }

    /// Binds a symbolic input dimension.
    pub fn dim(mut self, name: &str, n: usize) -> Compiler {
        self.dims.insert(name.to_string(), n);
        self
    }

    pub fn threads(mut self, n: usize) -> Compiler {
        self.threads = Some(n);
        self
    }

    fn opt_options(&self) -> OptimizeOptions {
        self.optimize_options.clone().unwrap_or_else(|| OptimizeOptions::new(self.target.clone()))
    }

    /// Loads and compiles a model file (.onnx or .kir).
    pub fn compile_file(&self, path: &Path) -> Result<CompiledModel> {
        let mut timings = Timings::default();
        let opts = kiln_frontend::ImportOptions { dims: self.dims.clone() };
        let g = timings.time("import", || crate::load_model_with(path, &opts))?;
        self.compile_with_timings(g, timings)
    }

    /// Compiles a graph.
    pub fn compile(&self, g: Graph) -> Result<CompiledModel> {
        self.compile_with_timings(g, Timings::default())
    }

    fn compile_with_timings(&self, g: Graph, mut timings: Timings) -> Result<CompiledModel> {
        kiln_ir::verify::verify(&g)?;
        let original_inputs: Vec<_> = g.inputs.iter().map(|&v| (g.display_name(v), g.ty(v).clone())).collect();
        let mut g = if self.dims.is_empty() { g } else { bind_dims(&g, &self.dims)? };
        timings.time("simplify", || Ok(kiln_passes::pipeline::simplify(&mut g)?))?;
        let source = g.clone();
        let is_static = fully_static(&g);
        // native code for symbolic shapes is optimized per specialisation, after binding
        let (g, report) = if self.backend == Backend::Cranelift && !is_static {
            (g, None)
        } else {
            self.optimize_graph(g, &mut timings)?
        };
        let mut model = CompiledModel {
            compiler: self.clone(),
            source,
            graph: g,
            report,
            inputs: original_inputs,
            timings: Mutex::new(timings),
            natives: Mutex::new(HashMap::new()),
            plans: Mutex::new(HashMap::new()),
            value_specialise: false,
        };
        if self.backend == Backend::Cranelift && is_static {
            if let Err(e) = model.static_native() {
                // a schedule may need an operand's value (Reduce axes, Pad pads given as
                // inputs): specialise on the small inputs' values at run time instead
                if foldable_inputs(&model.source).is_empty() {
                    return Err(e);
                }
                model.value_specialise = true;
            }
        }
        Ok(model)
    }

    /// The optimizer (and precision choice) on a simplified graph, then the
    /// classic passes again (rewrites leave constant subexpressions behind).
    fn optimize_graph(&self, g: Graph, timings: &mut Timings) -> Result<(Graph, Option<egraph::Report>)> {
        if !self.optimize {
            return Ok((g, None));
        }
        let opts = self.opt_options();
        let precision = self.precision.clone().filter(|p| p.precision != kiln_passes::precision::Precision::F32);
        let (mut og, r) = timings.time("optimize", || match &precision {
            Some(p) => {
                let (og, pr) = kiln_passes::precision::choose_precision(&g, &opts, p, &[])?;
                Ok((og, pr.optimizer))
            }
            None => Ok(egraph::optimize(&g, &opts)?),
        })?;
        timings.time("refold", || Ok(kiln_passes::pipeline::simplify(&mut og)?))?;
        Ok((og, Some(r)))
    }
}

impl Compiler {
    /// The kernel-IR program the native backend would compile for a model
    /// file (after optimization and memory planning), and the graph it came
    /// from. Needs static shapes: bind symbolic input dimensions first.
    pub fn lower_file(&self, path: &Path) -> Result<(Graph, Program)> {
        let m = self.clone().backend(Backend::Interp).compile_file(path)?;
        let g = m.graph;
        if let Some(&v) = g.inputs.iter().find(|&&v| !g.ty(v).shape.is_fixed()) {
            return Err(Error::Usage(format!(
                "input `{}` has the symbolic type {}: bind its dimensions with --dim NAME=N to lower it",
                g.display_name(v),
                g.ty(v)
            )));
        }
        let program = lower(&g, &mut Timings::default())?;
        Ok((g, program))
    }
}

/// Lowers a static graph to a memory-planned kernel program.
fn lower(g: &Graph, timings: &mut Timings) -> Result<Program> {
    let opts = kiln_passes::schedule::Options::default();
    let mut program = timings.time("lower", || Ok(kiln_passes::schedule::lower(g, &opts)?))?;
    timings.time("memplan", || {
        kiln_passes::memplan::plan(&mut program);
        Ok(())
    })?;
    Ok(program)
}

/// The graph with its symbolic input dimensions bound, simplified so that
/// shapes downstream become static.
pub fn bind_dims(g: &Graph, dims: &BTreeMap<String, usize>) -> Result<Graph> {
    let mut g = g.clone();
    // a dimension name means one size throughout the graph
    for info in g.values.iter_mut() {
        for d in info.ty.shape.0.iter_mut() {
            if let Dim::Sym(name) = d {
                if let Some(&n) = dims.get(name.as_str()) {
                    *d = Dim::Fixed(n);
                }
            }
        }
    }
    kiln_passes::reinfer::reinfer(&mut g)?;
    kiln_passes::pipeline::simplify(&mut g)?;
    Ok(g)
}

/// A model compiled for one backend: run it as often as you like, from as
/// many threads as you like.
pub struct CompiledModel {
    compiler: Compiler,
    /// The simplified graph before optimization: what a shape specialisation starts from.
    source: Graph,
    graph: Graph,
    report: Option<egraph::Report>,
    inputs: Vec<(String, kiln_ir::TensorType)>,
    timings: Mutex<Timings>,
    /// Native code per specialisation.
    natives: Mutex<HashMap<Key, Arc<Native>>>,
    /// Per input-shape signature: the bound graph and the inputs folded as constants.
    plans: Mutex<HashMap<Vec<Vec<usize>>, (Arc<Graph>, Vec<usize>)>>,
    /// The static graph did not lower without knowing some small inputs' values.
    value_specialise: bool,
}

/// Inputs of at most this many elements may be specialised as constants
/// when shapes depend on their values.
pub const FOLD_LIMIT: usize = 64;

/// Operand positions whose *values* decide an op's output shape or are read
/// as parameters by its schedule (shapes, axes, pads, sizes, counts).
fn value_operands(op: Op) -> &'static [usize] {
    match op {
        Op::Reshape | Op::Expand | Op::Tile | Op::Squeeze | Op::Unsqueeze | Op::TopK | Op::OneHot | Op::CumSum | Op::Trilu | Op::Split => &[1],
        Op::ReduceMean | Op::ReduceSum | Op::ReduceMax | Op::ReduceMin | Op::ReduceProd | Op::ReduceL1 | Op::ReduceL2 | Op::ReduceLogSum
        | Op::ReduceLogSumExp | Op::ReduceSumSquare => &[1],
        Op::Slice => &[1, 2, 3, 4],
        Op::Pad => &[1, 3],
        Op::Resize => &[1, 2, 3],
        Op::Range => &[0, 1, 2],
        Op::ConstantOfShape => &[0],
        _ => &[],
    }
}

/// The positions of small graph inputs that some node reads at a value
/// operand position: the only inputs native code specialises on. Data
/// operands are never folded, so an op without a schedule stays an error
/// instead of being computed by the interpreter at compile time.
fn foldable_inputs(g: &Graph) -> Vec<usize> {
    g.inputs
        .iter()
        .enumerate()
        .filter(|&(_, &v)| g.ty(v).shape.numel().is_some_and(|n| n <= FOLD_LIMIT))
        .filter(|&(_, &v)| {
            g.nodes.iter().any(|n| value_operands(n.op).iter().any(|&i| n.inputs.get(i).copied().flatten() == Some(v)))
        })
        .map(|(i, _)| i)
        .collect()
}

/// What a native specialisation is for: input shapes, and the bytes of the
/// inputs folded as constants (empty for a static model).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Key {
    shapes: Vec<Vec<usize>>,
    values: Vec<Vec<u8>>,
}

/// Every value's shape is static.
fn fully_static(g: &Graph) -> bool {
    g.values.iter().all(|v| v.ty.shape.is_fixed())
}

/// One static-shape specialisation: the kernel program and its machine code.
pub struct Native {
    pub program: Program,
    pub exe: kiln_cranelift::Executable,
    /// Input positions specialised as constants (not passed to `exe`).
    pub folded: Vec<usize>,
}

impl CompiledModel {
    /// The graph that runs (after simplification and optimization). For
    /// native code with symbolic input shapes, the simplified graph before
    /// optimization: each shape specialisation is optimized after binding.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The optimizer's report (`None` when optimization was off).
    pub fn report(&self) -> Option<&egraph::Report> {
        self.report.as_ref()
    }

    pub fn backend(&self) -> Backend {
        self.compiler.backend
    }

    /// Compile time per stage so far (specialisations included).
    pub fn timings(&self) -> Timings {
        self.timings.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The model's inputs: name and type, as declared.
    pub fn inputs(&self) -> &[(String, kiln_ir::TensorType)] {
        &self.inputs
    }

    /// The native code of a model whose shapes are all static (compiled once).
    fn static_native(&self) -> Result<Arc<Native>> {
        let key = Key::default();
        if let Some(n) = self.natives.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(n);
        }
        let mut timings = Timings::default();
        let native = Arc::new(self.build_native(&self.graph, vec![], &mut timings)?);
        self.remember(key, native.clone(), timings);
        Ok(native)
    }

    /// The native specialisation for these inputs, compiling it on first use.
    ///
    /// Symbolic dimensions are bound from the inputs' shapes. If some shapes
    /// are still not static, or a schedule needs an operand's value (a
    /// Reshape's target shape, Reduce axes, Resize sizes given as inputs), the
    /// small inputs read at such value positions (at most [`FOLD_LIMIT`]
    /// elements) are specialised as constants too, and the code is cached by
    /// their values as well.
    pub fn native_for(&self, inputs: &[Tensor]) -> Result<Arc<Native>> {
        if fully_static(&self.graph) && !self.value_specialise {
            return self.static_native();
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let mut timings = Timings::default();
        let plan = self.plans.lock().ok().and_then(|p| p.get(&shapes).cloned());
        let (bound, folded) = match plan {
            Some(p) => p,
            None => {
                let src = &self.source;
                let mut dims = BTreeMap::new();
                for (&v, s) in src.inputs.iter().zip(&shapes) {
                    for (d, &n) in src.ty(v).shape.0.iter().zip(s) {
                        if let Dim::Sym(name) = d {
                            dims.insert(name.clone(), n);
                        }
                    }
                }
                let bound = timings.time("specialise", || bind_dims(src, &dims))?;
                let folded: Vec<usize> = if fully_static(&bound) && !self.value_specialise {
                    vec![]
                } else {
                    foldable_inputs(&bound)
                };
                let plan = (Arc::new(bound), folded);
                if let Ok(mut p) = self.plans.lock() {
                    p.insert(shapes.clone(), plan.clone());
                }
                plan
            }
        };
        let key = Key { shapes, values: folded.iter().map(|&i| inputs[i].to_le_bytes()).collect() };
        if let Some(n) = self.natives.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(n);
        }
        let mut g = (*bound).clone();
        if !folded.is_empty() {
            for &i in folded.iter().rev() {
                let v = g.inputs.remove(i);
                g.consts.insert(v, inputs[i].clone());
            }
            timings.time("specialise", || Ok(kiln_passes::pipeline::simplify(&mut g)?))?;
        }
        if let Some(v) = g.values.iter().position(|info| !info.ty.shape.is_fixed()) {
            let info = &g.values[v];
            return Err(Error::Backend(format!(
                "value `{}` has the type {} even with every input's shape (and every small input's value) known; \
                 native code needs static shapes",
                info.name.clone().unwrap_or_else(|| format!("%{v}")),
                info.ty
            )));
        }
        let g = self.compiler.optimize_graph(g, &mut timings)?.0;
        let native = Arc::new(self.build_native(&g, folded, &mut timings)?);
        self.remember(key, native.clone(), timings);
        Ok(native)
    }

    fn build_native(&self, g: &Graph, folded: Vec<usize>, timings: &mut Timings) -> Result<Native> {
        let program = lower(g, timings)?;
        let mut copts = kiln_cranelift::Options::default();
        if let Some(t) = self.compiler.threads {
            copts.threads = t.max(1);
        }
        let exe = timings.time("codegen", || Ok(kiln_cranelift::compile(&program, &copts)?))?;
        Ok(Native { program, exe, folded })
    }

    fn remember(&self, key: Key, native: Arc<Native>, timings: Timings) {
        if let Ok(mut t) = self.timings.lock() {
            t.stages.extend(timings.stages);
        }
        if let Ok(mut m) = self.natives.lock() {
            m.insert(key, native);
        }
    }

    /// Runs the model. Inputs are checked against the declared types (count,
    /// dtype, rank, fixed dimensions, consistent symbolic dimensions) first.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        kiln_ir::interp::check_inputs(&self.graph, inputs)?;
        match self.compiler.backend {
            Backend::Interp => Ok(kiln_ir::interp::run(&self.graph, inputs)?),
            Backend::Cranelift => {
                let native = self.native_for(inputs)?;
                if native.folded.is_empty() {
                    Ok(native.exe.run(inputs)?)
                } else {
                    let rest: Vec<Tensor> = inputs
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !native.folded.contains(i))
                        .map(|(_, t)| t.clone())
                        .collect();
                    Ok(native.exe.run(&rest)?)
                }
            }
        }
    }

    /// Arena bytes of the native code for the model's static shapes (or the
    /// largest specialisation compiled so far); `None` for the interpreter.
    pub fn peak_bytes(&self) -> Option<usize> {
        let m = self.natives.lock().ok()?;
        m.values().map(|n| n.program.arena_bytes).max()
    }
}

impl std::fmt::Debug for CompiledModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModel").field("backend", &self.compiler.backend).field("graph", &self.graph.name).finish()
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<CompiledModel>();
}

impl From<kiln_cranelift::Error> for Error {
    fn from(e: kiln_cranelift::Error) -> Error {
        Error::Backend(e.to_string())
    }
}
