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
    /// Compile a model and run it on inputs; print or save its outputs.
    #[command(after_help = "Examples:\n  \
kiln run model.onnx --inputs test_data_set_0\n  \
kiln run model.onnx --input x=x.npy --input mask=mask.npy --out out/\n  \
kiln run model.kir --inputs inputs/ --backend interp\n  \
kiln run model.onnx --inputs data/ --timings\n\n\
--inputs DIR holds either ONNX test data (input_<i>.pb, numbered in graph-input order, \
inputs with an initializer skipped) or one <input name>.npy per input. --out DIR gets one \
<output name>.npy per graph output, characters outside [A-Za-z0-9._-] replaced by '_'.")]
    Run {
        /// The model: .onnx or .kir
        model: PathBuf,
        #[command(flatten)]
        inputs: InputArgs,
        /// Write each output to DIR/<output name>.npy instead of printing a summary.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        compile: CompileArgs,
    },
    /// Time a compiled model: warm-up, then N runs; median, min and max latency.
    #[command(after_help = "Examples:\n  \
kiln bench model.onnx --dim batch=1 --dim sequence=128 --runs 50\n  \
kiln bench model.onnx --inputs test_data_set_0 --backend cranelift --json\n\n\
Without inputs, random data of each input's shape and dtype is used (integers in [0, 2), \
so index and mask inputs stay valid; floats uniform in [-1, 1)). Symbolic input dimensions \
must then be bound with --dim. With --json one object is printed: median_ms, min_ms, max_ms, \
mean_ms, runs, warmup, compile_ms, peak_bytes (null for the interpreter), backend, threads.")]
    Bench {
        model: PathBuf,
        #[command(flatten)]
        inputs: InputArgs,
        /// Timed runs.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Untimed runs first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        compile: CompileArgs,
    },
    /// Optimize a model for a target and print the fused graph (or write it with -o).
    #[command(after_help = "Examples:\n  \
kiln opt model.onnx --target x86-64-avx512 --report report.json\n  \
kiln opt model.onnx --target sm80 --print-after fusion --dim batch=1 --dim sequence=128\n  \
kiln opt model.onnx --extractor ilp -o model.opt.kir --full-constants\n\n\
The JSON report has: target, kernels (kernels in the extracted program), ops (op name -> \
count), phases (name, stop_reason: saturated|node_limit|iteration_limit|time_limit, iterations, \
egraph_nodes, egraph_classes, ms), rewrites (rule -> extracted nodes it created), rejected, \
extractor, extract_ms, cost_before_s, cost_after_s, compile_ms.")]
    Opt {
        model: PathBuf,
        /// Print the graph after this stage instead of the final one.
        #[arg(long, value_enum, value_name = "STAGE")]
        print_after: Option<OptStage>,
        /// Write the optimizer's report as JSON to FILE.
        #[arg(long, value_name = "FILE.json")]
        report: Option<PathBuf>,
        /// Write the graph to FILE instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print every constant in full (lossless), so the output can be parsed back.
        #[arg(long)]
        full_constants: bool,
        #[command(flatten)]
        opt: OptArgs,
        #[command(flatten)]
        dims: DimArgs,
    },
    /// Say where a node of the input model went: its kernel, the rewrites, the costs of the alternatives.
    #[command(after_help = "Examples:\n  \
kiln explain model.onnx --node /encoder/layer.0/attention/self/Softmax\n  \
kiln explain model.onnx --node Conv_0 --target x86-64-avx2\n\n\
NAME is the ONNX node name (the `@name` in `kiln dump --stage graph`).")]
    Explain {
        model: PathBuf,
        /// The node's name in the input model.
        #[arg(long, value_name = "NAME")]
        node: String,
        #[command(flatten)]
        opt: OptArgs,
        #[command(flatten)]
        dims: DimArgs,
    },
    /// Print the model at a stage of the pipeline.
    #[command(after_help = "Examples:\n  \
