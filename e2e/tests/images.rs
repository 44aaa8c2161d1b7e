//! The container images (README "Getting the images"):
//!
//! 1. Every image reference the chart (`helm template`, default values) and the operator
//!    (`caduceus-operator render -f` of each `examples/*.yaml`) emit is one `scripts/images.sh`
//!    builds (`scripts/images.sh --list`) or has a repository listed in
//!    `scripts/images/third-party.txt`: a tag the build does not produce (the backup image's
//!    `<version>-pg<major>` once was one) fails here.
//! 2. Every archive `scripts/images.sh` wrote (`.tmp/images/images.txt`, or
//!    `$CADUCEUS_IMAGES_DIR`): the manifest names the reference; the config runs as uid/gid
//!    65532 with the exec-form entrypoint `/usr/local/bin/<binary>` and the crate's version,
//!    licence and title as OCI labels; the unpacked layers hold no shell; the entrypoint is a
//!    static executable that prints `<binary> <version>` for `--version`. The backup images'
//!    `pg_dump`/`pg_restore` (found through the image's PATH) load only libraries from the image,
//!    through the image's own dynamic loader, and report the PostgreSQL major the tag names. As
//!    root, each program also runs chrooted into the unpacked image as uid 65532.
//!
//!    A reference `scripts/images.sh` reported in `not-built.txt` (a PostgreSQL client this
//!    machine's Debian index does not have) is printed with its reason; one neither built nor
//!    reported fails. Without any archive the check prints `images: SKIPPED (run
//!    scripts/images.sh)`; `scripts/test.sh` builds them first (its `images` step).
//!
//! The archives are unpacked with `tar` (GNU tar reads the gzip layers itself).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, ensure, Context, Result};
use caduceus_e2e::{
    cargo_metadata, helm_template, package, render_example, repo_root, run, tool, yaml_files,
};
use serde_json::Value;

const UID_GID: &str = "65532:65532";
/// Programs whose presence makes an image "have a shell".
const SHELLS: [&str; 8] = [
    "sh", "bash", "dash", "ash", "zsh", "ksh", "busybox", "toybox",
];

/// `scripts/images.sh --list`: the references the image build produces.
fn built_references() -> Result<Vec<String>> {
    let out = run(Command::new("bash")
        .arg(repo_root().join("scripts/images.sh"))
        .arg("--list"))?;
    let refs: Vec<String> = out.lines().map(str::to_string).collect();
    ensure!(!refs.is_empty(), "scripts/images.sh --list printed nothing");
    Ok(refs)
}

/// Repositories of `scripts/images/third-party.txt`.
fn third_party_repositories() -> Result<BTreeSet<String>> {
    let path = repo_root().join("scripts/images/third-party.txt");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The repository of a reference (without `:tag` or `@digest`).
fn repository(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match without_digest.rsplit_once(':') {
        // a colon after the last slash separates the tag (one before it is a registry port)
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    }
}

/// Every string under a key `image` (containers) or `imageName` (CloudNativePG), with where.
fn collect_images(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("image" | "imageName", Value::String(s)) => {
                        out.push((s.clone(), at.to_string()));
                    }
                    _ => collect_images(v, at, out),
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                collect_images(v, at, out);
            }
        }
        _ => {}
    }
}

fn emitted_images() -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for obj in helm_template(&[]).context("helm template (default values)")? {
        let at = format!(
            "helm template: {}/{}",
            obj["kind"].as_str().unwrap_or("?"),
            obj["metadata"]["name"].as_str().unwrap_or("?")
        );
        collect_images(&obj, &at, &mut found);
    }
    for file in yaml_files(&repo_root().join("examples"))? {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        for obj in render_example(&file).with_context(|| format!("render examples/{name}"))? {
            let at = format!(
                "render examples/{name}: {}/{}",
                obj["kind"].as_str().unwrap_or("?"),
                obj["metadata"]["name"].as_str().unwrap_or("?")
            );
            collect_images(&obj, &at, &mut found);
        }
    }
    Ok(found)
}

