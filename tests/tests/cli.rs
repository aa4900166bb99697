//! The command-line tool, driven in-process through `passfold::cli::run_args`.

use passfold::cli::run_args;
use passfold::cli::tensor::{Data, HostTensor};
use std::path::{Path, PathBuf};

fn kernel_path(name: &str) -> String {
    format!("{}/../kernels/{name}.pf", env!("CARGO_MANIFEST_DIR"))
}

fn write(dir: &Path, name: &str, t: HostTensor) -> PathBuf {
    let path = dir.join(name);
    t.write_npy(&path).unwrap();
    path
}

fn arg(name: &str, path: &Path) -> String {
    format!("{name}={}", path.display())
}

#[test]
fn run_interpret_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let x = write(
        dir.path(),
        "x.npy",
        HostTensor {
            shape: vec![2, 3],
            data: Data::F32(vec![0.0, 1.0, 2.0, 5.0, 5.0, 5.0]),
        },
    );
    let y = dir.path().join("y.npy");
    let ok = run_args([
        "passfold",
        "run",
        &kernel_path("softmax"),
        "--interpret",
        "--input",
        &arg("x", &x),
        "--output",
        &arg("y", &y),
    ])
    .unwrap();
    assert!(ok);
    let out = HostTensor::read_npy(&y).unwrap();
    assert_eq!(out.shape, vec![2, 3]);
    let Data::F32(v) = out.data else {
        panic!("y must be f32")
    };
    assert!((v[3] - 1.0 / 3.0).abs() < 1e-7);
    assert!((v.iter().take(3).sum::<f32>() - 1.0).abs() < 1e-6);
}

#[test]
fn run_refuses_wrong_type_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let x = write(
        dir.path(),
        "x.npy",
        HostTensor {
            shape: vec![1, 3],
            data: Data::F64(vec![0.0, 1.0, 2.0]),
        },
    );
    let y = dir.path().join("y.npy");
    for engine in [Some("--interpret"), None] {
        let mut cmd = vec![
            "passfold".to_string(),
            "run".into(),
            kernel_path("softmax"),
            "--input".into(),
            arg("x", &x),
            "--output".into(),
            arg("y", &y),
        ];
        cmd.extend(engine.map(String::from));
        let err = run_args(cmd).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("input `x`") && msg.contains("f64") && msg.contains("declares f32"),
            "{msg}"
        );
        assert!(!y.exists(), "nothing may be written on error");
    }
}

#[test]
fn run_refuses_wrong_length_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let x = write(
        dir.path(),
        "x.npy",
        HostTensor {
            shape: vec![2, 3],
            data: Data::F32(vec![0.0; 6]),
        },
    );
    let t = write(
        dir.path(),
        "t.npy",
        HostTensor {
            shape: vec![3],
            data: Data::I32(vec![0, 1, 2]),
        },
    );
    let y = dir.path().join("y.npy");
    let err = run_args([
        "passfold",
        "run",
        &kernel_path("cross_entropy"),
        "--input",
        &arg("x", &x),
        "--input",
        &arg("t", &t),
        "--output",
        &arg("y", &y),
    ])
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("extent `b`") && msg.contains("`t`") && msg.contains("`x`"),
        "{msg}"
    );
    assert!(!y.exists());
}

#[test]
fn run_refuses_gather_out_of_range_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let x = write(
        dir.path(),
        "x.npy",
        HostTensor {
            shape: vec![1, 3],
            data: Data::F32(vec![0.0; 3]),
        },
    );
    let t = write(
        dir.path(),
        "t.npy",
        HostTensor {
            shape: vec![1],
            data: Data::I32(vec![7]),
        },
    );
    let y = dir.path().join("y.npy");
    let err = run_args([
        "passfold",
        "run",
        &kernel_path("cross_entropy"),
        "--interpret",
        "--input",
        &arg("x", &x),
        "--input",
        &arg("t", &t),
        "--output",
        &arg("y", &y),
    ])
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("index 7 is outside dimension 1 of `x`") && msg.contains("line 5"),
        "{msg}"
    );
    assert!(!y.exists());
}

