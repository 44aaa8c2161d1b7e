//! The Dockerfiles in `docker/` against the workspace (`cargo metadata`): each builds a real
//! package and binary, copies it to the path the contracts name, runs as uid 65532 with an
//! exec-form entrypoint (no shell needed), and labels the image with the crate's version,
//! licence and source. No Docker engine runs here, so this parses the files.

use std::fs;

use caduceus_e2e::{binaries, cargo_metadata, package, repo_root, yaml_file};
use serde_json::Value;

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn parse(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // comment inside a continued instruction
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push(Instruction {
            keyword: keyword.to_uppercase(),
            args: args.trim().to_string(),
        });
        current.clear();
    }
    out
}

/// Instructions split into stages (everything before the first FROM is stage 0's preamble).
fn stages(instructions: &[Instruction]) -> Vec<Vec<&Instruction>> {
    let mut out: Vec<Vec<&Instruction>> = Vec::new();
    for ins in instructions {
        if ins.keyword == "FROM" {
            out.push(vec![ins]);
        } else if let Some(stage) = out.last_mut() {
            stage.push(ins);
        }
    }
    out
}

/// `KEY="value"` pairs of LABEL instructions in a stage.
fn labels(stage: &[&Instruction]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for ins in stage.iter().filter(|i| i.keyword == "LABEL") {
        let mut rest = ins.args.as_str();
        while let Some((key, after)) = rest.split_once('=') {
            let key = key.trim().to_string();
            let after = after.trim_start();
            let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"').expect("closing quote in LABEL");
                (&quoted[..end], &quoted[end + 1..])
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            out.push((key, value.to_string()));
            rest = tail;
        }
    }
    out
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("label {key} missing"))
}

fn arg_default(instructions: &[Instruction], name: &str) -> Option<String> {
    instructions
        .iter()
        .filter(|i| i.keyword == "ARG")
        .find_map(|i| {
            i.args
                .strip_prefix(&format!("{name}="))
                .map(|v| v.trim_matches('"').to_string())
        })
}

/// Major.minor as a comparable pair.
fn major_minor(v: &str) -> (u32, u32) {
    let mut parts = v
        .split('.')
        .map(|p| p.parse::<u32>().expect("numeric version"));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

struct Image {
    file: &'static str,
    package: &'static str,
    binary: &'static str,
    distroless: bool,
}

const IMAGES: [Image; 3] = [
    Image {
        file: "docker/operator.Dockerfile",
        package: "caduceus-operator",
        binary: "caduceus-operator",
        distroless: true,
    },
    Image {
        file: "docker/api.Dockerfile",
        package: "caduceus-api",
        binary: "caduceus-api",
        distroless: true,
    },
    Image {
        file: "docker/backup.Dockerfile",
        package: "caduceus-backup",
        binary: "caduceus-backup",
        distroless: false,
    },
];

fn check_image(image: &Image, metadata: &Value) {
    let file = image.file;
    let text = fs::read_to_string(repo_root().join(file)).expect(file);
    let instructions = parse(&text);
    let pkg = package(metadata, image.package).expect("package in workspace");
    let bins = binaries(pkg);
    assert!(
        bins.contains(&image.binary.to_string()),
        "{file}: package {} builds {bins:?}, not {}",
        image.package,
        image.binary
    );

    let rust = arg_default(&instructions, "RUST_VERSION").expect("ARG RUST_VERSION=");
    let msrv = pkg["rust_version"]
        .as_str()
        .expect("rust-version in Cargo.toml");
    assert!(
        major_minor(&rust) >= major_minor(msrv),
        "{file}: RUST_VERSION {rust} is older than the workspace rust-version {msrv}"
    );

    let stages = stages(&instructions);
    assert!(stages.len() >= 2, "{file}: multi-stage build expected");
    for stage in &stages {
        let from = &stage[0].args;
        assert!(!from.contains(":latest"), "{file}: unpinned base `{from}`");
    }
    for ins in &instructions {
        assert!(
            !(ins.keyword == "ADD" && ins.args.contains("://")),
            "{file}: ADD from a URL"
        );
    }

    // Build stage: builds exactly this package and binary, release, with the committed lock file.
    let build = &stages[0];
    assert!(
        build[0].args.ends_with(" AS build"),
        "{file}: first stage must be `AS build`"
    );
    let build_cmd = format!(
        "cargo build --release --locked -p {} --bin {}",
        image.package, image.binary
    );
    let runs: Vec<&str> = build
        .iter()
        .filter(|i| i.keyword == "RUN")
        .map(|i| i.args.as_str())
        .collect();
    assert!(
        runs.iter().any(|r| r.contains(&format!("{build_cmd} "))
            && r.contains(&format!("target/release/{}", image.binary))),
        "{file}: no RUN with `{build_cmd}` copying target/release/{}",
        image.binary
    );

    // Final stage.
    let last = stages.last().expect("final stage");
    let base = &last[0].args;
    if image.distroless {
        assert!(
            base.starts_with("gcr.io/distroless/") || base == "scratch",
            "{file}: final stage must be distroless or scratch, is `{base}`"
        );
        assert!(
            base.ends_with(":nonroot"),
            "{file}: distroless nonroot variant"
        );
        assert!(
            !last.iter().any(|i| i.keyword == "RUN"),
            "{file}: RUN in a distroless final stage"
        );
    } else {
        assert!(
            base.starts_with("docker.io/library/debian:") && base.ends_with("-slim"),
            "{file}: the backup image's final stage is debian slim, is `{base}`"
        );
    }
    let target = format!("/usr/local/bin/{}", image.binary);
    assert!(
        last.iter().any(|i| i.keyword == "COPY"
            && i.args == format!("--from=build /out/{} {target}", image.binary)),
        "{file}: final stage must COPY --from=build /out/{} {target}",
        image.binary
    );
    let entrypoint = last
        .iter()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("ENTRYPOINT");
    let exec: Vec<String> =
        serde_json::from_str(&entrypoint.args).expect("ENTRYPOINT in exec (JSON) form: no shell");
    assert_eq!(exec, vec![target.clone()], "{file}: ENTRYPOINT");
    let user = last.iter().rfind(|i| i.keyword == "USER").expect("USER");
    assert_eq!(user.args, "65532:65532", "{file}: non-root uid");
    if let Some(cmd) = last.iter().find(|i| i.keyword == "CMD") {
        let _: Vec<String> = serde_json::from_str(&cmd.args).expect("CMD in exec (JSON) form");
    }

    let labels = labels(last);
    assert_eq!(
        label(&labels, "org.opencontainers.image.version"),
        pkg["version"].as_str().expect("version"),
        "{file}: image version = crate version"
    );
    assert_eq!(
        label(&labels, "org.opencontainers.image.licenses"),
        pkg["license"].as_str().expect("license"),
        "{file}: licence"
    );
    assert_eq!(
        label(&labels, "org.opencontainers.image.source"),
        repository(pkg).as_str(),
        "{file}: source"
    );
    assert_eq!(
        label(&labels, "org.opencontainers.image.title"),
        image.binary
    );

    let ignore = fs::read_to_string(repo_root().join(format!("{file}.dockerignore")))
        .expect("a .dockerignore beside the Dockerfile");
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "{file}.dockerignore must exclude target/"
    );
}

