//! Compile-time tests of lumen's proc-macros: misuse must fail with an actionable message.
//!
//! Each `tests/ui/fail/*.rs` is type-checked by `rustc` against the `lumen` this test suite was
//! built with (the same rlibs in `target/`, found with `cargo build --test ui --message-format=json`, a
//! no-op after `cargo test` built them), so no second copy of the crate and its dependencies is
//! ever built. It must fail, and its diagnostics, normalized (see [`normalize`]), must match
//! `tests/ui/fail/*.stderr`. Regenerate those with `LUMEN_UI=overwrite cargo test --test ui`.
//!
//! Programs that must build and run with the macros (`full_api`, `modules_and_privacy`,
//! `prelude_imports`) are ordinary integration tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The library files of the crates a UI test may name (`lumen`, `serde`), and the directory
/// holding every dependency, as the current `cargo test` build made them.
struct Built {
    externs: BTreeMap<String, PathBuf>,
    deps: PathBuf,
}

fn built() -> Built {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--test", "ui", "--message-format=json", "--quiet"])
        .current_dir(manifest);
    // Cargo sets these for the test process, not for the shell that ran `cargo test`; build
    // scripts (ring's) rerun when they change, so the build must not see them.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key == "OUT_DIR"
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_BIN_")
            || key.starts_with("CARGO_CFG_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&key.as_ref())
        {
            cargo.env_remove(key.as_ref());
        }
    }
    let out = cargo
        .output()
        .expect("run cargo build --message-format=json");
    assert!(
        out.status.success(),
        "cargo build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut externs = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let name = msg["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !["lumen", "serde"].contains(&name.as_str()) {
            continue;
        }
        let rlib = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".rlib"))
            .map(PathBuf::from);
        if let Some(rlib) = rlib {
            externs.insert(name, rlib);
        }
    }
    let lumen = externs.get("lumen").expect("cargo reported lumen's rlib");
    // target/<profile>/liblumen.rlib (uplifted) or target/<profile>/deps/liblumen-<hash>.rlib.
    let deps = lumen
        .parent()
        .map(|p| {
            if p.ends_with("deps") {
                p.parent().unwrap_or(p)
            } else {
                p
            }
        })
        .expect("a target directory")
        .join("deps");
    Built { externs, deps }
}

/// Whether a `-->` path is one of the UI test files (whose line numbers are kept).
fn is_case(path: &str) -> bool {
    path.starts_with("tests/ui/")
}

/// Rewrites paths outside this repository the same on every machine.
fn portable_path(path: &str) -> String {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/");
    if let Some(rest) = path.strip_prefix(manifest) {
        return rest.to_string();
    }
    if let Some(i) = path.find("/registry/src/") {
        // ~/.cargo/registry/src/<index>/<crate>-<version>/... -> $CARGO/<crate>-<version>/...
        let rest = &path[i + "/registry/src/".len()..];
        let rest = rest.split_once('/').map_or(rest, |(_, r)| r);
        return format!("$CARGO/{rest}");
    }
    if let Some(i) = path.find("/library/") {
        if path.starts_with("/rustc/") || path.contains("/rustlib/") {
            return format!("$RUST/{}", &path[i + "/library/".len()..]);
        }
    }
    path.to_string()
}