#[test]
fn run_names_missing_and_unknown_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let x = write(
        dir.path(),
        "x.npy",
        HostTensor {
            shape: vec![1, 3],
            data: Data::F32(vec![0.0; 3]),
        },
    );
    let k = kernel_path("softmax_t");
    let missing = run_args([
        "passfold",
        "run",
        &k,
        "--interpret",
        "--input",
        &arg("x", &x),
    ])
    .unwrap_err();
    assert!(
        format!("{missing:#}").contains("parameter `tau` is missing"),
        "{missing:#}"
    );
    let unknown = run_args([
        "passfold",
        "run",
        &k,
        "--interpret",
        "--input",
        &arg("x", &x),
        "--param",
        "tau=1",
        "--param",
        "rho=2",
    ])
    .unwrap_err();
    assert!(
        format!("{unknown:#}").contains("no parameter `rho`"),
        "{unknown:#}"
    );
    let no_input =
        run_args(["passfold", "run", &k, "--interpret", "--param", "tau=1"]).unwrap_err();
    assert!(
        format!("{no_input:#}").contains("input `x` is missing"),
        "{no_input:#}"
    );
}

#[test]
fn check_reports_bad_kernels_with_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pf");
    std::fs::write(
        &bad,
        "kernel k(x: f32[i]) -> (y: f32[i]) {\n    y[i] = x[j];\n}\n",
    )
    .unwrap();
    assert!(!run_args(["passfold", "check", bad.to_str().unwrap()]).unwrap());
    for k in passfold_kernels::CATALOGUE {
        assert!(
            run_args(["passfold", "check", &kernel_path(k.name)]).unwrap(),
            "{}",
            k.name
        );
    }
}

#[test]
fn plan_json_has_kernel_and_passes() {
    for k in passfold_kernels::CATALOGUE {
        let plan =
            passfold_dsl::compile(k.source, &Default::default(), Default::default()).unwrap();
        let json = plan.to_json();
        assert_eq!(json["kernel"], k.name);
        assert!(json["passes"].as_u64().is_some(), "{}", k.name);
    }
}

#[test]
fn run_jit_matches_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f32> = (0..24).map(|v| (v as f32 * 0.37).sin() * 5.0).collect();
    let x = write(
        dir.path(),
        "x.npy",
        HostTensor {
            shape: vec![3, 8],
            data: Data::F32(values),
        },
    );
    let t = write(
        dir.path(),
        "t.npy",
        HostTensor {
            shape: vec![3],
            data: Data::I32(vec![0, 7, 3]),
        },
    );
    let (yj, yi) = (dir.path().join("yj.npy"), dir.path().join("yi.npy"));
    let k = kernel_path("cross_entropy");
    for (out, extra) in [(&yj, None), (&yi, Some("--interpret"))] {
        let mut cmd = vec![
            "passfold".to_string(),
            "run".into(),
            k.clone(),
            "--input".into(),
            arg("x", &x),
            "--input".into(),
            arg("t", &t),
            "--output".into(),
            arg("y", out),
        ];
        cmd.extend(extra.map(String::from));
        assert!(run_args(cmd).unwrap());
    }
    let (Data::F32(a), Data::F32(b)) = (
        HostTensor::read_npy(&yj).unwrap().data,
        HostTensor::read_npy(&yi).unwrap().data,
    ) else {
        panic!("f32 outputs")
    };
    for (a, b) in a.iter().zip(&b) {
        // The interpreter runs in f64 and rounds once; the JIT runs in f32.
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn bench_runs_and_reports_json() {
    let ok = run_args([
        "passfold",
        "bench",
        &kernel_path("logsumexp"),
        "--size",
        "b=3",
        "--size",
        "i=17",
        "--iters",
        "2",
        "--threads",
        "2",
        "--json",
    ])
    .unwrap();
    assert!(ok);
    let ok = run_args([
        "passfold",
        "bench",
        &kernel_path("softmax"),
        "--size",
        "b=2",
        "--size",
        "i=9",
        "--iters",
        "2",
    ])
    .unwrap();
    assert!(ok);
    let err = run_args([
        "passfold",
        "bench",
        &kernel_path("softmax"),
        "--size",
        "q=2",
    ])
    .unwrap_err();
    assert!(format!("{err:#}").contains("no extent `q`"), "{err:#}");
}
