//! Differential testing of generated kernels (`passfold::gen`): each one is
//! compiled with the fused and the unfused plan, run through the JIT and the
//! plan interpreter, and compared with the f64 reference interpreter within
//! the tolerance `passfold::gen::check` derives from the operations used.
//!
//! A failure shrinks (proptest, over the kernel's structure: statements,
//! sub-expressions, extents, inputs) to a minimal kernel, which is printed;
//! keep it under `tests/tests/regressions/` (see [`regressions_replay`]).
//!
//! `PASSFOLD_CASES` sets the number of kernels (default 500, a few
//! seconds in a debug build) and `PASSFOLD_SEED` the run's seed:
//! `PASSFOLD_CASES=10000 cargo test --release -p passfold-tests random_kernels`.
//! A long run stops at its first mismatch (after shrinking it);
//! `passfold selftest` keeps going and counts every mismatch.

use passfold::kernelgen::{Case, Fill, Outcome, check_case, check_kernel_text, generate_case};
use proptest::strategy::{NewTree, Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::cell::RefCell;
use std::path::PathBuf;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Generated cases; shrinking walks `passfold::gen::shrink_candidates`.
#[derive(Debug)]
struct Cases;

impl Strategy for Cases {
    type Tree = CaseTree;
    type Value = Case;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let seed = proptest::num::u64::ANY.new_tree(runner)?.current();
        Ok(CaseTree {
            current: generate_case(seed),
            parent: None,
            candidates: Vec::new(),
            next: 0,
        })
    }
}

/// A case and, while shrinking, the failing case whose simpler variants are
/// being tried.
struct CaseTree {
    current: Case,
    parent: Option<Case>,
    candidates: Vec<Case>,
    next: usize,
}

impl CaseTree {
    fn advance(&mut self) -> bool {
        if let Some(c) = self.candidates.get(self.next) {
            self.current = c.clone();
            self.next += 1;
            true
        } else {
            if let Some(p) = &self.parent {
                self.current = p.clone();
            }
            false
        }
    }
}

impl ValueTree for CaseTree {
    type Value = Case;

    fn current(&self) -> Case {
        self.current.clone()
    }

    /// The current case fails: try its simpler variants.
    fn simplify(&mut self) -> bool {
        let parent = self.current.clone();
        self.candidates = passfold::kernelgen::shrink_candidates(&parent);
        self.next = 0;
        self.parent = Some(parent);
        self.advance()
    }

    /// The last variant passed: try the next one.
    fn complicate(&mut self) -> bool {
        self.advance()
    }
}

/// The header line a regression file starts with.
fn header(case: &Case) -> String {
    let fill = match case.fill {
        Fill::Uniform(s) => format!("uniform:{s}"),
        Fill::Specials => "specials".into(),
    };
    format!(
        "// case: b={} i={} j={} seed={} fill={fill} f64={}",
        case.extents[0], case.extents[1], case.extents[2], case.input_seed, case.also_f64
    )
}

#[test]
fn random_kernels_agree_with_the_interpreter() {
    let cases = env_or("PASSFOLD_CASES", 500) as u32;
    let seed = env_or("PASSFOLD_SEED", 0x5eed_0f_f01d);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4000,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let total = RefCell::new((0usize, Outcome::default()));
    let res = runner.run(&Cases, |case| {
        let outcome = check_case(&case).map_err(TestCaseError::fail)?;
        let mut t = total.borrow_mut();
        t.0 += 1;
        t.1 += outcome;
        Ok(())
    });
    let (kernels, outcome) = *total.borrow();
    eprintln!(
        "random kernels: {kernels} checked, {} JIT runs, {} elements compared, {} unstable, {} documented -inf limits",
        outcome.jit_runs, outcome.compared, outcome.unstable, outcome.documented
    );
    match res {
        Ok(()) => {}
        Err(TestError::Fail(why, minimal)) => panic!(
            "mismatch; minimal kernel (save it as tests/tests/regressions/NAME.pf):\n{}\n{}\n{why}",
            header(&minimal),
            minimal.spec
        ),
        Err(e) => panic!("{e}"),
    }
}

/// A regression file: its kernel text and the case header.
pub(crate) struct Regression {
    pub(crate) name: String,
    pub(crate) src: String,
    pub(crate) extents: [i64; 3],
    pub(crate) seed: u64,
    pub(crate) fill: Fill,
    pub(crate) also_f64: bool,
    /// `// known-bug: ...`: a real bug, reported and not fixed yet.
    pub(crate) known_bug: Option<String>,
}

pub(crate) fn regressions() -> Vec<Regression> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "pf"));
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let src = std::fs::read_to_string(&path).expect("readable");
            let mut r = Regression {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                src: src.clone(),
                extents: [2, 3, 2],
                seed: 0,
                fill: Fill::Uniform(3.0),
                also_f64: false,
                known_bug: None,
            };
            for line in src.lines() {
                if let Some(why) = line.strip_prefix("// known-bug:") {
                    r.known_bug = Some(why.trim().to_string());
                }
                let Some(rest) = line.strip_prefix("// case:") else {
                    continue;
                };
                for item in rest.split_whitespace() {
                    let (k, v) = item.split_once('=').expect("key=value");
                    match k {
                        "b" => r.extents[0] = v.parse().unwrap(),
                        "i" => r.extents[1] = v.parse().unwrap(),
                        "j" => r.extents[2] = v.parse().unwrap(),
                        "seed" => r.seed = v.parse().unwrap(),
                        "f64" => r.also_f64 = v == "true",
                        "fill" => {
                            r.fill = match v.strip_prefix("uniform:") {
                                Some(s) => Fill::Uniform(s.parse().unwrap()),
                                None => Fill::Specials,
                            }
                        }
                        other => panic!("{}: unknown key {other}", r.name),
                    }
                }
            }
            r
        })
        .collect()
}

fn replay(r: &Regression) -> Result<Outcome, String> {
    check_kernel_text(&r.src, r.extents, r.seed, r.fill, r.also_f64)
}

/// Every kernel the generator ever found failing, once fixed, keeps passing.
#[test]
fn regressions_replay() {
    let all = regressions();
    let mut failures = Vec::new();
    for r in all.iter().filter(|r| r.known_bug.is_none()) {
        if let Err(e) = replay(r) {
            failures.push(format!("{}: {e}", r.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The regressions of bugs reported but not fixed yet, marked
/// `// known-bug:` (none at present): this test fails until each is fixed,
/// so a fix is noticed and its mark removed. Run on request.
#[test]
#[ignore = "replays the bugs marked known-bug in tests/tests/regressions/*.pf (none at present)"]
fn known_bugs_are_fixed() {
    let mut failures = Vec::new();
    for r in regressions().iter().filter(|r| r.known_bug.is_some()) {
        if let Err(e) = replay(r) {
            failures.push(format!(
                "{} ({}): {e}",
                r.name,
                r.known_bug.as_deref().unwrap_or("")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
