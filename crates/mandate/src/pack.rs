//! The policy pack `check`, `policy validate` and `policy test` work on: a
//! directory named on the command line, or else the pack `mandate serve`
//! would load with the same flags, config file and environment
//! ([`PackDir::resolve`]), so that an offline answer is the server's.

use std::fmt;
use std::path::{Path, PathBuf};

use mandate_core::PolicyPack;
use mandate_server::policy_dir::{self, EXAMPLE_PACK, PackSources};

use crate::cli::PackArgs;
use crate::config::PackDir;
use crate::exit::Code;

/// Where a pack's texts came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A directory on disk.
    Dir(PathBuf),
    /// The example pack built into the binary, because the server's
    /// `DATA_DIR/policies` (this path) holds no policy yet: `serve` writes
    /// the example pack there on first start, and loads it.
    Example(PathBuf),
}

impl Origin {
    /// What `--json` output names: the directory, or `<example>`, as the
    /// built-in pack's files are named.
    pub fn label(&self) -> String {
        match self {
            Self::Dir(dir) => dir.display().to_string(),
            Self::Example(_) => "<example>".to_owned(),
        }
    }

    /// Says on stderr which pack is used (text output only: JSON output
    /// carries [`Origin::label`] instead).
    pub fn announce(&self, json: bool) {
        if !json {
            eprintln!("{self}");
        }
    }

    /// The test files of the pack: `tests` if given, else those of the
    /// directory or of the built-in pack, as (name, text) pairs.
    pub fn test_files(&self, tests: Option<&Path>) -> Result<Vec<TestFile>, String> {
        let dir = match (tests, self) {
            (Some(path), _) => path,
            (None, Self::Dir(dir)) => dir,
            (None, Self::Example(_)) => {
                return Ok(EXAMPLE_PACK
                    .iter()
                    .filter(|(name, _)| name.starts_with("tests/") && name.ends_with(".json"))
                    .map(|(name, text)| TestFile {
                        name: format!("<example>/{name}"),
                        text: Ok((*text).to_owned()),
                    })
                    .collect());
            }
        };
        let files = policy_dir::test_files(dir).map_err(|e| e.to_string())?;
        Ok(files
            .into_iter()
            .map(|file| TestFile {
                name: file.display().to_string(),
                text: std::fs::read_to_string(&file).map_err(|e| e.to_string()),
            })
            .collect())
    }

    /// Where test files are looked for by default, for the message when
    /// there are none.
    pub fn tests_dir(&self) -> PathBuf {
        match self {
            Self::Dir(dir) | Self::Example(dir) => dir.join("tests"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "policy pack: `{}`", dir.display()),
            Self::Example(dir) => write!(
                f,
                "policy pack: the built-in example pack (`{}` holds no policy yet; `mandate serve` writes this pack there on first start)",
                dir.display()
            ),
        }
    }
}

/// One policy test file: its name and its text (or why it cannot be read).
pub struct TestFile {
    pub name: String,
    pub text: Result<String, String>,
}

/// The pack's texts: from `dir` if named, else from where `serve` would
/// load them. Prints the reason and returns `Err(Code::Input)` when the
/// configuration or the directory cannot be read.
pub fn sources(args: &PackArgs, dir: Option<&Path>) -> Result<(Origin, PackSources), Code> {
    let input_error = |message: String| {
        eprintln!("error: {message}");
        Code::Input
    };
    let pack_dir = match dir {
        Some(dir) => PackDir::Configured(dir.to_owned()),
        None => PackDir::resolve(args).map_err(|e| input_error(format!("{e:#}")))?,
    };
    match pack_dir {
        PackDir::Configured(dir) => {
            let sources = policy_dir::read(&dir).map_err(|e| input_error(e.to_string()))?;
            Ok((Origin::Dir(dir), sources))
        }
        PackDir::InDataDir(dir) => {
            match policy_dir::unseeded_example(&dir).map_err(|e| input_error(e.to_string()))? {
                Some(example) => Ok((Origin::Example(dir), example)),
                None => {
                    let sources = policy_dir::read(&dir).map_err(|e| input_error(e.to_string()))?;
                    Ok((Origin::Dir(dir), sources))
                }
            }
        }
    }
}

/// [`sources`], loaded; prints the problems and returns `Err(Code::Input)`
/// when the pack does not load.
pub fn load(args: &PackArgs, dir: Option<&Path>) -> Result<(Origin, PolicyPack), Code> {
    let (origin, sources) = sources(args, dir)?;
    let pack = sources.load().map_err(|e| {
        for p in &e.problems {
            eprintln!("{p}");
        }
        eprintln!(
            "error: the policy pack in `{}` does not load; run `mandate policy validate` for details",
            origin.label()
        );
        Code::Input
    })?;
    Ok((origin, pack))
}