#[test]
fn every_emitted_image_is_built_or_third_party() {
    let built = built_references().expect("scripts/images.sh --list");
    let third_party = third_party_repositories().expect("third-party.txt");
    let emitted = emitted_images().expect("images the chart and the operator emit");
    assert!(!emitted.is_empty(), "no image reference found");

    let mut unknown = Vec::new();
    let mut seen = BTreeMap::<String, Vec<String>>::new();
    for (reference, at) in &emitted {
        let ours = built.contains(reference);
        let theirs = third_party.contains(repository(reference));
        if !ours && !theirs {
            unknown.push(format!("  {reference}  ({at})"));
        }
        seen.entry(reference.clone()).or_default().push(at.clone());
    }
    for (reference, places) in &seen {
        let kind = if built.contains(reference) {
            "built by scripts/images.sh"
        } else if third_party.contains(repository(reference)) {
            "third-party"
        } else {
            "UNKNOWN"
        };
        println!("images: {reference}: {kind}, {} use(s)", places.len());
    }
    assert!(
        unknown.is_empty(),
        "image references neither built by scripts/images.sh (--list: {built:?}) nor of a \
         repository in scripts/images/third-party.txt:\n{}",
        unknown.join("\n")
    );
    // The walk found the project's images at all: each repository the build produces is used.
    for reference in &built {
        let repo = repository(reference);
        assert!(
            emitted.iter().any(|(r, _)| repository(r) == repo),
            "no object the chart or the examples render uses {repo}"
        );
    }
}

#[test]
fn repository_splits_tags_digests_and_ports() {
    assert_eq!(repository("ghcr.io/a/b:1.0-pg16"), "ghcr.io/a/b");
    assert_eq!(repository("registry:5000/a/b:1"), "registry:5000/a/b");
    assert_eq!(repository("registry:5000/a/b"), "registry:5000/a/b");
    assert_eq!(repository("ghcr.io/a/b@sha256:00"), "ghcr.io/a/b");
    assert_eq!(repository("ghcr.io/a/b:1@sha256:00"), "ghcr.io/a/b");
}

// --- the archives --------------------------------------------------------------------------------

fn images_dir() -> PathBuf {
    match std::env::var_os("CADUCEUS_IMAGES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join(".tmp/images"),
    }
}

/// `<first field> <rest of line>` pairs of a file scripts/images.sh wrote.
fn read_pairs(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| anyhow!("{}: malformed line `{l}`", path.display()))
        })
        .collect()
}

/// `PT_INTERP` of an ELF64 little-endian executable: `None` for a static executable.
fn elf_interpreter(path: &Path) -> Result<Option<String>> {
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        data.len() > 64 && data[..4] == *b"\x7fELF",
        "{} is not an ELF file",
        path.display()
    );
    ensure!(
        data[4] == 2 && data[5] == 1,
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u64_at = |o: usize| -> Result<usize> {
        let bytes: [u8; 8] = data
            .get(o..o + 8)
            .ok_or_else(|| anyhow!("{}: truncated ELF header", path.display()))?
            .try_into()?;
        Ok(u64::from_le_bytes(bytes) as usize)
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = data
            .get(ph..ph + 4)
            .ok_or_else(|| anyhow!("{}: truncated program headers", path.display()))?;
        if u32::from_le_bytes(p_type.try_into()?) == 3 {
            let (offset, size) = (u64_at(ph + 8)?, u64_at(ph + 32)?);
            let raw = data
                .get(offset..offset + size)
                .ok_or_else(|| anyhow!("{}: PT_INTERP out of range", path.display()))?;
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            return Ok(Some(String::from_utf8_lossy(&raw[..end]).into_owned()));
        }
    }
    Ok(None)
}

/// An absolute path inside the unpacked image, symlinks resolved as they would be in the image.
fn resolve_in(root: &Path, path: &str) -> Result<PathBuf> {
    let mut current = PathBuf::from("/");
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .rev()
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let candidate = current.join(&part);
        let on_disk = root.join(candidate.strip_prefix("/")?);
        match fs::symlink_metadata(&on_disk) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                ensure!(links <= 40, "symlink loop resolving {path} in the image");
                let target = fs::read_link(&on_disk)?;
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    if let Component::Normal(s) = c {
                        pending.push(s.to_string_lossy().into_owned());
                    } else if c == Component::ParentDir {
                        pending.push("..".into());
                    }
                }
            }
            Ok(_) => current = candidate,
            Err(_) => bail!(
                "{path} does not exist in the image (no {})",
                candidate.display()
            ),
        }
    }
    Ok(root.join(current.strip_prefix("/")?))
}

fn multiarch() -> Result<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("x86_64-linux-gnu"),
        "aarch64" => Ok("aarch64-linux-gnu"),
        other => bail!("no Debian multiarch directory known for {other}"),
    }
}

