//! The container files at the repository root — `Dockerfile`, `.dockerignore`,
//! `compose.yaml` — checked where no container runtime runs (the test machines
//! have a docker client but no engine, and reach no image registry): the image
//! is never built here.
//!
//! What is checked instead: hadolint finds nothing at warning level in the
//! Dockerfile; compose.yaml validates against the Compose Specification's
//! JSON schema; every `MANDATE_*` variable the two files name is one `mandate
//! serve` reads; and the binary is run the way the files arrange it, on this
//! machine: with the image's environment on an empty data directory shaped
//! like the image's volume, then as compose.yaml's instances on one
//! PostgreSQL database with the keys volume they share, each answering the
//! image's HEALTHCHECK command. Ownership, the distroless base, the engine's
//! volume copy-up and networking are not exercised.
//!
//! The linters are installed by `scripts/test` into the test virtual
//! environment (tests/container/requirements.txt); a missing one fails the
//! test with the set-up command, nothing skips.

// Tests fail by panicking; indexing and unwrapping keep the assertions short.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use util::Launch;

const SETUP: &str = "the container linters are not installed: run `scripts/test` once from the \
repository root (it installs tests/container/requirements.txt into the virtual environment \
<target>/test-venv, where the tests find them)";

/// The image compose.yaml builds and runs Mandate from.
const COMPOSE_IMAGE: &str = "mandate:local";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repo().join(name))
        .unwrap_or_else(|e| panic!("cannot read {name} at the repository root: {e}"))
}

/// A program of the test virtual environment: beside `MANDATE_TEST_PYTHON`
/// when that is set, else in `<target>/test-venv/bin`.
fn venv_tool(name: &str) -> PathBuf {
    let bin = match std::env::var_os("MANDATE_TEST_PYTHON") {
        Some(python) => PathBuf::from(python).parent().unwrap().to_owned(),
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("test-venv/bin"),
    };
    let tool = bin.join(name);
    assert!(tool.is_file(), "{SETUP} (no `{}`)", tool.display());
    tool
}

fn run(command: &mut Command) -> Output {
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

// ---------------------------------------------------------------------------
// The Dockerfile, read
// ---------------------------------------------------------------------------

/// The Dockerfile's instructions as (NAME, arguments): continuation lines
/// joined, comments left out.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut all = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (name, args) = current.split_once(char::is_whitespace).unwrap();
                all.push((name.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "the Dockerfile ends in a continuation");
    all
}

/// `KEY=value KEY="a value" …`, as ENV and LABEL write them.
fn pairs(args: &str) -> BTreeMap<String, String> {
    let mut pairs = BTreeMap::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=value: `{rest}`"));
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap();
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_at(after.find(char::is_whitespace).unwrap_or(after.len())),
        };
        pairs.insert(key.trim().to_owned(), value.to_owned());
        rest = after.trim_start();
    }
    pairs
}

/// What the runtime stage of the Dockerfile (after its last FROM) declares.
#[derive(Debug, Default)]
struct Image {
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    expose: Vec<String>,
    volumes: Vec<String>,
    user: String,
    /// HEALTHCHECK's options (`interval` → `30s`) and command.
    healthcheck_options: BTreeMap<String, String>,
    healthcheck: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

fn json_array(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("not an exec-form JSON array ({e}): {args}"))
}

impl Image {
    fn read() -> Self {
        let all = instructions(&read("Dockerfile"));
        let last_from = all.iter().rposition(|(name, _)| name == "FROM").unwrap();
        let mut image = Self::default();
        for (name, args) in &all[last_from + 1..] {
            match name.as_str() {
                "ENV" => image.env.extend(pairs(args)),
                "LABEL" => image.labels.extend(pairs(args)),
                "EXPOSE" => image
                    .expose
                    .extend(args.split_whitespace().map(str::to_owned)),
                "VOLUME" => image.volumes.extend(json_array(args)),
                "USER" => image.user.clone_from(args),
                "ENTRYPOINT" => image.entrypoint = json_array(args),
                "CMD" => image.cmd = json_array(args),
                "HEALTHCHECK" => {
                    let (options, command) = args.split_once(" CMD ").unwrap();
                    for option in options.split_whitespace() {
                        let (key, value) = option.trim_start_matches("--").split_once('=').unwrap();
                        image
                            .healthcheck_options
                            .insert(key.to_owned(), value.to_owned());
                    }
                    image.healthcheck = json_array(command.trim());
                }
                _ => {}
            }
        }
        image
    }

