//! Errors of the Cranelift backend: compile errors name the kernel and the
//! construct at fault; run errors name the input or the kernel.

/// A Cranelift-backend error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel uses a construct this backend does not compile.
    #[error("kernel `{kernel}`: unsupported by the Cranelift backend: {what}")]
    Unsupported { kernel: String, what: String },
    /// The kernel program is malformed in a way the backend noticed while
    /// translating it (types that do not fit, unbound variables, ...).
    #[error("kernel `{kernel}`: {msg}")]
    Malformed { kernel: String, msg: String },
    /// The program failed the kernel-IR verifier.
    #[error(transparent)]
    Verify(#[from] kiln_ir::kernel::KernelError),
    /// Cranelift could not set up the native target.
    #[error("cranelift target setup: {0}")]
    Target(String),
    /// Cranelift rejected a function (a backend bug, reported with the kernel).
    #[error("kernel `{kernel}`: cranelift: {msg}")]
    Codegen { kernel: String, msg: String },
    /// The inputs given to `Executable::run` do not fit the program.
    #[error("input {index} (`{name}`): {msg}")]
    Input {
        index: usize,
        name: String,
        msg: String,
    },
    /// Wrong number of inputs.
    #[error("the program takes {expected} inputs but {given} were given")]
    InputCount { expected: usize, given: usize },
    /// A failure while running (memory, output assembly).
    #[error("run: {0}")]
    Run(String),
}

pub type Result<T> = std::result::Result<T, Error>;
