//! # kiln-cranelift
//!
//! kiln's default CPU backend: kernel IR in, Cranelift JIT-compiled machine code out.
//!
//! [`compile`] translates every kernel of a kernel-IR [`Program`] into one
//! Cranelift function (module [`lower`]), JIT-compiles them for the host
//! (ISA from `cranelift-native`, `opt_level=speed`) and returns an
//! [`Executable`]. [`Executable::run`] checks the inputs, lays out the buffers
//! (inputs in place, constants stored once in the executable, temporaries in
//! one arena per call at their planned offsets) and runs the kernels in order,
//! each kernel's grid split over a thread pool ([`runtime`]).
//!
//! Every kernel-IR construct compiles; one the backend cannot handle (a value
//! crossing a barrier in a kernel with block axes) is an [`Error`] naming the
//! kernel and the construct, never a silent fallback. Numerics are the kernel
//! interpreter's bit for bit, including exp/log/tanh/erf/... (computed by the
//! same Rust functions, called per lane), except where [`Options::fast_exp`]
//! asks for the inline vectorised `exp` (a few ulp).

pub mod error;
pub mod helpers;
pub mod lower;
pub mod runtime;

pub use error::{Error, Result};

use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};
use kiln_ir::kernel::{BufKind, Program};
use kiln_ir::{with_data, DType, Data, Tensor};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Compile options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Threads that run a kernel's grid (the caller included). Default: the
    /// machine's available parallelism.
    pub threads: usize,
    /// Inline vectorised `exp` for f32x4 values (a few ulp from libm's
    /// `expf`, results below 2^-126 flushed to zero) instead of a libm call
    /// per lane (bit-identical to the interpreter). Default: off.
    pub fast_exp: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            fast_exp: false,
        }
    }
}

/// Time spent per compile stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Kernel IR → CLIF (all kernels).
    pub clif_build: Duration,
    /// Cranelift code generation and JIT linking (all kernels).
    pub cranelift_compile: Duration,
    /// Number of kernels compiled.
    pub kernels: usize,
}

struct CompiledKernel {
    name: String,
    func: runtime::KernelFn,
    info: lower::KernelInfo,
}

/// Where a program buffer's storage comes from at run time.
#[derive(Clone, Debug)]
enum Place {
    Input(usize),
    Output(usize),
    Const(usize),
    Arena(usize),
    Own,
}

#[derive(Clone, Debug)]
struct BufMeta {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    place: Place,
}

/// The JIT module; its code is immutable once finalized.
struct Module_(Option<JITModule>);

// SAFETY: after `finalize_definitions` the module is never mutated again; it
// only owns the executable memory that the kernel function pointers point
// into, and is freed in `Drop` when no call can be running (`run` borrows the
// executable for the whole call).
unsafe impl Send for Module_ {}
unsafe impl Sync for Module_ {}

impl Drop for Module_ {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            // SAFETY: the owning `Executable` is being dropped, so no kernel of
            // this module is running or will be called again.
            unsafe { m.free_memory() }
        }
    }
}

/// A compiled program: call [`Executable::run`] as often as needed, from any
/// number of threads at once.
pub struct Executable {
    // Field order: the pool (whose workers may hold kernel pointers between
    // tasks, never during) goes before the module.
    pool: runtime::Pool,
    kernels: Vec<CompiledKernel>,
    _module: Module_,
    buffers: Vec<BufMeta>,
    consts: Vec<Tensor>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    arena_bytes: usize,
    timings: Timings,
}

impl std::fmt::Debug for Executable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executable")
            .field(
                "kernels",
                &self.kernels.iter().map(|k| &k.name).collect::<Vec<_>>(),
            )
            .field("arena_bytes", &self.arena_bytes)
            .field("threads", &self.pool.threads())
            .finish()
    }
}

fn make_module() -> Result<JITModule> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| Error::Target(format!("{k}={v}: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", "false")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    let isa = cranelift_native::builder()
        .map_err(|e| Error::Target(e.to_string()))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| Error::Target(e.to_string()))?;
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    for (name, ptr, _) in helpers::symbols() {
        jb.symbol(name, ptr);
    }
    Ok(JITModule::new(jb))
}

