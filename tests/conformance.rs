//! ONNX backend node-test conformance of kiln's reference interpreter, its
//! optimizer, and its Cranelift backend.
//!
//! Runs every case that `scripts/gen-node-tests.py` wrote to
//! `build/onnx-node-tests/` on the interpreter (import, text IR round trip,
//! interpret, optimize and interpret again, compare; see `conformance/case.rs`),
//! then every case the interpreter passed on the Cranelift backend, and fails
//! when a case listed in `tests/conformance/passing.txt` (interpreter) or
//! `tests/conformance/passing-cranelift.txt` no longer passes. The one command
//! that sets everything up and runs it is `scripts/conformance.sh`.
//!
//! Environment:
//! - `KILN_CONFORMANCE_UPDATE=1`: rewrite `tests/conformance/passing.txt` and
//!   `docs/conformance.md` from this run (`scripts/conformance.sh --update`).
//! - `KILN_CONFORMANCE_FILTER=<substring>`: run only the cases whose name contains it.
//! - `KILN_SKIP_CONFORMANCE=1`: skip (with a message) when the suite is not generated.
//! - `KILN_NODE_TESTS=<dir>`: read the cases from elsewhere.
//! - `KILN_CONFORMANCE_THREADS=<n>`: worker threads (default: available cores).
//! - `KILN_CONFORMANCE_VERBOSE=1`: print every case's result.
//! - `KILN_CONFORMANCE_ENGINES=interp`: skip the Cranelift run.
//! - `KILN_CONFORMANCE_STRICT=1`: compare with the cases' own tolerances only
//!   (no per-dtype floors; see `conformance/compare.rs`).

// The crate root looks for modules beside it, so name the folder.
#[path = "conformance/case.rs"]
mod case;
#[path = "conformance/compare.rs"]
mod compare;
#[path = "conformance/report.rs"]
mod report;

use case::{Engine, Meta, Outcome, Status};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

