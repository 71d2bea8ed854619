//! The runtime: a persistent thread pool that runs compiled kernels over
//! ranges of their grid points, and per-thread scratch memory.
//!
//! Requires: kernel functions with the signature of
//! [`crate::lower::kernel_signature`]. Establishes: [`Pool::launch`] runs
//! grid points `0..n` of a kernel split into contiguous ranges, one per
//! worker, and returns when all are done. Several callers may launch at once
//! (tasks share one queue; a caller runs tasks while it waits, so there is
//! no deadlock). Each task gets its own 64-byte-aligned scratch region.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A compiled kernel's entry point.
pub type KernelFn = unsafe extern "C" fn(*const *mut u8, i64, i64, *mut u8);

struct Job {
    func: KernelFn,
    /// The buffer-address table (lives on the launching caller's stack frame
    /// until `remaining` reaches zero).
    bufs: usize,
    scratch_bytes: usize,
    ranges: Vec<(i64, i64)>,
    remaining: AtomicUsize,
    done: Mutex<bool>,
    cv: Condvar,
}

impl Job {
    fn run_task(&self, i: usize) {
        let (b, e) = self.ranges[i];
        with_scratch(self.scratch_bytes, |s| {
            // SAFETY: `func` is a finalized kernel of the executable that
            // launched this job; `bufs` points to its buffer table, valid until
            // every task has finished (the launcher waits for `remaining`).
            unsafe { (self.func)(self.bufs as *const *mut u8, b, e, s) }
        });
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut d = self.done.lock().unwrap_or_else(|p| p.into_inner());
            *d = true;
            self.cv.notify_all();
        }
    }
}

/// Pending tasks (a job and its task number) and the shutdown flag.
type Tasks = (VecDeque<(Arc<Job>, usize)>, bool);

struct Queue {
    tasks: Mutex<Tasks>,
    cv: Condvar,
}

/// A fixed set of worker threads.
pub struct Pool {
    queue: Arc<Queue>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

thread_local! {
    static SCRATCH: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a 64-byte-aligned scratch region of at least `bytes` bytes.
fn with_scratch<R>(bytes: usize, f: impl FnOnce(*mut u8) -> R) -> R {
    if bytes == 0 {
        return f(std::ptr::null_mut());
    }
    SCRATCH.with(|s| {
        let mut v = s.borrow_mut();
        let words = bytes.div_ceil(8) + 8;
        if v.len() < words {
            v.resize(words, 0);
        }
        let p = v.as_mut_ptr() as *mut u8;
        let pad = p.align_offset(64);
        // SAFETY: `pad < 64` bytes and the vector has 64 spare bytes.
        f(unsafe { p.add(pad) })
    })
}

impl Pool {
    /// A pool with `threads` workers in all (the caller counts as one).
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let queue = Arc::new(Queue {
            tasks: Mutex::new((VecDeque::new(), false)),
            cv: Condvar::new(),
        });
        let workers = (1..threads)
            .filter_map(|i| {
                let q = queue.clone();
                std::thread::Builder::new()
                    .name(format!("kiln-cranelift-{i}"))
                    .stack_size(4 << 20)
                    .spawn(move || worker(q))
                    .ok()
            })
            .collect::<Vec<_>>();
        let threads = workers.len() + 1;
        Pool {
            queue,
            workers,
            threads,
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs grid points `0..n` of `func` and waits for them.
    ///
    /// # Safety
    /// `func` must be a kernel function and `bufs` a buffer table valid for it.
    pub unsafe fn launch(
        &self,
        func: KernelFn,
        bufs: *const *mut u8,
        n: u64,
        scratch_bytes: usize,
    ) {
        if n == 0 {
            return;
        }
        let tasks = (self.threads as u64).min(n) as usize;
        if tasks == 1 {
            with_scratch(scratch_bytes, |s| unsafe { func(bufs, 0, n as i64, s) });
            return;
        }
        let ranges: Vec<(i64, i64)> = (0..tasks as u64)
            .map(|t| {
                (
                    (n * t / tasks as u64) as i64,
                    (n * (t + 1) / tasks as u64) as i64,
                )
            })
            .collect();
        let job = Arc::new(Job {
            func,
            bufs: bufs as usize,
            scratch_bytes,
            ranges,
            remaining: AtomicUsize::new(tasks),
            done: Mutex::new(false),
            cv: Condvar::new(),
        });
        {
            let mut q = self.queue.tasks.lock().unwrap_or_else(|p| p.into_inner());
            for i in 1..tasks {
                q.0.push_back((job.clone(), i));
            }
        }
        self.queue.cv.notify_all();
        job.run_task(0);
        // Help with queued tasks (ours or another caller's) while waiting.
        loop {
            if job.remaining.load(Ordering::Acquire) == 0 {
                break;
            }
            let next = self
                .queue
                .tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .pop_front();
            match next {
                Some((j, i)) => j.run_task(i),
                None => {
                    let mut d = job.done.lock().unwrap_or_else(|p| p.into_inner());
                    while !*d {
                        d = job.cv.wait(d).unwrap_or_else(|p| p.into_inner());
                    }
                    break;
                }
            }
        }
    }
}

fn worker(q: Arc<Queue>) {
    loop {
        let task = {
            let mut g = q.tasks.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(t) = g.0.pop_front() {
                    break Some(t);
                }
                if g.1 {
                    break None;
                }
                g = q.cv.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        };
        match task {
            Some((job, i)) => job.run_task(i),
            None => return,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.queue.tasks.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.queue.cv.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