kiln dump model.onnx --stage onnx\n  \
kiln dump model.onnx --stage graph -o model.kir --full-constants\n  \
kiln dump model.onnx --stage simplified --dim batch=1 --dim sequence=128\n  \
kiln dump model.onnx --stage fused --format dot -o fused.svg\n  \
kiln dump model.onnx --stage kernel --dim batch=1\n\n\
Large constants are elided in dumps unless --full-constants is given; a dump with full \
constants parses back to the same graph (kiln run model.kir). --format dot writes Graphviz \
DOT of the graph stages (each kernel coloured and labelled with its estimated cost); \
with -o FILE.svg the DOT is rendered by `dot -Tsvg`, which must be installed.")]
    Dump {
        model: PathBuf,
        /// Which stage to print.
        #[arg(long, value_enum, default_value_t = Stage::Graph)]
        stage: Stage,
        /// Text (the stage's own form) or Graphviz DOT (graph stages only).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write to FILE instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print every constant in full (lossless), so the dump can be parsed back.
        #[arg(long)]
        full_constants: bool,
        #[command(flatten)]
        opt: OptArgs,
        #[command(flatten)]
        dims: DimArgs,
    },
    /// Fit the cost model to this machine: time micro-benchmarks, write the coefficients as JSON.
    #[command(after_help = "Examples:\n  \
