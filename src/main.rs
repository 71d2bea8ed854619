//! The `kiln` command-line tool.

use clap::{Parser, Subcommand, ValueEnum};
use kiln::{io, Error, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "kiln: a tensor compiler for ONNX models and kiln IR",
    long_about = "kiln: a tensor compiler. It reads ONNX models (.onnx) and kiln's text IR (.kir), \
lowers them to a typed graph IR, and runs them.\n\n\
Examples:\n  \
kiln run examples/tiny_bert.onnx --inputs examples/tiny_bert_inputs\n  \
kiln run model.onnx --input input_ids=ids.npy --out results/\n  \
kiln dump model.onnx --stage graph -o model.kir\n  \
kiln info model.onnx"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on inputs and print or save its outputs.
    #[command(after_help = "Examples:\n  \
kiln run model.onnx --inputs test_data_set_0\n  \
kiln run model.onnx --input x=x.npy --input mask=mask.npy --out out/\n  \
kiln run model.kir --inputs inputs/ --backend interp\n\n\
--inputs DIR holds either ONNX test data (input_<i>.pb, numbered in graph-input order, \
inputs with an initializer skipped) or one <input name>.npy per input. --out DIR gets one \
<output name>.npy per graph output, characters outside [A-Za-z0-9._-] replaced by '_'.")]
    Run {
        /// The model: .onnx or .kir
        model: PathBuf,
        /// Which backend executes the model.
        #[arg(long, value_enum, default_value_t = Backend::Interp)]
        backend: Backend,
        /// A folder of inputs (input_<i>.pb or <name>.npy).
        #[arg(long, value_name = "DIR")]
        inputs: Option<PathBuf>,
        /// One input, as NAME=FILE (.npy or .pb); repeatable; overrides --inputs.
        #[arg(long = "input", value_name = "NAME=FILE", value_parser = parse_pair)]
        input: Vec<(String, PathBuf)>,
        /// Write each output to DIR/<output name>.npy instead of printing a summary.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        dims: DimArgs,
    },
    /// Print the model at a stage of the pipeline.
    #[command(after_help = "Examples:\n  \
kiln dump model.onnx --stage onnx\n  \
kiln dump model.onnx --stage graph -o model.kir --full-constants\n  \
kiln dump model.onnx --stage simplified --dim batch=1 --dim sequence=128\n\n\
Large constants are elided in dumps unless --full-constants is given; a dump with full \
constants parses back to the same graph (kiln run model.kir).")]
    Dump {
        model: PathBuf,
        /// Which stage to print.
        #[arg(long, value_enum, default_value_t = Stage::Graph)]
        stage: Stage,
        /// Write to FILE instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print every constant in full (lossless), so the dump can be parsed back.
        #[arg(long)]
        full_constants: bool,
        #[command(flatten)]
        dims: DimArgs,
    },
    /// Summarise a model: inputs, outputs, op histogram, parameters, FLOPs and bytes.
    #[command(after_help = "Examples:\n  kiln info model.onnx\n  kiln info model.onnx --dim batch=1 --dim sequence=128\n\n\
FLOPs and bytes are counted only for nodes whose shapes are static: bind a model's symbolic \
input dimensions with --dim to count them all.")]
    Info {
        model: PathBuf,
        #[command(flatten)]
        dims: DimArgs,
    },
}

#[derive(clap::Args)]
struct DimArgs {
    /// Give a symbolic input dimension (ONNX dim_param) a value, as NAME=N; repeatable.
    #[arg(long = "dim", value_name = "NAME=N", value_parser = parse_dim)]
    dim: Vec<(String, usize)>,
}

impl DimArgs {
    fn load(&self, model: &std::path::Path) -> Result<kiln::ir::Graph> {
        let opts = kiln::frontend::ImportOptions { dims: self.dim.iter().cloned().collect() };
        kiln::load_model_with(model, &opts)
    }
}

fn parse_dim(s: &str) -> std::result::Result<(String, usize), String> {
    match s.split_once('=') {
        Some((name, n)) if !name.is_empty() => n
            .parse::<usize>()
            .map(|n| (name.to_string(), n))
            .map_err(|_| format!("expected NAME=N with N a non-negative integer, got `{s}`")),
        _ => Err(format!("expected NAME=N, got `{s}`")),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// The reference interpreter.
    Interp,
}

#[derive(Clone, Copy, ValueEnum)]
enum Stage {
    /// The ONNX protobuf as read.
    Onnx,
    /// kiln's graph IR as imported.
    Graph,
    /// The graph IR after the classic passes (constant folding, CSE, dead-node elimination).
    Simplified,
}

fn parse_pair(s: &str) -> std::result::Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("expected NAME=FILE, got `{s}`")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                // thiserror's transparent and #[source] chains repeat text; print only new detail
                let msg = s.to_string();
                if !e.to_string().contains(&msg) {
                    eprintln!("  caused by: {msg}");
                }
                src = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn write_text(text: &str, output: Option<&PathBuf>) -> Result<()> {
    match output {
        Some(p) => std::fs::write(p, text).map_err(|source| Error::Io { path: p.clone(), source }),
        None => {
            use std::io::Write;
            // a closed pipe (`kiln dump | head`) is not an error worth reporting
            let _ = std::io::stdout().write_all(text.as_bytes());
            Ok(())
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { model, backend: Backend::Interp, inputs, input, out, dims } => {
            let g = dims.load(&model)?;
            let xs = io::collect_inputs(&g, inputs.as_deref(), &input)?;
            let ys = kiln::ir::interp::run(&g, &xs)?;
            match out {
                Some(dir) => {
                    for p in io::write_outputs(&g, &ys, &dir)? {
                        println!("wrote {}", p.display());
                    }
                }
                None => {
                    for (&v, t) in g.outputs.iter().zip(&ys) {
                        println!("{}: {}", g.display_name(v), io::summarize(t));
                    }
                }
            }
            Ok(())
        }
        Command::Dump { model, stage, output, full_constants, dims } => {
            let text = match stage {
                Stage::Onnx => {
                    if kiln::ModelFormat::of(&model) != kiln::ModelFormat::Onnx {
                        return Err(Error::Usage(format!(
                            "{}: --stage onnx needs an .onnx model",
                            model.display()
                        )));
                    }
                    kiln::frontend::dump_onnx_file(&model)?
                }
                Stage::Graph | Stage::Simplified => {
                    let mut g = dims.load(&model)?;
                    if matches!(stage, Stage::Simplified) {
                        kiln::passes::simplify(&mut g)?;
                    }
                    let opts = if full_constants {
                        kiln::ir::text::PrintOptions::lossless()
                    } else {
                        kiln::ir::text::PrintOptions::default()
                    };
                    kiln::ir::text::print(&g, &opts)
                }
            };
            write_text(&text, output.as_ref())
        }
        Command::Info { model, dims } => {
            let g = dims.load(&model)?;
            print!("{}", kiln::info(&g));
            Ok(())
        }
    }
}