/// rustc's diagnostics in a form that survives unrelated edits and other machines: gutters and
/// indentation dropped, line numbers kept only for the test files themselves, paths made
/// portable, counts of "other types" elided, and the closing summary lines removed.
fn normalize(stderr: &str) -> String {
    let mut out = Vec::new();
    // Whether the snippet being read is from a test file.
    let mut in_case = true;
    for raw in stderr.lines() {
        let line = raw.trim_start();
        if line.starts_with("error: aborting due to")
            || line.starts_with("For more information about")
            || line.starts_with("Some errors have detailed explanations")
        {
            continue;
        }
        let normalized = if let Some(path) = line
            .strip_prefix("--> ")
            .or_else(|| line.strip_prefix("::: "))
        {
            let arrow = &line[..4];
            // path:line:col
            let mut parts = path.rsplitn(3, ':');
            let (col, row, file) = (parts.next(), parts.next(), parts.next());
            match (file, row, col) {
                (Some(file), Some(row), Some(col))
                    if row.parse::<u32>().is_ok() && col.parse::<u32>().is_ok() =>
                {
                    in_case = is_case(file);
                    if in_case {
                        format!("{arrow}{file}:{row}:{col}")
                    } else {
                        format!("{arrow}{}", portable_path(file))
                    }
                }
                _ => {
                    in_case = is_case(path);
                    format!("{arrow}{}", portable_path(path))
                }
            }
        } else if let Some((num, rest)) = line
            .split_once(" |")
            .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            if in_case {
                format!("{num} |{rest}")
            } else {
                format!("|{rest}")
            }
        } else if let Some(rest) = line.strip_prefix('|') {
            format!("|{rest}")
        } else {
            line.to_string()
        };
        let normalized = match normalized.find("and ").zip(normalized.find(" others")) {
            Some((a, b))
                if normalized.starts_with("and ")
                    && normalized[a + 4..b].bytes().all(|c| c.is_ascii_digit()) =>
            {
                "and $N others".to_string()
            }
            _ => normalized,
        };
        if is_line_number_only(&normalized) {
            continue;
        }
        out.push(normalized.trim_end().to_string());
    }
    while out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out.join("\n") + "\n"
}

/// rustc's `...` elision rows carry no information once line numbers are gone.
fn is_line_number_only(line: &str) -> bool {
    line == "..."
}

fn check(built: &Built, case: &Path, scratch: &Path) -> Result<(), String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let relative = case.strip_prefix(manifest).unwrap_or(case);
    let mut cmd = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    cmd.current_dir(manifest)
        .args(["--edition=2021", "--crate-type=bin", "--emit=metadata"])
        .args(["--color=never", "--cap-lints=warn", "-L"])
        .arg(format!("dependency={}", built.deps.display()))
        .arg("--out-dir")
        .arg(scratch)
        .arg(relative);
    for (name, rlib) in &built.externs {
        cmd.arg("--extern")
            .arg(format!("{name}={}", rlib.display()));
    }
    let out = cmd.output().map_err(|e| format!("run rustc: {e}"))?;
    if out.status.success() {
        return Err(format!("{} compiled, but must not", relative.display()));
    }
    let actual = normalize(&String::from_utf8_lossy(&out.stderr));
    let expected_path = case.with_extension("stderr");
    if std::env::var("LUMEN_UI").as_deref() == Ok("overwrite") {
        std::fs::write(&expected_path, &actual).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(&expected_path)
        .map_err(|e| format!("{}: {e}", expected_path.display()))?;
    if normalize(&expected) == actual {
        Ok(())
    } else {
        Err(format!(
            "{} fails differently than {} says.\n--- expected\n{expected}\n--- actual\n{actual}\n\
             (LUMEN_UI=overwrite cargo test --test ui rewrites the expectation)",
            relative.display(),
            expected_path.display()
        ))
    }
}

#[test]
fn ui() {
    let built = built();
    let scratch = std::env::temp_dir().join(format!("lumen-ui-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/fail");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/ui/fail")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no UI cases in {}", dir.display());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| check(&built, case, &scratch).err())
        .collect();
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        failures.is_empty(),
        "{} of {} UI cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn normalization_keeps_case_lines_and_drops_foreign_ones() {
    let raw = "error[E0277]: bad\n  --> tests/ui/fail/x.rs:11:6\n   |\n11 | impl Cache {\n   \
               |      ^^^^^ here\n   |\nnote: required by a bound in `X`\n  --> src/lib.rs:120:5\n    \
               |\n120 |     pub fn f() {}\n    |            ^ this\n   = help: the following:\n     \
               and 12 others\n\nerror: aborting due to 1 previous error\n\n\
               For more information about this error, try `rustc --explain E0277`.\n";
    assert_eq!(
        normalize(raw),
        "error[E0277]: bad\n--> tests/ui/fail/x.rs:11:6\n|\n11 | impl Cache {\n|      ^^^^^ here\n\
         |\nnote: required by a bound in `X`\n--> src/lib.rs\n|\n|     pub fn f() {}\n\
         |            ^ this\n= help: the following:\nand $N others\n"
    );
}