fn oci_arch() -> Result<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("amd64"),
        "aarch64" => Ok("arm64"),
        other => bail!("no OCI architecture known for {other}"),
    }
}

fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Runs `program` (a path inside the image) chrooted into `root` as uid/gid 65532 with only the
/// image's PATH in its environment, as a container runtime would (root only).
fn run_chrooted(root: &Path, path_env: &str, program: &str, args: &[&str]) -> Result<String> {
    run(Command::new(tool("chroot")?)
        .arg(format!("--userspec={UID_GID}"))
        .arg(root)
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", path_env))
}

/// An unpacked image archive.
struct Unpacked {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: Value,
    tags: Vec<String>,
    layers: usize,
}

fn unpack(archive: &Path) -> Result<Unpacked> {
    let dir = tempfile::tempdir()?;
    let blobs = dir.path().join("archive");
    let root = dir.path().join("root");
    fs::create_dir_all(&blobs)?;
    fs::create_dir_all(&root)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&blobs))?;
    let manifest: Value =
        serde_json::from_slice(&fs::read(blobs.join("manifest.json"))?).context("manifest.json")?;
    let entries = manifest.as_array().context("manifest.json is not a list")?;
    ensure!(
        entries.len() == 1,
        "{}: {} images in one archive",
        archive.display(),
        entries.len()
    );
    let entry = &entries[0];
    let config_name = entry["Config"].as_str().context("manifest Config")?;
    let config: Value =
        serde_json::from_slice(&fs::read(blobs.join(config_name))?).context("image config")?;
    let tags = entry["RepoTags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let layers = entry["Layers"].as_array().context("manifest Layers")?;
    for layer in layers {
        let layer = blobs.join(layer.as_str().context("layer name")?);
        let listing = run(Command::new("tar").arg("-tf").arg(&layer))?;
        if let Some(w) = listing
            .lines()
            .find(|l| l.rsplit('/').next().unwrap_or("").starts_with(".wh."))
        {
            bail!(
                "{}: whiteout {w} (these images are one layer on an empty base)",
                archive.display()
            );
        }
        run(Command::new("tar")
            .arg("-xf")
            .arg(&layer)
            .arg("-C")
            .arg(&root))?;
    }
    Ok(Unpacked {
        layers: layers.len(),
        _dir: dir,
        root,
        config,
        tags,
    })
}

/// Every path under `root` whose name is a shell.
fn shells_in(root: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if SHELLS.contains(&name.as_str()) {
                found.push(format!("/{}", path.strip_prefix(root)?.display()));
            }
            if entry.file_type()?.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(found)
}

/// What an image of a binary must look like.
struct Expected {
    binary: &'static str,
    package: &'static str,
    cmd: Option<&'static str>,
}

fn expected(reference: &str) -> Result<Expected> {
    let name = repository(reference)
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(match name.as_str() {
        "caduceus-operator" => Expected {
            binary: "caduceus-operator",
            package: "caduceus-operator",
            cmd: Some("run"),
        },
        "caduceus-api" => Expected {
            binary: "caduceus-api",
            package: "caduceus-api",
            cmd: Some("serve"),
        },
        "caduceus-backup" => Expected {
            binary: "caduceus-backup",
            package: "caduceus-backup",
            cmd: None,
        },
        _ => bail!("{reference}: no expectations for image {name}"),
    })
}

/// A dynamically linked program of the image, run through the image's own loader with only the
/// image's library directories: each library it loads must come from the image.
fn check_dynamic_program(root: &Path, program: &str, interpreter: &str) -> Result<String> {
    let loader = resolve_in(root, interpreter)
        .with_context(|| format!("{program}: its interpreter {interpreter}"))?;
    let arch = multiarch()?;
    let library_path = [
        format!("lib/{arch}"),
        format!("usr/lib/{arch}"),
        "lib".into(),
        "usr/lib".into(),
    ]
    .iter()
    .map(|d| root.join(d).display().to_string())
    .collect::<Vec<_>>()
    .join(":");
    let path = root.join(program.trim_start_matches('/'));
    let listing = run(Command::new(&loader)
        .args(["--inhibit-cache", "--library-path", &library_path, "--list"])
        .arg(&path))?;
    for line in listing.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("linux-vdso") {
            continue;
        }
        ensure!(!line.contains("not found"), "{program}: {line}");
        let resolved = line.split(" => ").nth(1).unwrap_or(line);
        let resolved = resolved.split(" (0x").next().unwrap_or(resolved);
        ensure!(
            Path::new(resolved).starts_with(root),
            "{program} loads {resolved}, which is not in the image"
        );
    }
    let out = run(Command::new(&loader)
        .args(["--inhibit-cache", "--library-path", &library_path])
        .arg(&path)
        .arg("--version"))?;
    Ok(out.trim().to_string())
}

