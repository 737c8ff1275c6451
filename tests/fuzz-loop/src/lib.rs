//! The bounded mutation-fuzzing loop behind the fuzz tests that run in
//! `cargo test` on the stable toolchain (`xapi-rs/tests/fuzz_parsers.rs`,
//! `xenguest/tests/fuzz_stream.rs`). Each caller brings its own seeds,
//! mutations and property check; this crate owns the rest once: a
//! deterministic generator, the time and iteration bounds read from the
//! environment, and saving the input that broke a property so the run can
//! be reproduced. (libFuzzer targets live in each crate's `fuzz/`.)

use std::panic::RefUnwindSafe;
use std::time::{Duration, Instant};

/// xorshift64*: fast, deterministic for a seed, good enough to pick
/// mutations (not for anything secret).
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value: zero is made odd).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// One of `xs`, which must not be empty.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// How long and from which seed a fuzz test runs: `<PREFIX>_SECS` (default
/// 3 s), `<PREFIX>_ITERS` (default unbounded) and `<PREFIX>_SEED` from the
/// environment.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub secs: u64,
    pub iters: u64,
    pub seed: u64,
}

impl Bounds {
    pub fn from_env(prefix: &str, default_seed: u64) -> Bounds {
        let var = |k: &str| {
            std::env::var(format!("{prefix}_{k}"))
                .ok()
                .and_then(|v| v.parse().ok())
        };
        Bounds {
            secs: var("SECS").unwrap_or(3),
            iters: var("ITERS").unwrap_or(u64::MAX),
            seed: var("SEED").unwrap_or(default_seed),
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Stats {
    pub inputs: u64,
    /// The longest `check` of one input took.
    pub slowest: Duration,
}

/// Checks inputs made by `generate` until the bounds are reached. A panic
/// in `check` (a violated property) saves the input to
/// `$TMPDIR/<name>-fuzz-crash-<seed>-<n>` and fails with that path and the
/// seed, so `<PREFIX>_SEED` reproduces it.
pub fn run(
    name: &str,
    bounds: Bounds,
    mut generate: impl FnMut(&mut Rng) -> Vec<u8>,
    check: impl Fn(&[u8]) + RefUnwindSafe,
) -> Stats {
    let mut rng = Rng::new(bounds.seed);
    let started = Instant::now();
    let mut stats = Stats {
        inputs: 0,
        slowest: Duration::ZERO,
    };
    while stats.inputs < bounds.iters && started.elapsed() < Duration::from_secs(bounds.secs) {
        let input = generate(&mut rng);
        let t = Instant::now();
        if std::panic::catch_unwind(|| check(&input)).is_err() {
            let n = stats.inputs;
            let path = std::env::temp_dir().join(format!("{name}-fuzz-crash-{}-{n}", bounds.seed));
            let saved = match std::fs::write(&path, &input) {
                Ok(()) => format!("saved to {}", path.display()),
                Err(e) => format!("not saved ({e})"),
            };
            panic!(
                "{name}: input {n} (seed {}) violated a property; {saved}",
                bounds.seed
            );
        }
        stats.slowest = stats.slowest.max(t.elapsed());
        stats.inputs += 1;
    }
    eprintln!(
        "{name}: {} inputs in {:?} (seed {}), slowest {:?}",
        stats.inputs,
        started.elapsed(),
        bounds.seed,
        stats.slowest
    );
    assert!(
        stats.inputs > 0 || bounds.iters == 0,
        "{name}: no input was checked"
    );
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_inputs() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        assert_eq!(Rng::new(0).below(0), 0);
    }

    #[test]
    fn a_violated_property_fails_the_run_and_saves_the_input() {
        let bounds = Bounds {
            secs: 5,
            iters: 1000,
            seed: 42,
        };
        let r = std::panic::catch_unwind(|| {
            run(
                "fuzz-loop-self-test",
                bounds,
                |rng| vec![rng.below(10) as u8],
                |i| assert_ne!(i[0], 3),
            )
        });
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        let path = msg.split("saved to ").nth(1).expect("the input is saved");
        assert_eq!(std::fs::read(path).unwrap(), [3]);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn bounded_by_iterations() {
        let bounds = Bounds {
            secs: 60,
            iters: 50,
            seed: 1,
        };
        assert_eq!(
            run("fuzz-loop-count", bounds, |_| vec![], |_| ()).inputs,
            50
        );
    }
}
