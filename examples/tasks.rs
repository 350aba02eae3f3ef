//! # Tasks: remote functions
//!
//! Ray's "Ray Task" section, in Rust. It shows:
//!
//! - a `#[lumen::remote]` function run as parallel tasks, and collected with `lumen::get_all`;
//! - resource requirements in the attribute (`#[lumen::remote(num_cpus = 2)]`) and overridden
//!   per call with `f::options().num_cpus(..)`;
//! - refs passed as arguments, and a small DAG of tasks (matrix creation and multiplication);
//! - refs *nested* inside an argument (a `Vec<ObjectRef<i64>>`), which arrive as refs;
//! - tasks that submit tasks;
//! - `lumen::wait` with `num_returns` and a timeout;
//! - errors: a returned `Err` and a panic both become `lumen::Error::Task` at `get`;
//! - retries of application errors with `.max_retries(n).retry_exceptions(true)`;
//! - an `async fn` task awaiting a ref.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example tasks
//! ```

use lumen::ObjectRef;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The task definitions.
// ---------------------------------------------------------------------------------------------

/// The first example of the Ray docs: squares, computed remotely.
#[lumen::remote]
fn square(x: i64) -> i64 {
    x * x
}

/// A task with resource requirements given in the attribute (the defaults of every call).
#[lumen::remote(num_cpus = 2)]
fn my_function() -> i64 {
    1
}

/// Takes a plain value; callers may pass the value or a ref to it.
#[lumen::remote]
fn function_with_an_argument(value: i64) -> i64 {
    value + 1
}

/// A matrix, row-major.
type Matrix = Vec<Vec<f64>>;