/// The package's repository, else `[workspace.package] repository` of the root Cargo.toml.
fn repository(pkg: &Value) -> String {
    if let Some(r) = pkg["repository"].as_str() {
        return r.to_string();
    }
    let root = fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    let mut in_section = false;
    for line in root.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
        } else if in_section {
            if let Some(value) = line.strip_prefix("repository = \"") {
                return value.trim_end_matches('"').to_string();
            }
        }
    }
    panic!("no repository in the package or [workspace.package]")
}

#[test]
fn dockerfiles_match_cargo_metadata() {
    let metadata = cargo_metadata().expect("cargo metadata");
    for image in &IMAGES {
        check_image(image, &metadata);
    }
}

#[test]
fn image_paths_match_the_contracts() {
    let contracts = fs::read_to_string(repo_root().join("docs/contracts.md")).expect("contracts");
    for binary in ["caduceus-api", "caduceus-backup"] {
        assert!(
            contracts.contains(&format!("image path `/usr/local/bin/{binary}`")),
            "docs/contracts.md names another image path for {binary}"
        );
    }
}

#[test]
fn backup_image_carries_pg_dump_of_the_default_database_major() {
    let crd = fs::read_to_string(repo_root().join("operator/src/crd/mod.rs")).expect("crd/mod.rs");
    let default = crd
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("pub const DEFAULT_POSTGRES_VERSION: &str = \"")
                .and_then(|r| r.strip_suffix("\";"))
        })
        .expect("DEFAULT_POSTGRES_VERSION in operator/src/crd/mod.rs");
    let major = default.split('.').next().expect("major");
    let text = fs::read_to_string(repo_root().join("docker/backup.Dockerfile")).expect("backup");
    let instructions = parse(&text);
    assert_eq!(
        arg_default(&instructions, "PG_MAJOR").as_deref(),
        Some(major),
        "docker/backup.Dockerfile PG_MAJOR must equal the major of DEFAULT_POSTGRES_VERSION ({default})"
    );
    assert!(text.contains("\"postgresql-client-${PG_MAJOR}\""));
}

#[test]
fn chart_and_operator_defaults_point_at_these_images() {
    let values = yaml_file(&repo_root().join("charts/caduceus-operator/values.yaml"))
        .expect("values.yaml")
        .remove(0);
    let repo = values["image"]["repository"].as_str().expect("repository");
    assert!(
        repo.ends_with("/caduceus-operator"),
        "chart image {repo} is not the operator image"
    );
    let crd = fs::read_to_string(repo_root().join("operator/src/crd/mod.rs")).expect("crd/mod.rs");
    assert!(
        crd.contains(
            "pub const DEFAULT_API_IMAGE: &str = \"ghcr.io/caduceus-health/caduceus-api\";"
        ),
        "the operator's default API image is not ghcr.io/caduceus-health/caduceus-api"
    );
}

#[test]
fn parser_joins_continuations_and_reads_labels() {
    let text =
        "# c\nFROM a AS build\nRUN x \\\n  # inner\n  y\nFROM b\nLABEL k1=\"v 1\" \\\n k2=v2\n";
    let ins = parse(text);
    assert_eq!(ins.len(), 4);
    assert_eq!(ins[1].args, "x  y");
    let st = stages(&ins);
    assert_eq!(st.len(), 2);
    let l = labels(&st[1]);
    assert_eq!(
        l,
        vec![
            ("k1".to_string(), "v 1".to_string()),
            ("k2".to_string(), "v2".to_string())
        ]
    );
}
