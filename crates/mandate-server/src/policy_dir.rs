//! Reading a policy pack from a directory, and the built-in example pack.
//!
//! A pack directory holds `*.cedar` files (searched recursively, in path
//! order), an optional `schema.cedarschema` at its top, and policy tests
//! under `tests/` (`*.json`). Hidden files and directories are skipped.

use std::io;
use std::path::{Path, PathBuf};

use mandate_core::schema::PACK_SCHEMA_FILE;
use mandate_core::{LoadError, PolicyPack, PolicySource};

/// The example pack shipped in `examples/policies`, compiled in so that
/// `mandate serve` works anywhere with no configuration.
pub const EXAMPLE_PACK: &[(&str, &str)] = &[
    (
        "schema.cedarschema",
        include_str!("../../../examples/policies/schema.cedarschema"),
    ),
    (
        "tools.cedar",
        include_str!("../../../examples/policies/tools.cedar"),
    ),
    (
        "data.cedar",
        include_str!("../../../examples/policies/data.cedar"),
    ),
    (
        "recipients.cedar",
        include_str!("../../../examples/policies/recipients.cedar"),
    ),
    (
        "approvals.cedar",
        include_str!("../../../examples/policies/approvals.cedar"),
    ),
    (
        "tests/mailer.json",
        include_str!("../../../examples/policies/tests/mailer.json"),
    ),
];

/// The texts of a pack, as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSources {
    /// The `.cedar` files.
    pub policies: Vec<PolicySource>,
    /// The schema extension, if the directory has one.
    pub schema: Option<PolicySource>,
}

impl PackSources {
    /// Validates and indexes the sources.
    pub fn load(&self) -> Result<PolicyPack, LoadError> {
        PolicyPack::load(&self.policies, self.schema.as_ref())
    }

    /// The sources of the built-in example pack.
    pub fn example() -> Self {
        let source =
            |(name, text): &(&str, &str)| PolicySource::new(format!("<example>/{name}"), *text);
        Self {
            policies: EXAMPLE_PACK
                .iter()
                .filter(|(n, _)| n.ends_with(".cedar"))
                .map(source)
                .collect(),
            schema: EXAMPLE_PACK
                .iter()
                .find(|(n, _)| *n == PACK_SCHEMA_FILE)
                .map(source),
        }
    }
}

/// A directory that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read `{path}`: {source}")]
pub struct ReadError {
    path: PathBuf,
    // Shown in the message, so not chained again as a source.
    source: io::Error,
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> ReadError + '_ {
    move |source| ReadError {
        path: path.to_owned(),
        source,
    }
}

/// Reads the pack in `dir`.
pub fn read(dir: &Path) -> Result<PackSources, ReadError> {
    let mut files = Vec::new();
    collect(dir, "cedar", &mut files)?;
    let mut policies = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(read_error(&path))?;
        policies.push(PolicySource::new(path.display().to_string(), text));
    }
    let schema_path = dir.join(PACK_SCHEMA_FILE);
    let schema = match std::fs::read_to_string(&schema_path) {
        Ok(text) => Some(PolicySource::new(schema_path.display().to_string(), text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(read_error(&schema_path)(e)),
    };
    Ok(PackSources { policies, schema })
}

/// Policy test files of the pack in `dir` (`dir/tests/**/*.json`), or of `path` itself
/// when it is a file or a directory of test files.
pub fn test_files(path: &Path) -> Result<Vec<PathBuf>, ReadError> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let tests = path.join("tests");
    let mut files = Vec::new();
    collect(
        if tests.is_dir() { &tests } else { path },
        "json",
        &mut files,
    )?;
    Ok(files)
}

/// Files below `dir` with extension `ext`, sorted by path.
fn collect(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_error(dir))?
        .collect::<Result<_, _>>()
        .map_err(read_error(dir))?;
    entries.sort_by_key(std::fs::DirEntry::path);
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, ext, out)?;
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    Ok(())
}

/// Writes the example pack into `dir` unless it already holds policies.
/// Never overwrites a file. Returns whether it wrote anything.
pub fn seed_example(dir: &Path) -> Result<bool, ReadError> {
    if has_policies(dir) {
        return Ok(false);
    }
    let mut wrote = false;
    for (name, text) in EXAMPLE_PACK {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(read_error(parent))?;
        }
        std::fs::write(&path, text).map_err(read_error(&path))?;
        wrote = true;
    }
    Ok(wrote)
}

/// What `serve` loads from `dir` when it holds no policy yet, without
/// writing anything: [`seed_example`] would write the example pack there,
/// keeping a `schema.cedarschema` that is already in place, and `serve`
/// would load that. `None` when `dir` holds policies: [`read`] it.
pub fn unseeded_example(dir: &Path) -> Result<Option<PackSources>, ReadError> {
    if has_policies(dir) {
        return Ok(None);
    }
    let mut sources = PackSources::example();
    let schema_path = dir.join(PACK_SCHEMA_FILE);
    match std::fs::read_to_string(&schema_path) {
        Ok(text) => {
            sources.schema = Some(PolicySource::new(schema_path.display().to_string(), text));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(read_error(&schema_path)(e)),
    }
    Ok(Some(sources))
}

fn has_policies(dir: &Path) -> bool {
    let mut files = Vec::new();
    collect(dir, "cedar", &mut files).is_ok() && !files.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_pack_loads() {
        let pack = PackSources::example().load().unwrap();
        assert_eq!(pack.counts(), (5, 4));
    }

    #[test]
    fn seeded_directory_reads_back_as_the_example() {
        let dir = tempfile::tempdir().unwrap();
        assert!(seed_example(dir.path()).unwrap());
        assert!(!seed_example(dir.path()).unwrap());
        let sources = read(dir.path()).unwrap();
        assert_eq!(sources.policies.len(), 4);
        assert!(sources.schema.is_some());
        assert_eq!(sources.load().unwrap().counts(), (5, 4));
        assert_eq!(test_files(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn an_unseeded_directory_reads_as_the_example_it_would_be_seeded_with() {
        let dir = tempfile::tempdir().unwrap();
        // Missing, or empty: the example pack, as seeding would write it.
        let missing = dir.path().join("policies");
        assert_eq!(
            unseeded_example(&missing).unwrap(),
            Some(PackSources::example())
        );
        // A schema of its own is kept: seeding never overwrites a file.
        std::fs::create_dir_all(&missing).unwrap();
        let own = "namespace Mandate {\n  type Params = {};\n}\n";
        std::fs::write(missing.join(PACK_SCHEMA_FILE), own).unwrap();
        let sources = unseeded_example(&missing).unwrap().unwrap();
        assert_eq!(sources.policies, PackSources::example().policies);
        assert_eq!(sources.schema.unwrap().text, own);
        // Once it holds policies, it is read as it is.
        assert!(seed_example(dir.path()).unwrap());
        assert_eq!(unseeded_example(dir.path()).unwrap(), None);
    }
}
