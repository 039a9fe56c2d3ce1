//! The Python SDK (`clients/python`, issue 19), tested from here so that
//! `cargo test` (and so `scripts/test` and CI) runs it: each module of
//! `clients/python/tests` is one test below, run by pytest against the
//! `mandate` binary cargo built (`MANDATE_BIN`), which its fixture starts as
//! a real server; mypy (strict) and ruff are tests of their own.
//!
//! The Python packages (clients/python/requirements-test.txt, and the SDK
//! itself with its adapters' extras) are installed by `scripts/test` into
//! the test virtual environment, `<target>/test-venv`; `MANDATE_TEST_PYTHON`
//! names another interpreter. A missing package fails the test with the
//! set-up command; nothing skips. The SDK is imported from this checkout
//! (`PYTHONPATH=clients/python/src`), never from an older installed copy.

// Tests fail by panicking; indexing and unwrapping keep the assertions short.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SETUP: &str = "the Python SDK's test packages are not installed: run `scripts/test` once \
from the repository root (it installs clients/python/requirements-test.txt and the SDK with its \
extras into the virtual environment <target>/test-venv, where the tests find them), or set \
MANDATE_TEST_PYTHON to a Python that has them";

/// The Python test modules, each run by one test below.
const MODULES: [&str; 6] = [
    "test_task.py",
    "test_verify.py",
    "test_langchain.py",
    "test_openai_agents.py",
    "test_pydantic_ai.py",
    "test_examples.py",
];

fn sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python")
}

/// The interpreter: `MANDATE_TEST_PYTHON`, else `<target>/test-venv`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("MANDATE_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-venv/bin/python");
    assert!(venv.exists(), "{SETUP} (no `{}`)", venv.display());
    venv
}

/// `python -m <args>` in clients/python, importing the SDK from this
/// checkout and writing no caches into it.
fn python_module(args: &[&str]) -> Output {
    let mut command = Command::new(python());
    command
        .arg("-m")
        .args(args)
        .current_dir(sdk())
        .env("PYTHONPATH", sdk().join("src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("MANDATE_BIN", env!("CARGO_BIN_EXE_mandate"))
        .env_remove("MANDATE_URL")
        .env_remove("MANDATE_IDENTITY_TOKEN");
    command
        .output()
        .unwrap_or_else(|e| panic!("{SETUP} (cannot run {command:?}: {e})"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Fails with the set-up command unless every package the tests import is
/// there, and the SDK comes from this checkout.
fn require_packages() {
    let probe = Command::new(python())
        .args([
            "-c",
            "import mandate, httpx, cryptography, pytest, pytest_asyncio, mypy, ruff, langchain_core, \
             langgraph, agents, pydantic_ai; print(mandate.__file__)",
        ])
        .env("PYTHONPATH", sdk().join("src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("{SETUP} (cannot run {}: {e})", python().display()));
    assert!(probe.status.success(), "{SETUP}: {}", text(&probe));
    let found = String::from_utf8_lossy(&probe.stdout).trim().to_owned();
    let expected = sdk()
        .join("src/mandate/__init__.py")
        .canonicalize()
        .unwrap();
    assert_eq!(
        Path::new(&found).canonicalize().unwrap(),
        expected,
        "the SDK was imported from elsewhere"
    );
}

/// Runs one module of clients/python/tests with pytest; fails with its
/// output unless every test in it passed.
fn pytest(module: &str) {
    require_packages();
    let output = python_module(&[
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfE",
        &format!("tests/{module}"),
    ]);
    let log = text(&output);
    assert!(output.status.success(), "pytest {module} failed:\n{log}");
    // Say how many ran: cargo counts this as one test.
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or("");
    assert!(
        summary.contains("passed"),
        "pytest {module} ran nothing:\n{log}"
    );
    println!("pytest tests/{module}: {summary}");
}

#[test]
fn tasks_and_guarded_tools() {
    pytest("test_task.py");
}

#[test]
fn offline_verification() {
    pytest("test_verify.py");
}

#[test]
fn langchain_and_langgraph_adapter() {
    pytest("test_langchain.py");
}

#[test]
fn openai_agents_adapter() {
    pytest("test_openai_agents.py");
}

#[test]
fn pydantic_ai_adapter() {
    pytest("test_pydantic_ai.py");
}

#[test]
fn the_examples_run() {
    pytest("test_examples.py");
}

/// Every test module is run by a test here: a new one must be added.
#[test]
fn every_python_test_module_runs_here() {
    let found: BTreeSet<String> = std::fs::read_dir(sdk().join("tests"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("test_") && name.ends_with(".py"))
        .collect();
    let wired: BTreeSet<String> = MODULES.iter().map(|m| (*m).to_owned()).collect();
    assert_eq!(
        found, wired,
        "add each clients/python/tests module to MODULES and a #[test]"
    );
}

#[test]
fn mypy_strict() {
    require_packages();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-sdk-mypy-cache");
    let output = python_module(&["mypy", "--cache-dir", cache.to_str().unwrap()]);
    assert!(output.status.success(), "mypy --strict:\n{}", text(&output));
}

#[test]
fn ruff_lint_and_format() {
    require_packages();
    let check = python_module(&["ruff", "check", "--no-cache", "."]);
    assert!(check.status.success(), "ruff check:\n{}", text(&check));
    let format = python_module(&["ruff", "format", "--no-cache", "--check", "."]);
    assert!(
        format.status.success(),
        "ruff format --check:\n{}",
        text(&format)
    );
}