thread_local! {
    /// Set while a worker runs a case, so the panic hook stays quiet and records where.
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic hook that records the location of panics inside cases (which are
/// caught and reported as failures) and defers to the default hook otherwise.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_CASE.with(Cell::get) {
            let at = info.location().map(|l| l.to_string());
            PANIC_AT.with(|p| *p.borrow_mut() = at);
        } else {
            previous(info);
        }
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

/// Runs one case, turning a panic into a failure.
fn run_one(dir: &Path, name: String, engine: Engine) -> Outcome {
    let start = Instant::now();
    let meta = match Meta::read(dir) {
        Ok(m) => m,
        Err(e) => {
            let meta = Meta {
                op: "?".into(),
                ..Meta::default()
            };
            return Outcome {
                name,
                meta,
                status: Status::Fail,
                reason: e,
                secs: 0.0,
            };
        }
    };
    IN_CASE.with(|c| c.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case::run(dir, &meta, engine)));
    IN_CASE.with(|c| c.set(false));
    let (status, mut reason) = match result {
        Ok(Ok(())) => (Status::Pass, String::new()),
        Ok(Err((status, reason))) => (status, reason),
        Err(payload) => {
            let at = PANIC_AT.with(|p| p.borrow_mut().take()).unwrap_or_default();
            (
                Status::Fail,
                format!("PANIC: {} at {at}", panic_message(payload.as_ref())),
            )
        }
    };
    // Paths inside the suite, relative to the case: `model.onnx`, not `/home/.../model.onnx`.
    let prefix = format!("{}/", dir.display());
    reason = reason.replace(&prefix, "");
    Outcome {
        name,
        meta,
        status,
        reason,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// Case names (folders with a `case.txt`) under `suite`, sorted.
fn list_cases(suite: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(suite)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("case.txt").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Runs `names` over `threads` workers, in name order in the result. A
/// watchdog names any case that runs for more than a minute (a hang cannot be
/// interrupted, but it can be pointed at).
fn run_all(suite: &Path, names: &[String], threads: usize, engine: Engine) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(names.len()));
    let running: Mutex<Vec<Option<(usize, Instant)>>> = Mutex::new(vec![None; threads]);
    let verbose = env_flag("KILN_CONFORMANCE_VERBOSE");
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let (next, done, results, running) = (&next, &done, &results, &running);
            let worker = move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                if let Some(slot) = running.lock().unwrap_or_else(|e| e.into_inner()).get_mut(t) {
                    *slot = Some((i, Instant::now()));
                }
                let o = run_one(&suite.join(name), name.clone(), engine);
                if let Some(slot) = running.lock().unwrap_or_else(|e| e.into_inner()).get_mut(t) {
                    *slot = None;
                }
                if verbose {
                    println!("{:?} {} {}", o.status, o.name, o.reason);
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 250 == 0 {
                    eprintln!("conformance: {n}/{} cases run", names.len());
                }
                results.lock().unwrap_or_else(|e| e.into_inner()).push(o);
            };
            let handle = std::thread::Builder::new()
                .name(format!("conformance-{t}"))
                .stack_size(64 << 20)
                .spawn_scoped(s, worker)
                .expect("spawning a conformance worker thread");
            handles.push(handle);
        }
        // Watchdog.
        let mut reported = BTreeSet::new();
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(std::time::Duration::from_millis(200));
            for (i, since) in running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .flatten()
            {
                if since.elapsed().as_secs() >= 60 && reported.insert(*i) {
                    eprintln!("conformance: {} has been running for a minute", names[*i]);
                }
            }
        }
    });
    let mut out = results.into_inner().unwrap_or_else(|e| e.into_inner());
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The names in `passing.txt` (comments and blank lines skipped).
fn read_passing(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn onnx_node_tests() {
    let root = repo();
    let suite = std::env::var_os("KILN_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("build/onnx-node-tests"));
    let passing_path = root.join("tests/conformance/passing.txt");
    let update = env_flag("KILN_CONFORMANCE_UPDATE");
    let filter = std::env::var("KILN_CONFORMANCE_FILTER").unwrap_or_default();

    let stamp = std::fs::read_to_string(suite.join("STAMP")).unwrap_or_default();
    let names = list_cases(&suite).unwrap_or_default();
    if stamp.is_empty() || names.is_empty() {
        let msg = format!(
            "the ONNX node tests are not generated in {}.\n\
             Run `scripts/conformance.sh` (it sets up .venv and runs the suite), or\n\
             `scripts/setup-python.sh && .venv/bin/python scripts/gen-node-tests.py`,\n\
             or set KILN_SKIP_CONFORMANCE=1 to skip this test.",
            suite.display()
        );
        if env_flag("KILN_SKIP_CONFORMANCE") {
            println!("conformance: SKIPPED (KILN_SKIP_CONFORMANCE=1): {msg}");
            return;
        }
        panic!("conformance: {msg}");
    }
    let onnx = stamp.lines().next().unwrap_or("onnx ?").trim().to_string();
    let names: Vec<String> = names.into_iter().filter(|n| n.contains(&filter)).collect();
    assert!(
        !update || filter.is_empty(),
        "conformance: KILN_CONFORMANCE_UPDATE cannot be combined with KILN_CONFORMANCE_FILTER"
    );

    let threads = std::env::var("KILN_CONFORMANCE_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    install_panic_hook();
    let start = Instant::now();
    let outcomes = run_all(&suite, &names, threads, Engine::Interp);
    let secs = start.elapsed().as_secs_f64();
    let engines = std::env::var("KILN_CONFORMANCE_ENGINES").unwrap_or_else(|_| "interp,cranelift".into());
    let cranelift = if engines.split(',').any(|e| e.trim() == "cranelift") {
        let passed: Vec<String> =
            outcomes.iter().filter(|o| o.status == Status::Pass).map(|o| o.name.clone()).collect();
        let start = Instant::now();
        let out = run_all(&suite, &passed, threads, Engine::Cranelift);
        Some((out, start.elapsed().as_secs_f64()))
    } else {
        println!("conformance: Cranelift run skipped (KILN_CONFORMANCE_ENGINES={engines})");
        None
    };

    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    let (pass, fail, unsup) = (
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Unsupported),
    );

    // Failures and panics, for whoever is fixing them.
    for o in outcomes.iter().filter(|o| o.status == Status::Fail) {
        println!("FAIL {} [{}]: {}", o.name, o.meta.op, o.reason);
    }
    let mut slow: Vec<&Outcome> = outcomes.iter().filter(|o| o.secs > 1.0).collect();
    slow.sort_by(|a, b| b.secs.total_cmp(&a.secs));
    for o in slow.iter().take(10) {
        println!("slow: {} took {:.1}s", o.name, o.secs);
    }

    // The committed list.
    let listed = read_passing(&passing_path);
    let in_run: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let missing: Vec<&String> = listed
        .iter()
        .filter(|n| filter.is_empty() && !in_run.contains(n.as_str()))
        .collect();
    let regressed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status != Status::Pass && listed.contains(&o.name))
        .collect();
    let new_passes = outcomes
        .iter()
        .filter(|o| o.status == Status::Pass && !listed.contains(&o.name))
        .count();

    println!(
        "conformance: {pass} passed, {fail} failed, {unsup} unsupported of {} ({onnx}, {threads} threads, {secs:.1}s)",
        outcomes.len()
    );

    let clif_path = root.join("tests/conformance/passing-cranelift.txt");
    let mut clif_problems = Vec::new();
    if let Some((clif, clif_secs)) = &cranelift {
        for o in clif.iter().filter(|o| o.status != Status::Pass) {
            println!("CRANELIFT {:?} {} [{}]: {}", o.status, o.name, o.meta.op, o.reason);
        }
        let cp = clif.iter().filter(|o| o.status == Status::Pass).count();
        println!(
            "conformance: Cranelift passes {cp} of the {} cases the interpreter passes ({:.1}%, {clif_secs:.1}s)",
            clif.len(),
            100.0 * cp as f64 / clif.len().max(1) as f64
        );
        let listed = read_passing(&clif_path);
        for o in clif.iter().filter(|o| o.status != Status::Pass && listed.contains(&o.name)) {
            clif_problems.push(format!("  {} (cranelift, {:?}): {}", o.name, o.status, o.reason));
        }
        if update {
            std::fs::write(&clif_path, report::passing_txt_for(clif, &onnx, "Cranelift backend"))
                .expect("writing tests/conformance/passing-cranelift.txt");
        }
    }

    if update {
        let passing = report::passing_txt(&outcomes, &onnx);
        std::fs::write(&passing_path, passing).expect("writing tests/conformance/passing.txt");
        let mut md = report::conformance_md(&outcomes, &onnx, &report::today());
        if let Some((clif, _)) = &cranelift {
            md.push_str(&report::cranelift_md(clif));
        }
        std::fs::write(root.join("docs/conformance.md"), md).expect("writing docs/conformance.md");
        println!(
            "conformance: wrote tests/conformance/passing.txt ({pass} cases; {} newly passing, {} no longer) and docs/conformance.md",
            new_passes,
            regressed.len() + missing.len()
        );
        for o in &regressed {
            println!(
                "conformance: removed from passing.txt: {} ({:?}: {})",
                o.name, o.status, o.reason
            );
        }
        return;
    }

    if new_passes > 0 {
        println!(
            "conformance: {new_passes} cases pass but are not in tests/conformance/passing.txt; \
             run `scripts/conformance.sh --update` to record them"
        );
    }
    let mut problems = clif_problems;
    for o in &regressed {
        problems.push(format!("  {} ({:?}): {}", o.name, o.status, o.reason));
    }
    for n in &missing {
        problems.push(format!("  {n}: listed but not in the generated suite"));
    }
    assert!(
        problems.is_empty(),
        "conformance: {} cases listed in tests/conformance/passing.txt or passing-cranelift.txt no longer pass:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