/// Builds the CLIF of every kernel into `module`; `each` sees every function
/// before it is defined. Returns the function ids and kernel infos.
fn build(
    program: &Program,
    opts: &Options,
    module: &mut JITModule,
    define: bool,
    mut each: impl FnMut(&str, &cranelift_codegen::ir::Function),
    timings: &mut Timings,
) -> Result<Vec<(FuncId, lower::KernelInfo)>> {
    kiln_ir::kernel::verify::verify(program)?;
    let mut imports: HashMap<&'static str, FuncId> = HashMap::new();
    for (name, _, sig) in helpers::symbols() {
        let s = lower::helper_signature(module, sig);
        let id = module
            .declare_function(name, Linkage::Import, &s)
            .map_err(|e| Error::Target(format!("declaring helper {name}: {e}")))?;
        imports.insert(name, id);
    }
    let sig = lower::kernel_signature(module);
    let ptr_ty = module.target_config().pointer_type();
    let mut fctx = FunctionBuilderContext::new();
    let mut ctx = module.make_context();
    let mut out = Vec::new();
    for (i, k) in program.kernels.iter().enumerate() {
        let t0 = Instant::now();
        let id = module
            .declare_function(&format!("kernel{i}"), Linkage::Local, &sig)
            .map_err(|e| Error::Codegen {
                kernel: k.name.clone(),
                msg: e.to_string(),
            })?;
        ctx.func.signature = sig.clone();
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        let info = {
            let b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let mut tr = lower::Tr {
                kernel: k,
                prog: program,
                b,
                module: &mut *module,
                imports: &imports,
                frefs: HashMap::new(),
                ptr_ty,
                bufs: HashMap::new(),
                vars: HashMap::new(),
                scratch: cranelift_codegen::ir::Value::from_u32(0),
                scratch_bytes: 0,
                stack_bytes: 0,
                fast_exp: opts.fast_exp,
                after_barrier: false,
            };
            let info = tr.translate()?;
            let lower::Tr { b, .. } = tr;
            b.finalize(module.target_config());
            info
        };
        each(&k.name, &ctx.func);
        timings.clif_build += t0.elapsed();
        if define {
            let t1 = Instant::now();
            module
                .define_function(id, &mut ctx)
                .map_err(|e| Error::Codegen {
                    kernel: k.name.clone(),
                    msg: match &e {
                        cranelift_module::ModuleError::Compilation(ce) => format!("{ce:?}"),
                        _ => e.to_string(),
                    },
                })?;
            timings.cranelift_compile += t1.elapsed();
        }
        module.clear_context(&mut ctx);
        out.push((id, info));
    }
    timings.kernels = program.kernels.len();
    Ok(out)
}

/// Compiles a kernel program to native code.
pub fn compile(program: &Program, opts: &Options) -> Result<Executable> {
    let mut module = make_module()?;
    let mut timings = Timings::default();
    let funcs = build(program, opts, &mut module, true, |_, _| {}, &mut timings)?;
    let t1 = Instant::now();
    module.finalize_definitions().map_err(|e| Error::Codegen {
        kernel: "<link>".into(),
        msg: e.to_string(),
    })?;
    timings.cranelift_compile += t1.elapsed();
    let kernels = program
        .kernels
        .iter()
        .zip(funcs)
        .map(|(k, (id, info))| {
            let p = module.get_finalized_function(id);
            // SAFETY: the function was defined with `kernel_signature`, which is
            // exactly `KernelFn` in the platform's C calling convention.
            let func = unsafe { std::mem::transmute::<*const u8, runtime::KernelFn>(p) };
            CompiledKernel {
                name: k.name.clone(),
                func,
                info,
            }
        })
        .collect();
    let mut consts = Vec::new();
    let buffers = program
        .buffers
        .iter()
        .map(|b| {
            let place = match &b.kind {
                BufKind::Input(i) => Place::Input(*i),
                BufKind::Output(i) => Place::Output(*i),
                BufKind::Const(t) => {
                    consts.push(t.clone());
                    Place::Const(consts.len() - 1)
                }
                BufKind::Temp { offset: Some(o) } => Place::Arena(*o),
                BufKind::Temp { offset: None } => Place::Own,
            };
            BufMeta {
                name: b.name.clone().unwrap_or_else(|| b.id.to_string()),
                dtype: b.dtype,
                shape: b.shape.clone(),
                place,
            }
        })
        .collect();
    Ok(Executable {
        pool: runtime::Pool::new(opts.threads),
        kernels,
        _module: Module_(Some(module)),
        buffers,
        consts,
        inputs: program.inputs().into_iter().map(|b| b.index()).collect(),
        outputs: program.outputs().into_iter().map(|b| b.index()).collect(),
        arena_bytes: program.arena_bytes,
        timings,
    })
}