/// Makes a `rows x cols` matrix of pseudo-random numbers (deterministic for a given seed).
#[lumen::remote]
fn create_matrix(rows: usize, cols: usize, seed: u64) -> Matrix {
    let mut state = seed;
    (0..rows)
        .map(|_| {
            (0..cols)
                .map(|_| {
                    // A tiny linear congruential generator: good enough for an example.
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .collect()
        })
        .collect()
}

/// Multiplies two matrices.
#[lumen::remote]
fn multiply_matrices(x: Matrix, y: Matrix) -> Matrix {
    let (n, m, p) = (x.len(), y.len(), y[0].len());
    assert_eq!(x[0].len(), m, "shapes do not match");
    let mut z = vec![vec![0.0; p]; n];
    for i in 0..n {
        for k in 0..m {
            let xik = x[i][k];
            for j in 0..p {
                z[i][j] += xik * y[k][j];
            }
        }
    }
    z
}

/// Receives refs *nested* in a `Vec`: they are not resolved before the task runs, so the task
/// sees the refs themselves and fetches the values when (and if) it wants them.
#[lumen::remote]
fn echo_and_sum(refs: Vec<ObjectRef<i64>>) -> lumen::Result<i64> {
    let ids: Vec<String> = refs.iter().map(|r| r.id().to_string()).collect();
    println!("   (inside the task) got {} refs: {ids:?}", refs.len());
    let values = lumen::get_all(&refs)?;
    println!("   (inside the task) their values: {values:?}");
    Ok(values.iter().sum())
}

/// A task that submits tasks of its own and waits for them (nested parallelism).
#[lumen::remote]
fn sum_of_squares(n: i64) -> lumen::Result<i64> {
    let refs: Vec<_> = (0..n).map(square::remote).collect();
    // A task blocked in `get` lends its CPU back, so its children can run even on a busy node.
    Ok(lumen::get_all(&refs)?.iter().sum())
}

/// Sleeps for `ms` milliseconds, then returns `ms`.
#[lumen::remote]
fn slow_function(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Returning a `Result`: `Ok(v)` is the task's value, `Err(e)` its error (any `E: Display`).
#[lumen::remote]
fn parse_number(text: String) -> Result<i64, std::num::ParseIntError> {
    text.trim().parse()
}

/// Panics when `b == 0`: a panic fails the task, not the program.
#[lumen::remote]
fn divide(a: i64, b: i64) -> i64 {
    a / b
}

/// Attempts of `flaky` so far. The embedded cluster runs tasks in this process, so a static
/// is visible to every attempt (on a real cluster, count in an actor instead).
static FLAKY_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// Fails with an application error until its `succeed_on`-th attempt.
#[lumen::remote]
fn flaky(succeed_on: u32) -> Result<String, String> {
    let attempt = FLAKY_ATTEMPTS.fetch_add(1, Ordering::SeqCst) + 1;
    if attempt < succeed_on {
        Err(format!("attempt {attempt} failed (transient)"))
    } else {
        Ok(format!("succeeded on attempt {attempt}"))
    }
}

/// An async task: it awaits a ref instead of blocking a thread on it. (Ray's Python tasks
/// cannot be `async`; lumen's can, and they run on an event loop.)
#[lumen::remote]
async fn double_when_ready(value: ObjectRef<i64>) -> lumen::Result<i64> {
    Ok(value.await? * 2)
}

fn main() -> lumen::Result<()> {
    // Four logical CPUs, whatever the machine has, so the output is the same everywhere.
    lumen::init_with(lumen::Config::default().num_cpus(4.0))?;

    // ----- Remote functions ------------------------------------------------------------------
    println!("Remote functions: square::remote(i) for i in 0..4");
    // Each call returns an ObjectRef at once; the four tasks run in parallel.
    let futures: Vec<ObjectRef<i64>> = (0..4).map(square::remote).collect();
    // Blocks until all four are done.
    let results = lumen::get_all(&futures)?;
    println!("   the final result is: {results:?}\n");
    assert_eq!(results, vec![0, 1, 4, 9]);

    // ----- Resources -------------------------------------------------------------------------
    println!("Resources: #[lumen::remote(num_cpus = 2)] fn my_function(), overridden per call");
    let two_cpus = my_function::remote();
    let three_cpus = my_function::options().num_cpus(3.0).remote();
    assert_eq!(lumen::get(&two_cpus)? + lumen::get(&three_cpus)?, 2);
    println!("   ran once with 2 CPUs (the default) and once with .options().num_cpus(3.0)\n");

    // ----- Refs as arguments -----------------------------------------------------------------
    println!("Refs as arguments: function_with_an_argument::remote(&obj_ref1)");
    let obj_ref1 = my_function::remote();
    assert_eq!(lumen::get(&obj_ref1)?, 1);
    // A ref as an argument: the task waits for `obj_ref1` and receives its value (an i64).
    // `&obj_ref1` keeps our ref; passing `obj_ref1` itself would move it into the call.
    let obj_ref2 = function_with_an_argument::remote(&obj_ref1);
    let v2 = lumen::get(&obj_ref2)?;
    println!("   get(obj_ref1) = 1, get(obj_ref2) = {v2}\n");
    assert_eq!(v2, 2);

    // ----- A task DAG ------------------------------------------------------------------------
    println!("Task dependencies: z = multiply_matrices(create_matrix(..), create_matrix(..))");
    let n = 200;
    let x_id = create_matrix::remote(n, n, 1);
    let y_id = create_matrix::remote(n, n, 2);
    // Runs once both matrices exist; neither matrix ever travels through the driver.
    let z_id = multiply_matrices::remote(&x_id, &y_id);
    let z = lumen::get(&z_id)?;
    println!(
        "   matrix multiplication completed; result shape: ({}, {})",
        z.len(),
        z[0].len()
    );
    // Check it against the same functions called locally (they are still ordinary functions).
    let expected = multiply_matrices(create_matrix(n, n, 1), create_matrix(n, n, 2));
    assert_eq!(z, expected);
    println!("   and it equals the product computed locally\n");

    // ----- Nested refs -----------------------------------------------------------------------
    println!("Nested refs: echo_and_sum::remote(vec![a, b, c]) passes the refs themselves");
    let (a, b, c) = (lumen::put(1i64), lumen::put(2i64), lumen::put(3i64));
    let sum = lumen::get(&echo_and_sum::remote(vec![a, b, c]))?;
    println!("   sum = {sum}\n");
    assert_eq!(sum, 6);

    // ----- Nested tasks ----------------------------------------------------------------------
    println!("Nested tasks: sum_of_squares(10) submits ten square tasks itself");
    let total = lumen::get(&sum_of_squares::remote(10))?;
    println!("   sum of squares of 0..10 = {total}\n");
    assert_eq!(total, 285);

    // ----- Waiting for partial results -------------------------------------------------------
    println!("lumen::wait: one slow task (800 ms), one fast task (10 ms)");
    let t = Instant::now();
    let object_refs = vec![slow_function::remote(800), slow_function::remote(10)];
    // Return as soon as one of them is ready.
    let (ready, remaining) = lumen::wait(&object_refs, 1, None);
    println!(
        "   after {:.0?}: {} ready (value {}), {} remaining",
        t.elapsed(),
        ready.len(),
        lumen::get(&ready[0])?,
        remaining.len()
    );
    assert_eq!((ready.len(), remaining.len()), (1, 1));
    assert_eq!(lumen::get(&ready[0])?, 10);
    // With a timeout, `wait` returns what is ready by then, even if fewer than asked for.
    let (ready, remaining) = lumen::wait(&remaining, 1, Some(Duration::from_millis(100)));
    println!(
        "   wait(remaining, 1, 100 ms): {} ready, {} still running",
        ready.len(),
        remaining.len()
    );
    assert_eq!((ready.len(), remaining.len()), (0, 1));
    // Without a timeout, asking for all of them waits for all of them.
    let (ready, _) = lumen::wait(&object_refs, object_refs.len(), None);
    println!(
        "   wait(all, 2, no timeout): {} ready after {:.0?}\n",
        ready.len(),
        t.elapsed()
    );
    assert_eq!(ready.len(), 2);

    // ----- Errors ----------------------------------------------------------------------------
    println!("Errors: an Err return and a panic both become lumen::Error::Task");
    assert_eq!(lumen::get(&parse_number::remote("42".to_string()))?, 42);
    match lumen::get(&parse_number::remote("forty-two".to_string())) {
        Err(lumen::Error::Task {
            function, message, ..
        }) => {
            println!("   parse_number(\"forty-two\") failed in {function}: {message}");
            assert!(function.contains("parse_number"), "{function}");
            assert!(message.contains("invalid digit"), "{message}");
        }
        other => panic!("expected a task error, got {other:?}"),
    }
    // (Rust's panic hook prints the panic to stderr as usual; the driver sees an error value.)
    match lumen::get(&divide::remote(1, 0)) {
        Err(e @ lumen::Error::Task { .. }) => {
            println!("   divide(1, 0) panicked: {e}");
            assert!(e.to_string().contains("divide by zero"), "{e}");
        }
        other => panic!("expected a task error, got {other:?}"),
    }
    // A task that needs a failed object fails too, with the same error.
    let downstream = function_with_an_argument::remote(divide::remote(1, 0));
    let e = lumen::get(&downstream).unwrap_err();
    println!("   a task depending on it fails too: {e}");
    assert!(matches!(e, lumen::Error::Task { .. }));
    // The program, the node and other tasks are unaffected.
    assert_eq!(lumen::get(&divide::remote(7, 2))?, 3);
    println!("   divide(7, 2) still works: 3\n");

    // ----- Retries ---------------------------------------------------------------------------
    println!("Retries: flaky() fails twice, then succeeds");
    // Application errors are not retried by default: max_retries covers system failures.
    FLAKY_ATTEMPTS.store(0, Ordering::SeqCst);
    let e = lumen::get(&flaky::options().max_retries(3).remote(3)).unwrap_err();
    println!("   max_retries(3) alone: {e}");
    assert_eq!(FLAKY_ATTEMPTS.load(Ordering::SeqCst), 1);
    // With retry_exceptions(true), an Err or a panic is retried too.
    FLAKY_ATTEMPTS.store(0, Ordering::SeqCst);
    let r = flaky::options()
        .max_retries(3)
        .retry_exceptions(true)
        .remote(3);
    let outcome = lumen::get(&r)?;
    println!("   max_retries(3).retry_exceptions(true): {outcome}");
    assert_eq!(outcome, "succeeded on attempt 3");
    // Not enough retries: the last attempt's error is the task's error.
    FLAKY_ATTEMPTS.store(0, Ordering::SeqCst);
    let r = flaky::options()
        .max_retries(1)
        .retry_exceptions(true)
        .remote(3);
    let e = lumen::get(&r).unwrap_err();
    println!("   max_retries(1).retry_exceptions(true): {e}\n");
    assert!(e.to_string().contains("attempt 2 failed"), "{e}");

    // ----- Async tasks -----------------------------------------------------------------------
    println!("Async tasks: an `async fn` task awaits a ref without blocking a thread");
    // The parameter's type is `ObjectRef<i64>`, so the ref is passed as a ref (not resolved).
    let doubled = lumen::get(&double_when_ready::remote(square::remote(7)))?;
    println!("   double_when_ready(square(7)) = {doubled}\n");
    assert_eq!(doubled, 98);

    lumen::shutdown();
    println!("done");
    Ok(())
}