    /// The port of MANDATE_LISTEN.
    fn port(&self) -> &str {
        self.env["MANDATE_LISTEN"].rsplit_once(':').unwrap().1
    }

    /// The data directory, the image's volume.
    fn data_dir(&self) -> &str {
        &self.env["MANDATE_DATA_DIR"]
    }
}

/// Runs the image's HEALTHCHECK command against the server on `port`: the
/// binary under test for the image's, and the port the server got for the
/// image's (the tests cannot take a fixed port).
fn health_check(image: &Image, port: u16) -> Output {
    let image_port = image.port();
    let mut argv = image.healthcheck.clone();
    for arg in &mut argv {
        if let Some(url) = arg
            .strip_suffix(&format!(":{image_port}"))
            .filter(|u| u.starts_with("http://"))
        {
            *arg = format!("{url}:{port}");
        }
    }
    assert_eq!(argv[0], image.entrypoint[0]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_mandate"));
    command.args(&argv[1..]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MANDATE_") {
            command.env_remove(key);
        }
    }
    command.output().unwrap()
}

/// Makes `path` a directory with `mode`, as the Dockerfile's `install -d`.
fn make_dir(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// What the image holds at `target`, copied into an empty named volume
/// mounted there (as the engine does on first use): the data directory
/// with an empty `keys/` (Dockerfile), or nothing.
fn init_volume(image: &Image, target: &str, dir: &Path) {
    let data_dir = image.data_dir();
    if target == data_dir {
        make_dir(dir, 0o755);
        make_dir(&dir.join("keys"), 0o700);
    } else if target == format!("{data_dir}/keys") {
        make_dir(dir, 0o700);
    } else {
        make_dir(dir, 0o755);
    }
}

// ---------------------------------------------------------------------------
// compose.yaml, read
// ---------------------------------------------------------------------------

/// compose.yaml as JSON (anchors and merge keys resolved), read with the
/// YAML library check-jsonschema uses.
fn compose() -> Value {
    let out = run(Command::new(venv_tool("python")).args([
        "-c",
        "import json, sys\nfrom ruamel.yaml import YAML\n\
         print(json.dumps(YAML(typ='safe', pure=True).load(open(sys.argv[1]))))",
        repo().join("compose.yaml").to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{SETUP}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `${NAME:-default}` as compose expands it when NAME is not set.
fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').unwrap() + at;
        let expression = &rest[at + 2..end];
        let (_, default) = expression
            .split_once(":-")
            .unwrap_or_else(|| panic!("`${{{expression}}}` has no default for a clean checkout"));
        out.push_str(default);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// One entry of a service's `volumes`: `SOURCE:TARGET[:ro]`.
#[derive(Debug, Clone)]
struct Mount {
    source: String,
    target: String,
    read_only: bool,
}

fn mounts(service: &Value) -> Vec<Mount> {
    service["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.as_str().unwrap().split(':').collect();
            Mount {
                source: parts[0].to_owned(),
                target: parts[1].to_owned(),
                read_only: parts.get(2) == Some(&"ro"),
            }
        })
        .collect()
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), interpolate(v.as_str().unwrap())))
        .collect()
}

fn depends_healthy(service: &Value, on: &str) -> bool {
    service["depends_on"][on]["condition"] == "service_healthy"
}

// ---------------------------------------------------------------------------
// Linters
// ---------------------------------------------------------------------------

fn hadolint(dockerfile: &Path) -> Output {
    run(Command::new(venv_tool("hadolint"))
        .args(["--no-color", "--failure-threshold", "warning", "--config"])
        .arg(repo().join(".hadolint.yaml"))
        .arg(dockerfile))
}

#[test]
fn the_dockerfile_passes_hadolint_without_a_warning() {
    let out = hadolint(&repo().join("Dockerfile"));
    assert!(
        out.status.success(),
        "hadolint finds problems in the Dockerfile:\n{}",
        text(&out)
    );
    // The linter is live: the same file with a classic mistake fails.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("Dockerfile");
    std::fs::write(&broken, format!("{}\nRUN cd /tmp\n", read("Dockerfile"))).unwrap();
    let out = hadolint(&broken);
    assert!(
        !out.status.success() && text(&out).contains("DL3003"),
        "hadolint passed `RUN cd`: {}",
        text(&out)
    );
}

fn check_compose(file: &Path) -> Output {
    run(Command::new(venv_tool("check-jsonschema"))
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(file))
}

#[test]
fn compose_yaml_follows_the_compose_specification() {
    let out = check_compose(&repo().join("compose.yaml"));
    assert!(
        out.status.success(),
        "compose.yaml does not validate against the Compose Specification:\n{}",
        text(&out)
    );
    // The schema is live: a misspelt key fails.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("compose.yaml");
    std::fs::write(
        &broken,
        read("compose.yaml").replacen("restart:", "restrat:", 1),
    )
    .unwrap();
    let out = check_compose(&broken);
    assert!(
        !out.status.success() && text(&out).contains("restrat"),
        "a misspelt key validates: {}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------
// The variables
// ---------------------------------------------------------------------------

/// Every `MANDATE_NAME` in `text`.
fn variables(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("MANDATE_") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if name.len() > "MANDATE_".len() {
            names.insert(name);
        }
    }
    names
}

/// `mandate serve` in a directory where its default data directory cannot
/// be made (a file has its name), with `variable` set to a TOML table, a
/// value no setting takes. Nothing starts: the settings are refused, or
/// the data directory is. The exit code and stderr.
fn probe(variable: Option<&str>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mandate-data"), "").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mandate"));
    command.arg("serve").current_dir(dir.path());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MANDATE_") {
            command.env_remove(key);
        }
    }
    if let Some(name) = variable {
        command.env(name, "{probe = 1}");
    }
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_mandate_variable_in_the_container_files_is_one_serve_reads() {
    let mut named = BTreeMap::new();
    for file in ["Dockerfile", "compose.yaml"] {
        for name in variables(&read(file)) {
            named.entry(name).or_insert(file);
        }
    }
    for expected in ["MANDATE_LISTEN", "MANDATE_DATA_DIR", "MANDATE_STORE"] {
        assert!(named.contains_key(expected), "{expected} not found");
    }
    // The probe tells them apart: a variable serve does not read changes
    // nothing.
    let (code, baseline) = probe(None);
    assert_eq!(code, Some(1), "{baseline}");
    assert!(
        baseline.contains("cannot create the data directory"),
        "{baseline}"
    );
    assert_eq!(
        probe(Some("MANDATE_NO_SUCH_SETTING")),
        (code, baseline.clone())
    );
    for (name, file) in named {
        let (code, stderr) = probe(Some(&name));
        assert_ne!(
            stderr, baseline,
            "{file} names `{name}`, which `mandate serve` does not read (a misspelt setting is ignored silently)"
        );
        assert_eq!(code, Some(2), "{name}: {stderr}");
    }
}