fn check_archive(reference: &str, archive: &Path, metadata: &Value) -> Result<()> {
    let want = expected(reference)?;
    let pkg = package(metadata, want.package)?;
    let version = pkg["version"].as_str().context("crate version")?;
    let image = unpack(archive)?;
    let root = image.root.as_path();
    let config = &image.config;
    let cfg = &config["config"];

    ensure!(
        image.tags == [reference.to_string()],
        "archive is tagged {:?}",
        image.tags
    );
    ensure!(config["os"] == "linux", "os {}", config["os"]);
    ensure!(
        config["architecture"] == oci_arch()?,
        "architecture {}",
        config["architecture"]
    );
    let user = cfg["User"].as_str().unwrap_or_default();
    ensure!(
        user == UID_GID,
        "User is `{user}`, expected {UID_GID} (non-root)"
    );
    let entrypoint_path = format!("/usr/local/bin/{}", want.binary);
    ensure!(
        cfg["Entrypoint"] == serde_json::json!([entrypoint_path]),
        "Entrypoint is {}, expected exec form [\"{entrypoint_path}\"]",
        cfg["Entrypoint"]
    );
    let cmd = match want.cmd {
        Some(c) => serde_json::json!([c]),
        None => Value::Null,
    };
    ensure!(cfg["Cmd"] == cmd, "Cmd is {}, expected {cmd}", cfg["Cmd"]);
    let labels = &cfg["Labels"];
    for (key, value) in [
        ("org.opencontainers.image.version", version),
        ("org.opencontainers.image.title", want.binary),
        (
            "org.opencontainers.image.licenses",
            pkg["license"].as_str().context("licence")?,
        ),
    ] {
        ensure!(
            labels[key] == value,
            "label {key} is {}, expected {value}",
            labels[key]
        );
    }
    ensure!(image.layers >= 1, "no layer");
    let path_env = cfg["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|e| e.strip_prefix("PATH="))
        .context("no PATH in the image's Env")?;

    let shells = shells_in(root)?;
    ensure!(shells.is_empty(), "the image holds a shell: {shells:?}");

    let entrypoint = root.join(entrypoint_path.trim_start_matches('/'));
    let meta = fs::metadata(&entrypoint)
        .with_context(|| format!("entrypoint {entrypoint_path} is not in the image"))?;
    ensure!(
        meta.permissions().mode() & 0o111 != 0,
        "{entrypoint_path} is not executable"
    );
    if let Some(interp) = elf_interpreter(&entrypoint)? {
        bail!("{entrypoint_path} is dynamically linked (interpreter {interp}); a static executable is expected");
    }
    let out = run(Command::new(&entrypoint).arg("--version"))?;
    ensure!(
        out.trim() == format!("{} {version}", want.binary),
        "{entrypoint_path} --version printed `{}`",
        out.trim()
    );
    let as_root = running_as_root();
    if as_root {
        let out = run_chrooted(root, path_env, &entrypoint_path, &["--version"])?;
        ensure!(
            out.trim() == format!("{} {version}", want.binary),
            "chrooted {entrypoint_path} --version printed `{}`",
            out.trim()
        );
    }
    println!("images: {reference}: `{}`, static, User {user}", out.trim());

    if want.binary == "caduceus-backup" {
        let tag = reference.rsplit(':').next().unwrap_or_default();
        let major = tag
            .rsplit_once("-pg")
            .map(|(_, m)| m)
            .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| anyhow!("backup tag {tag} does not end in -pg<major>"))?;
        for tool in ["pg_dump", "pg_restore"] {
            let program = path_env
                .split(':')
                .map(|dir| format!("{}/{tool}", dir.trim_end_matches('/')))
                .find(|p| resolve_in(root, p).is_ok())
                .ok_or_else(|| {
                    anyhow!("{tool} is in no directory of the image's PATH {path_env}")
                })?;
            let real = resolve_in(root, &program)?;
            let interp = elf_interpreter(&real)?
                .ok_or_else(|| anyhow!("{program}: expected Debian's dynamically linked build"))?;
            let real_in_image = format!("/{}", real.strip_prefix(root)?.display());
            let out = check_dynamic_program(root, &real_in_image, &interp)?;
            let prefix = format!("{tool} (PostgreSQL) {major}.");
            ensure!(
                out.starts_with(&prefix),
                "{program} reports `{out}`, but the tag says PostgreSQL {major}"
            );
            if as_root {
                let chrooted = run_chrooted(root, path_env, &program, &["--version"])?;
                ensure!(
                    chrooted.trim() == out,
                    "chrooted {program} --version printed `{}`",
                    chrooted.trim()
                );
            }
            println!("images: {reference}: {program} -> `{out}`, every library from the image");
        }
    }
    if !as_root {
        println!(
            "images: {reference}: not root, so the chroot run as uid 65532 was left out (the \
             programs ran from the unpacked image directly)"
        );
    }
    Ok(())
}