/// The CLIF text of every kernel (before Cranelift's optimisations), each
/// preceded by a `; kernel "name"` line.
pub fn dump_clif(program: &Program) -> Result<String> {
    let mut module = make_module()?;
    let mut s = String::new();
    let mut timings = Timings::default();
    build(
        program,
        &Options::default(),
        &mut module,
        false,
        |name, f| {
            s.push_str(&format!("; kernel {name:?}\n{}\n", f.display()));
        },
        &mut timings,
    )?;
    // SAFETY: nothing was finalized; no code from this module can run.
    unsafe { module.free_memory() };
    Ok(s)
}

fn data_ptr(d: &Data) -> *mut u8 {
    with_data!(d, v => v.as_ptr() as *mut u8)
}

impl Executable {
    /// Bytes of temporary memory one call uses: the planned arena plus any
    /// temporaries the memory planner left unplanned.
    pub fn peak_bytes(&self) -> usize {
        self.arena_bytes
            + self
                .buffers
                .iter()
                .filter(|b| matches!(b.place, Place::Own))
                .map(|b| b.shape.iter().product::<usize>() * b.dtype.size_bytes())
                .sum::<usize>()
    }

    /// Time spent compiling, per stage.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Number of threads kernels run on.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Names of the kernels, in run order.
    pub fn kernel_names(&self) -> Vec<&str> {
        self.kernels.iter().map(|k| k.name.as_str()).collect()
    }

    /// Runs the program on `inputs` (in input order) and returns its outputs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::InputCount {
                expected: self.inputs.len(),
                given: inputs.len(),
            });
        }
        for (i, &b) in self.inputs.iter().enumerate() {
            let m = &self.buffers[b];
            let t = &inputs[i];
            if t.dtype() != m.dtype || t.shape() != m.shape.as_slice() {
                return Err(Error::Input {
                    index: i,
                    name: m.name.clone(),
                    msg: format!(
                        "expected {}{:?}, got {}{:?}",
                        m.dtype,
                        m.shape,
                        t.dtype(),
                        t.shape()
                    ),
                });
            }
        }
        let mut arena = vec![0u64; self.arena_bytes.div_ceil(8) + 8];
        let arena_base = {
            let p = arena.as_mut_ptr() as *mut u8;
            // SAFETY: the padding is below 64 bytes and the arena has 64 spare bytes.
            unsafe { p.add(p.align_offset(64)) }
        };
        let mut own: Vec<Vec<u64>> = Vec::new();
        let mut outs: Vec<Option<Data>> = vec![None; self.outputs.len()];
        let mut ptrs: Vec<*mut u8> = vec![std::ptr::null_mut(); self.buffers.len()];
        for (i, m) in self.buffers.iter().enumerate() {
            let n: usize = m.shape.iter().product();
            ptrs[i] = match m.place {
                Place::Input(k) => data_ptr(inputs[k].data()),
                Place::Const(k) => data_ptr(self.consts[k].data()),
                Place::Output(k) => {
                    let d = Data::zeros(m.dtype, n);
                    let p = data_ptr(&d);
                    outs[k] = Some(d);
                    p
                }
                // SAFETY: the verifier checked offset + size <= arena bytes.
                Place::Arena(off) => unsafe { arena_base.add(off) },
                Place::Own => {
                    let mut v = vec![0u64; (n * m.dtype.size_bytes()).div_ceil(8) + 1];
                    let p = v.as_mut_ptr() as *mut u8;
                    own.push(v);
                    p
                }
            };
        }
        for k in &self.kernels {
            // SAFETY: `ptrs` holds a valid address for every buffer of the
            // program, sized as the program says; inputs and constants are only
            // read (the verifier checks parameter access), outputs, arena and
            // own temporaries are owned by this call.
            unsafe {
                self.pool.launch(
                    k.func,
                    ptrs.as_ptr(),
                    k.info.grid_points,
                    k.info.scratch_bytes,
                )
            };
        }
        drop(own);
        drop(arena);
        self.outputs
            .iter()
            .zip(outs)
            .enumerate()
            .map(|(i, (&b, d))| {
                let m = &self.buffers[b];
                let d = d.ok_or_else(|| Error::Run(format!("output {i} has no storage")))?;
                Tensor::new(m.shape.clone(), d).map_err(|e| Error::Run(e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn assert_send_sync<T: Send + Sync>() {}
    #[test]
    fn executable_is_send_and_sync() {
        assert_send_sync::<Executable>();
    }
}