// ---------------------------------------------------------------------------
// Running it as the files arrange
// ---------------------------------------------------------------------------

#[test]
fn the_image_starts_on_an_empty_volume_and_passes_its_health_check() {
    let image = Image::read();
    // The pieces agree with each other.
    let port = image.port();
    assert_eq!(image.expose, [port], "EXPOSE and MANDATE_LISTEN");
    assert_eq!(image.entrypoint, ["/usr/local/bin/mandate"]);
    assert_eq!(image.cmd, ["serve"]);
    assert_eq!(
        image.volumes,
        [image.data_dir()],
        "VOLUME and MANDATE_DATA_DIR"
    );
    assert!(
        !["", "root", "0"].contains(&image.user.split(':').next().unwrap()),
        "USER {}",
        image.user
    );
    assert_eq!(
        image.labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION"),
        "the image's version label and the workspace's version"
    );
    let server_url = format!("http://127.0.0.1:{port}");
    assert_eq!(
        image.healthcheck[..4],
        [
            image.entrypoint[0].as_str(),
            "health",
            "--server",
            &server_url
        ],
        "HEALTHCHECK asks the server MANDATE_LISTEN names"
    );
    // The command gives up before the engine kills it.
    let seconds = |d: &str| d.trim_end_matches('s').parse::<u64>().unwrap();
    let timeout = image.healthcheck.iter().position(|a| a == "--timeout");
    assert!(
        timeout
            .is_some_and(|i| seconds(&image.healthcheck[i + 1])
                < seconds(&image.healthcheck_options["timeout"])),
        "HEALTHCHECK --timeout and mandate health --timeout: {:?} {:?}",
        image.healthcheck_options,
        image.healthcheck
    );

    // The image's environment on a fresh volume: the server makes what it
    // needs in it and serves.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("volume");
    init_volume(&image, image.data_dir(), &data);
    let listen = image.env["MANDATE_LISTEN"].replace(&format!(":{port}"), ":0");
    let mut launch = Launch::bare().env("MANDATE_LOG_FORMAT", "json");
    for (key, value) in &image.env {
        launch = launch.env(key, value);
    }
    let server = launch
        .env("MANDATE_DATA_DIR", &data)
        .env("MANDATE_LISTEN", &listen)
        .start();
    let port = server.addr().port();
    let out = health_check(&image, port);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok "));
    for key in ["ledger.key", "tasks.key"] {
        assert!(data.join("keys").join(key).is_file(), "no keys/{key}");
    }
    assert!(data.join("policies").is_dir());
    // Stopped, it is not healthy any more.
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    let out = health_check(&image, port);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn the_compose_instances_share_one_database_and_the_keys_of_the_first() {
    let image = Image::read();
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    let data_dir = image.data_dir().to_owned();
    let keys_target = format!("{data_dir}/keys");

    // Who is who: one instance generates the keys into its data
    // directory's keys/, a shared volume; every other reads them there.
    let instances: Vec<&String> = services
        .iter()
        .filter(|(_, s)| s["image"] == COMPOSE_IMAGE)
        .map(|(name, _)| name)
        .collect();
    assert!(instances.len() >= 2, "{instances:?}");
    let generators: Vec<&String> = instances
        .iter()
        .copied()
        .filter(|name| {
            mounts(&services[*name])
                .iter()
                .any(|m| m.target == keys_target && !m.read_only)
        })
        .collect();
    assert_eq!(generators.len(), 1, "instances that write the keys");
    let generator = generators[0];
    let keys_volume = mounts(&services[generator])
        .into_iter()
        .find(|m| m.target == keys_target)
        .unwrap()
        .source;
    let generator_env = environment(&services[generator]);
    let mut data_volumes = BTreeSet::new();
    for name in &instances {
        let service = &services[*name];
        assert_eq!(service["build"], ".", "{name} builds the Dockerfile");
        assert!(depends_healthy(service, "postgres"), "{name}");
        let env = environment(service);
        let data_volume = mounts(service)
            .into_iter()
            .find(|m| m.target == data_dir)
            .unwrap_or_else(|| panic!("{name} has no volume at {data_dir}"))
            .source;
        assert!(
            data_volumes.insert(data_volume),
            "{name} shares a data directory"
        );
        if *name == generator {
            assert!(!env.contains_key("MANDATE_SIGNING_KEY_FILE"));
            continue;
        }
        assert!(depends_healthy(service, generator), "{name}: keys first");
        let keys = mounts(service)
            .into_iter()
            .find(|m| m.source == keys_volume)
            .unwrap_or_else(|| panic!("{name} does not mount {keys_volume}"));
        assert!(keys.read_only, "{name} mounts the keys writable");
        let mut rest = env.clone();
        for (variable, file) in [
            ("MANDATE_SIGNING_KEY_FILE", "ledger.key"),
            ("MANDATE_TASK_SIGNING_KEY_FILE", "tasks.key"),
        ] {
            assert_eq!(
                rest.remove(variable).as_deref(),
                Some(format!("{}/{file}", keys.target).as_str()),
                "{name}: {variable}"
            );
        }
        assert_eq!(rest, generator_env, "{name}: the settings of {generator}");
    }
    let store = &generator_env["MANDATE_STORE"];
    assert!(
        store.starts_with("postgres://") && store.contains("@postgres:"),
        "{store}"
    );

    // Then run them so, in the order depends_on gives: each volume a
    // directory made as the engine makes it, each container path read in
    // its mounts, the database one of this machine's.
    let database = test_postgres::shared().database();
    let root = tempfile::tempdir().unwrap();
    let volume_dir = |source: &str| -> PathBuf {
        if source.starts_with("./") {
            repo().join(source)
        } else {
            root.path().join("volumes").join(source)
        }
    };
    let order: Vec<&String> = std::iter::once(generator)
        .chain(instances.iter().copied().filter(|n| *n != generator))
        .collect();
    let mut servers = Vec::new();
    for name in order {
        let service = &services[name];
        let mut service_mounts = mounts(service);
        // Outer mounts first, so that a nested one replaces what the outer
        // volume holds at its place (as the engine's mount on top does).
        service_mounts.sort_by_key(|m| m.target.len());
        for mount in &service_mounts {
            let dir = volume_dir(&mount.source);
            if !mount.source.starts_with("./") && !dir.exists() {
                init_volume(&image, &mount.target, &dir);
            }
            if let Some(outer) = service_mounts
                .iter()
                .filter(|o| o.target.len() < mount.target.len())
                .find(|o| mount.target.starts_with(&format!("{}/", o.target)))
            {
                let place = volume_dir(&outer.source).join(&mount.target[outer.target.len() + 1..]);
                if place.is_dir() && !place.is_symlink() {
                    std::fs::remove_dir(&place).unwrap();
                }
                if !place.exists() {
                    std::os::unix::fs::symlink(&dir, &place).unwrap();
                }
            }
        }
        let host_path = |path: &str| -> PathBuf {
            let mount = service_mounts
                .iter()
                .filter(|m| path == m.target || path.starts_with(&format!("{}/", m.target)))
                .max_by_key(|m| m.target.len())
                .unwrap_or_else(|| panic!("{name}: `{path}` is in no volume"));
            let dir = volume_dir(&mount.source);
            match path[mount.target.len()..].trim_start_matches('/') {
                "" => dir,
                rest => dir.join(rest),
            }
        };
        let mut env = image.env.clone();
        env.extend(environment(service));
        let port = image.port().to_owned();
        let mut launch = Launch::bare();
        for (key, value) in &env {
            let value = match key.as_str() {
                "MANDATE_STORE" => database.clone(),
                "MANDATE_LISTEN" => value.replace(&format!(":{port}"), ":0"),
                "MANDATE_DATA_DIR"
                | "MANDATE_POLICIES"
                | "MANDATE_SIGNING_KEY_FILE"
                | "MANDATE_TASK_SIGNING_KEY_FILE"
                | "MANDATE_CONFIG" => host_path(value).display().to_string(),
                _ => value.clone(),
            };
            launch = launch.env(key, value);
        }
        let server = launch.start();
        let out = health_check(&image, server.addr().port());
        assert!(out.status.success(), "{name}: {}", text(&out));
        servers.push((name, server));
    }
    // The keys are in the shared volume only, and every instance signs the
    // one log with the first's key.
    let keys = root.path().join("volumes").join(&keys_volume);
    assert!(keys.join("ledger.key").is_file() && keys.join("tasks.key").is_file());
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let verifier_keys: BTreeSet<String> = servers
        .iter()
        .map(|(name, server)| {
            let url = format!("http://127.0.0.1:{}/v1/health", server.addr().port());
            let health: Value = http.get(&url).send().unwrap().json().unwrap();
            assert_eq!(health["status"], "ok", "{name}: {health}");
            health["receipts"]["verifier_key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(verifier_keys.len(), 1, "{verifier_keys:?}");
}