#[test]
fn built_archives_are_non_root_shell_free_and_run() {
    let dir = images_dir();
    let index = dir.join("images.txt");
    if !index.is_file() {
        println!(
            "images: SKIPPED (run scripts/images.sh): no {} yet",
            index.display()
        );
        return;
    }
    let built = read_pairs(&index).expect("images.txt");
    let not_built_file = dir.join("not-built.txt");
    let not_built = if not_built_file.is_file() {
        read_pairs(&not_built_file).expect("not-built.txt")
    } else {
        Vec::new()
    };
    let metadata = cargo_metadata().expect("cargo metadata");
    let listed = built_references().expect("scripts/images.sh --list");
    let mut failures = Vec::new();
    let mut checked = 0;
    for reference in listed.iter().cloned() {
        if let Some((_, archive)) = built.iter().find(|(r, _)| *r == reference) {
            match check_archive(&reference, Path::new(archive), &metadata) {
                Ok(()) => checked += 1,
                Err(e) => failures.push(format!("{reference} ({archive}): {e:#}")),
            }
        } else if let Some((_, reason)) = not_built.iter().find(|(r, _)| *r == reference) {
            println!("images: NOT BUILT here: {reference}: {reason}");
        } else {
            failures.push(format!(
                "{reference}: scripts/images.sh neither built it ({}) nor reported it in {}",
                index.display(),
                not_built_file.display()
            ));
        }
    }
    for (reference, _) in &built {
        if !listed.contains(reference) {
            failures.push(format!(
                "{reference} is in {} but not in scripts/images.sh --list",
                index.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "image archives:\n  {}",
        failures.join("\n  ")
    );
    assert!(checked > 0, "no archive checked");
    println!("images: {checked} archive(s) checked");
}

#[test]
fn elf_interpreter_tells_static_from_dynamic() {
    // This test binary is linked like any host program: it names an interpreter.
    let me = std::env::current_exe().expect("current exe");
    let interp = elf_interpreter(&me).expect("parse own ELF header");
    assert!(
        interp.as_deref().is_some_and(|i| i.contains("ld-linux")),
        "{interp:?}"
    );
}

#[test]
fn resolve_in_follows_links_inside_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("lib/x")).expect("mkdir");
    fs::create_dir_all(root.join("lib64")).expect("mkdir");
    fs::write(root.join("lib/x/ld.so"), b"").expect("write");
    std::os::unix::fs::symlink("/lib/x/ld.so", root.join("lib64/ld.so")).expect("symlink");
    std::os::unix::fs::symlink("../lib/x/ld.so", root.join("lib64/rel.so")).expect("symlink");
    assert_eq!(
        resolve_in(root, "/lib64/ld.so").expect("absolute link"),
        root.join("lib/x/ld.so")
    );
    assert_eq!(
        resolve_in(root, "/lib64/rel.so").expect("relative link"),
        root.join("lib/x/ld.so")
    );
    assert!(resolve_in(root, "/bin/sh").is_err());
}

#[test]
fn shells_in_finds_shells_anywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("usr/local/bin")).expect("mkdir");
    fs::write(root.join("usr/local/bin/caduceus-api"), b"").expect("write");
    assert!(shells_in(root).expect("walk").is_empty());
    fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
    std::os::unix::fs::symlink("busybox", root.join("usr/bin/sh")).expect("symlink");
    assert_eq!(
        shells_in(root).expect("walk"),
        vec!["/usr/bin/sh".to_string()]
    );
}