kiln calibrate -o calibration.json\n  \
kiln opt model.onnx --calibration calibration.json --report r.json\n\n\
Each micro-benchmark (dispatch, a 4M-element Add, a 512 MatMul, a row reduction, a Softmax, \
a 3x3 Conv and an Attention where the backend compiles them) is compiled with Cranelift and \
timed; the table shows the cost model's prediction before and after calibration against the \
measured median.")]
    Calibrate {
        /// Write the coefficients (and the measurements) to FILE.
        #[arg(short = 'o', long = "output", value_name = "FILE.json")]
        output: Option<PathBuf>,
        /// The target whose peaks the coefficients scale.
        #[arg(long, value_name = "T", default_value = "cranelift")]
        target: String,
        /// Timed runs per micro-benchmark.
        #[arg(long, default_value_t = 9)]
        runs: usize,
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
struct InputArgs {
    /// A folder of inputs (input_<i>.pb or <name>.npy).
    #[arg(long, value_name = "DIR")]
    inputs: Option<PathBuf>,
    /// One input, as NAME=FILE (.npy or .pb); repeatable; overrides --inputs.
    #[arg(long = "input", value_name = "NAME=FILE", value_parser = parse_pair)]
    input: Vec<(String, PathBuf)>,
}

/// The optimizer's settings, shared by opt, explain, dump, run and bench.
#[derive(clap::Args)]
struct OptArgs {
    /// The cost model's target: x86-64-avx512, x86-64-avx2, cranelift, sm80, sm90.
    #[arg(long, value_name = "T", default_value = "cranelift")]
    target: String,
    /// Extraction: greedy, or ilp (falls back to greedy after its time limit).
    #[arg(long, value_enum, default_value_t = ExtractorArg::Greedy)]
    extractor: ExtractorArg,
    /// Cost-model coefficients from `kiln calibrate -o FILE`.
    #[arg(long, value_name = "FILE.json")]
    calibration: Option<PathBuf>,
    /// Precision of MatMul, Conv and Attention: f32 (as written), f16 or bf16 (where the
    /// cost model says it pays; f32 accumulation), or auto (the cheapest per node within
    /// --max-rel-error, measured on sample inputs).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// The accuracy budget for --precision: the largest relative error allowed on any output
    /// (max |optimized - f32| / max |f32|).
    #[arg(long, value_name = "E", default_value_t = kiln::passes::precision::DEFAULT_MAX_REL_ERROR)]
    max_rel_error: f64,
    /// Sample inputs for --precision auto (a folder, as for --inputs); random ones otherwise.
    #[arg(long, value_name = "DIR")]
    calibration_data: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum PrecisionArg {
    F32,
    F16,
    Bf16,
    Auto,
}

impl OptArgs {
    fn precision(&self) -> kiln::passes::precision::PrecisionOptions {
        use kiln::passes::precision::{Precision, PrecisionOptions};
        let p = match self.precision {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::F16 => Precision::F16,
            PrecisionArg::Bf16 => Precision::BF16,
            PrecisionArg::Auto => Precision::Auto,
        };
        let mut o = PrecisionOptions::new(p);
        o.max_rel_error = self.max_rel_error;
        o
    }
}

impl OptArgs {
    fn target(&self) -> Result<kiln::ir::TargetInfo> {
        kiln::ir::TargetInfo::by_name(&self.target).ok_or_else(|| {
            Error::Usage(format!(
                "unknown target `{}`; known targets: {}",
                self.target,
                kiln::ir::TargetInfo::names().join(", ")
            ))
        })
    }

    fn options(&self) -> Result<kiln::passes::egraph::OptimizeOptions> {
        let mut o = kiln::passes::egraph::OptimizeOptions::new(self.target()?);
        o.extractor = match self.extractor {
            ExtractorArg::Greedy => kiln::passes::egraph::Extractor::Greedy,
            ExtractorArg::Ilp => kiln::passes::egraph::Extractor::Ilp { time_limit: std::time::Duration::from_secs(10) },
        };
        if let Some(p) = &self.calibration {
            o.coefficients = kiln::calibrate::read_coefficients(p)?;
        }
        Ok(o)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ExtractorArg {
    Greedy,
    Ilp,
}

/// How a model is compiled for `run` and `bench`.
#[derive(clap::Args)]
struct CompileArgs {
    /// Which backend executes the model.
    #[arg(long, value_enum, default_value_t = BackendArg::Cranelift)]
    backend: BackendArg,
    /// Skip the e-graph optimizer (one kernel per op).
    #[arg(long)]
    no_opt: bool,
    /// Worker threads for native code (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the time spent in each compile stage (to standard error).
    #[arg(long)]
    timings: bool,
    #[command(flatten)]
    opt: OptArgs,
    #[command(flatten)]
    dims: DimArgs,
}

impl CompileArgs {
    fn compiler(&self) -> Result<kiln::Compiler> {
        let mut c = kiln::Compiler::new()
            .backend(match self.backend {
                BackendArg::Interp => kiln::Backend::Interp,
                BackendArg::Cranelift => kiln::Backend::Cranelift,
            })
            .target(self.opt.target()?)
            .optimize(!self.no_opt);
        c.optimize_options = Some(self.opt.options()?);
        c.precision = Some(self.opt.precision());
        c.dims = self.dims.dim.iter().cloned().collect();
        c.threads = self.threads;
        Ok(c)
    }

    fn compile(&self, model: &std::path::Path) -> Result<kiln::CompiledModel> {
        let m = self.compiler()?.compile_file(model)?;
        if self.timings {
            eprint!("compile stages ({}):\n{}", m.backend().name(), m.timings().table());
        }
        Ok(m)
    }
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
enum BackendArg {
    /// The reference interpreter (on the optimized graph).
    Interp,
    /// Native code through Cranelift's JIT.
    Cranelift,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Stage {
    /// The ONNX protobuf as read.
    Onnx,
    /// kiln's graph IR as imported.
    Graph,
    /// The graph IR after the classic passes (constant folding, CSE, dead-node elimination).
    Simplified,
    /// The saturated e-graph: every class and its alternatives.
    Egraph,
    /// The optimized (fused) graph the cost model extracted.
    Fused,
    /// The kernel IR program (static shapes: bind symbolic dims with --dim).
    Kernel,
    /// Cranelift IR of every kernel.
    Clif,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Format {
    Text,
    Dot,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptStage {
    /// After the classic passes, before the e-graph.
    Simplified,
    /// Extracted after the algebra phase only.
    Algebra,
    /// Extracted after algebra and fusion.
    Fusion,
    /// Extracted after all phases (the final graph).
    Precision,
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

fn print_opts(full_constants: bool) -> kiln::ir::text::PrintOptions {
    if full_constants {
        kiln::ir::text::PrintOptions::lossless()
    } else {
        kiln::ir::text::PrintOptions::default()
    }
}

/// Loads, simplifies and optimizes with the given phases (and precision, when
/// that is not f32 and the precision phase is among them).
fn optimized_with(
    model: &std::path::Path,
    dims: &DimArgs,
    opts: &kiln::passes::egraph::OptimizeOptions,
    opt: &OptArgs,
) -> Result<(kiln::ir::Graph, kiln::passes::egraph::Report, Option<kiln::passes::precision::PrecisionReport>)> {
    use kiln::passes::precision::Precision;
    let mut g = dims.load(model)?;
    kiln::passes::simplify(&mut g)?;
    let p = opt.precision();
    let use_precision = p.precision != Precision::F32 && opts.phases.contains(&kiln::passes::rules::Phase::Precision);
    let (mut og, report, prec) = if use_precision {
        let samples = match &opt.calibration_data {
            Some(dir) => vec![io::collect_inputs(&g, Some(dir), &[])?],
            None => vec![],
        };
        let (og, pr) = kiln::passes::precision::choose_precision(&g, opts, &p, &samples)?;
        (og, pr.optimizer.clone(), Some(pr))
    } else {
        let (og, r) = kiln::passes::egraph::optimize(&g, opts)?;
        (og, r, None)
    };
    kiln::passes::simplify(&mut og)?;
    Ok((og, report, prec))
}

fn optimized(
    model: &std::path::Path,
    dims: &DimArgs,
    opt: &OptArgs,
) -> Result<(kiln::ir::Graph, kiln::passes::egraph::Report)> {
    let (g, r, _) = optimized_with(model, dims, &opt.options()?, opt)?;
    Ok((g, r))
}

fn write_dot(dot: &str, output: Option<&PathBuf>) -> Result<()> {
    match output {
        Some(p) if p.extension().is_some_and(|e| e == "svg") => {
            use std::io::Write;
            use std::process::{Command, Stdio};
            let mut child = Command::new("dot")
                .args(["-Tsvg", "-o"])
                .arg(p)
                .stdin(Stdio::piped())
                .spawn()
                .map_err(|e| Error::Usage(format!("rendering {} needs Graphviz's `dot` ({e}); write .dot instead", p.display())))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(dot.as_bytes()).map_err(|source| Error::Io { path: p.clone(), source })?;
            }
            let status = child.wait().map_err(|source| Error::Io { path: p.clone(), source })?;
            if !status.success() {
                return Err(Error::File { path: p.clone(), msg: format!("`dot -Tsvg` failed ({status})") });
            }
            Ok(())
        }
        _ => write_text(dot, output),
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { model, inputs, out, compile } => {
            let m = compile.compile(&model)?;
            let g = m.graph();
            let xs = io::collect_inputs(g, inputs.inputs.as_deref(), &inputs.input)?;
            let ys = m.run(&xs)?;
            if compile.timings {
                eprint!("after the first run:\n{}", m.timings().table());
            }
            match out {
                Some(dir) => {
                    for p in io::write_outputs(g, &ys, &dir)? {
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
        Command::Bench { model, inputs, runs, warmup, json, compile } => {
            if runs == 0 {
                return Err(Error::Usage("--runs must be at least 1".into()));
            }
            let t0 = std::time::Instant::now();
            let m = compile.compile(&model)?;
            let g = m.graph();
            let xs = if inputs.inputs.is_none() && inputs.input.is_empty() {
                io::random_inputs(g, 0)?
            } else {
                io::collect_inputs(g, inputs.inputs.as_deref(), &inputs.input)?
            };
            // the first run compiles the shape specialisation if the model has symbolic dims
            m.run(&xs)?;
            let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
            for _ in 0..warmup {
                m.run(&xs)?;
            }
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                let t = std::time::Instant::now();
                m.run(&xs)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let (min, max) = times.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            let med = median(&mut times);
            let peak = m.peak_bytes();
            let threads = compile.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            if json {
                let peak = peak.map_or("null".to_string(), |b| b.to_string());
                println!(
                    "{{\"model\":\"{}\",\"backend\":\"{}\",\"threads\":{threads},\"runs\":{runs},\"warmup\":{warmup},\"median_ms\":{med},\"min_ms\":{min},\"max_ms\":{max},\"mean_ms\":{mean},\"compile_ms\":{compile_ms},\"peak_bytes\":{peak}}}",
                    model.display().to_string().replace('\\', "\\\\").replace('"', "\\\""),
                    m.backend().name()
                );
            } else {
                println!("{} on {} ({threads} threads), {runs} runs after {warmup} warm-up:", model.display(), m.backend().name());
                println!("  median {med:.3} ms   min {min:.3} ms   max {max:.3} ms   mean {mean:.3} ms");
                println!("  compile {compile_ms:.1} ms (incl. first run)");
                match peak {
                    Some(b) => println!("  peak arena {b} bytes"),
                    None => println!("  peak arena: n/a (interpreter)"),
                }
            }
            Ok(())
        }
        Command::Opt { model, print_after, report, output, full_constants, opt, dims } => {
            let mut opts = opt.options()?;
            let g = match print_after {
                Some(OptStage::Simplified) => {
                    let mut g = dims.load(&model)?;
                    kiln::passes::simplify(&mut g)?;
                    g
                }
                stage => {
                    let keep = match stage {
                        Some(OptStage::Algebra) => 1,
                        Some(OptStage::Fusion) => 2,
                        _ => 3,
                    };
                    opts.phases.truncate(keep);
                    let (g, r, prec) = optimized_with(&model, &dims, &opts, &opt)?;
                    if let Some(p) = &prec {
                        eprintln!(
                            "precision {}: {} nodes lowered, max relative error {:.3e} (budget {:.1e}, {})",
                            p.precision.name(),
                            p.lowered.len(),
                            p.max_rel_error,
                            p.max_rel_error_budget,
                            if p.within_budget { "within" } else { "OVER" }
                        );
                    }
                    eprintln!(
                        "{}: {} kernels, predicted {:.3} ms -> {:.3} ms on {}, optimized in {:.0} ms",
                        model.display(),
                        r.kernels,
                        r.cost_before * 1e3,
                        r.cost_after * 1e3,
                        r.target,
                        r.compile_ms
                    );
                    for p in &r.phases {
                        eprintln!(
                            "  phase {:<9} {:<15} {:>3} iterations {:>7} e-nodes {:>8.1} ms",
                            p.name,
                            p.stop_reason.name(),
                            p.iterations,
                            p.egraph_nodes,
                            p.ms
                        );
                    }
                    if let Some(path) = &report {
                        let mut json = r.to_json(false);
                        if let (Some(p), Some(end)) = (&prec, json.rfind('}')) {
                            json.insert_str(end, &format!(",\"precision\":{}", p.to_json()));
                        }
                        std::fs::write(path, json + "\n").map_err(|source| Error::Io { path: path.clone(), source })?;
                    }
                    g
                }
            };
            write_text(&kiln::ir::text::print(&g, &print_opts(full_constants)), output.as_ref())
        }
        Command::Explain { model, node, opt, dims } => {
            let opts = opt.options()?;
            let g0 = dims.load(&model)?;
            if !g0.nodes.iter().any(|n| n.name == node) {
                return Err(Error::Usage(format!(
                    "{}: no node named `{node}` (node names are the `@name`s in `kiln dump {} --stage graph`)",
                    model.display(),
                    model.display()
                )));
            }
            let (_, r, _) = optimized_with(&model, &dims, &opts, &opt)?;
            match r.explain(&node) {
                Some(e) => print!("{}", explain_text(e, &r.target)),
                None => println!(
                    "node `{node}` was removed by the classic passes before the optimizer (constant-folded, or merged with an identical node, or dead)"
                ),
            }
            Ok(())
        }
        Command::Dump { model, stage, format, output, full_constants, opt, dims } => {
            if format == Format::Dot && !matches!(stage, Stage::Graph | Stage::Simplified | Stage::Fused) {
                return Err(Error::Usage("--format dot applies to the graph, simplified and fused stages".into()));
            }
            let graph_out = |g: &kiln::ir::Graph| -> Result<()> {
                match format {
                    Format::Dot => write_dot(&kiln::dot::to_dot(g, &opt.target()?), output.as_ref()),
                    Format::Text => write_text(&kiln::ir::text::print(g, &print_opts(full_constants)), output.as_ref()),
                }
            };
            match stage {
                Stage::Onnx => {
                    if kiln::ModelFormat::of(&model) != kiln::ModelFormat::Onnx {
                        return Err(Error::Usage(format!(
                            "{}: --stage onnx needs an .onnx model",
                            model.display()
                        )));
                    }
                    write_text(&kiln::frontend::dump_onnx_file(&model)?, output.as_ref())
                }
                Stage::Graph => graph_out(&dims.load(&model)?),
                Stage::Simplified => {
                    let mut g = dims.load(&model)?;
                    kiln::passes::simplify(&mut g)?;
                    graph_out(&g)
                }
                Stage::Fused => graph_out(&optimized(&model, &dims, &opt)?.0),
                Stage::Egraph => {
                    let mut g = dims.load(&model)?;
                    kiln::passes::simplify(&mut g)?;
                    let mut o = opt.options()?;
                    o.dump_egraph = true;
                    let (_, r) = kiln::passes::egraph::optimize(&g, &o)?;
                    write_text(r.egraph.as_deref().unwrap_or(""), output.as_ref())
                }
                Stage::Kernel | Stage::Clif => {
                    let mut c = kiln::Compiler::new().target(opt.target()?);
                    c.optimize_options = Some(opt.options()?);
                    c.dims = dims.dim.iter().cloned().collect();
                    let (g, program) = c.lower_file(&model)?;
                    let text = if stage == Stage::Kernel {
                        kiln::ir::kernel::text::print(&program)
                    } else {
                        kiln::cranelift::dump_clif(&program)?
                    };
                    let _ = g;
                    write_text(&text, output.as_ref())
                }
            }
        }
        Command::Calibrate { output, target, runs } => {
            let t = kiln::ir::TargetInfo::by_name(&target).ok_or_else(|| {
                Error::Usage(format!("unknown target `{target}`; known targets: {}", kiln::ir::TargetInfo::names().join(", ")))
            })?;
            let c = kiln::calibrate::calibrate(&t, runs)?;
            print!("{}", c.table());
            if let Some(p) = &output {
                std::fs::write(p, c.to_json()).map_err(|source| Error::Io { path: p.clone(), source })?;
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        Command::Info { model, dims } => {
            let g = dims.load(&model)?;
            print!("{}", kiln::info(&g));
            Ok(())
        }
    }
}

fn explain_text(e: &kiln::passes::egraph::NodeExplanation, target: &str) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "node {} ({})", e.node, e.op);
    match &e.kernel {
        Some((name, op)) => {
            let how = if e.computes { "computed by" } else { "absorbed into" };
            let _ = writeln!(s, "  {how} kernel {name} ({op})");
        }
        None => {
            let _ = writeln!(s, "  not computed: its result was not needed (folded, or dead)");
        }
    }
    if e.rules.is_empty() {
        let _ = writeln!(s, "  rewrites: none (the kernel is the original node)");
    } else {
        let _ = writeln!(s, "  rewrites: {}", e.rules.join(", "));
    }
    let _ = writeln!(s, "  alternatives in its e-class, with the cost model's estimate on {target}:");
    let mut alts = e.alternatives.clone();
    alts.sort_by(|a, b| a.1.total_cmp(&b.1));
    for (text, cost) in alts {
        let _ = writeln!(s, "    {:>10.2} µs  {text}", cost * 1e6);
    }
    s
}
