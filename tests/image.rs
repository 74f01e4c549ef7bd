//! The operator's container image, built without a container engine by deploy/image/build.sh
//! (what `make image` runs) and pushed to the local cluster's open registry. Everything is read
//! back through the registry's API with oci-client (not with the crane that pushed it): the
//! manifest, the config (platform, user, entrypoint, cmd, labels), the one layer (exactly the
//! binary, the CA bundle and /etc/passwd + /etc/group, owned by 0:0, no shell), and the binary
//! taken from the layer must be static, without debug info, and run. The Containerfile's final
//! stage must set the same config, so the two ways of building the image cannot drift apart;
//! building twice must give the same digest.
//!
//! The script does a real `cargo build --release` for x86_64-unknown-linux-musl in
//! target/image (its own target dir, so it does not wait for this `cargo test`'s lock): about
//! 6 minutes on 2 cores with a cold cache, then ~4 s for all five tests. Needs the registries
//! of `make cluster-up` (panics naming it otherwise, never skips).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use oci_client::Reference;
use serde_json::Value;
use support::registry::{self, OCI_CONFIG, OCI_MANIFEST, REGISTRY_HINT, Registry};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One run of deploy/image/build.sh.
struct Built {
    registry: Registry,
    repository: String,
    tag: String,
    /// The script's stdout: `<registry>/<repository>@sha256:...`.
    pinned: String,
    digest: String,
}

/// Runs the build script, pushing to `<open registry>/<repository>:<tag>`; panics with the
/// script's output when it fails.
fn run_build_script(registry: &Registry, repository: &str, tag: &str) -> Built {
    let image = registry.image(repository, tag);
    let script = repo_root().join("deploy/image/build.sh");
    let start = Instant::now();
    let out = Command::new(&script)
        .env("IMAGE", &image)
        .env("REWIND_IMAGE_INSECURE", "1")
        .env_remove("REWIND_IMAGE_CA_BUNDLE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} for {image} failed ({}); its output:\n{stderr}\n(If the registry could not be \
         reached: {REGISTRY_HINT})",
        script.display(),
        out.status
    );
    // Shown by the harness when a test fails, and with --nocapture.
    eprintln!(
        "build.sh for {image} took {:.1}s:\n{stderr}",
        start.elapsed().as_secs_f64()
    );
    let pinned = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let expected_prefix = format!("{}/{repository}@sha256:", registry.address);
    assert!(
        pinned.starts_with(&expected_prefix) && !pinned.contains('\n'),
        "build.sh must print one line <repository>@sha256:..., printed {pinned:?}"
    );
    let digest = pinned.rsplit('@').next().unwrap().to_string();
    Built {
        registry: registry.clone(),
        repository: repository.to_string(),
        tag: tag.to_string(),
        pinned,
        digest,
    }
}

/// The image all tests here look at, built once per test binary.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let registry = registry::open();
        let repository = registry::unique_repository("image");
        run_build_script(&registry, &repository, VERSION)
    })
}

/// What the registry serves for the built image: manifest, config and the layer (gunzipped).
struct Pulled {
    manifest: Value,
    config: Value,
    layer_tar: Vec<u8>,
    layer_gzip_size: u64,
}

async fn pull(built: &Built) -> Pulled {
    let reg = &built.registry;
    let (manifest_bytes, digest) = reg
        .pull_manifest(&built.repository, &built.tag)
        .await
        .unwrap_or_else(|| panic!("{}:{} is not in the registry", built.repository, built.tag));
    assert_eq!(
        digest, built.digest,
        "the tag points at another digest than build.sh printed"
    );
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let client = reg.client();
    client.store_auth_if_needed(&reg.address, &reg.auth()).await;
    let reference: Reference = built.pinned.parse().unwrap();
    // pull_blob checks each blob against its digest.
    let blob = |digest: String| {
        let (client, reference) = (&client, &reference);
        async move {
            let mut out = Vec::new();
            client
                .pull_blob(reference, digest.as_str(), &mut out)
                .await
                .unwrap_or_else(|e| panic!("GET blob {digest} of {}: {e}", built.pinned));
            out
        }
    };
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let config: Value = serde_json::from_slice(&blob(config_digest).await).unwrap();
    let layers = manifest["layers"].as_array().expect("manifest.layers");
    assert_eq!(layers.len(), 1, "one layer expected: {manifest}");
    let layer_gzip = blob(layers[0]["digest"].as_str().unwrap().to_string()).await;
    Pulled {
        layer_tar: gunzip(&layer_gzip),
        layer_gzip_size: layer_gzip.len() as u64,
        manifest,
        config,
    }
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let dir = scratch_dir("gunzip");
    let path = dir.join("layer.tar.gz");
    std::fs::write(&path, data).unwrap();
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&path)
        .output()
        .expect("gzip (to unpack the layer) must be on PATH");
    assert!(out.status.success(), "gzip -dc failed: {out:?}");
    std::fs::remove_dir_all(&dir).ok();
    out.stdout
}

fn scratch_dir(what: &str) -> PathBuf {
    let dir = repo_root()
        .join("target/tmp")
        .join(support::unique_name(&format!("image-{what}")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One entry of a tar archive (ustar/GNU headers; the layer needs no long names).
#[derive(Debug)]
struct TarEntry {
    name: String,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    /// b'0' file, b'5' directory, b'2' symlink, ...
    kind: u8,
    data: Vec<u8>,
}

fn octal(field: &[u8]) -> u64 {
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    u64::from_str_radix(s.trim(), 8).unwrap_or_else(|_| panic!("bad octal field {field:?}"))
}

fn tar_entries(tar: &[u8]) -> Vec<TarEntry> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let kind = h[156];
        assert!(
            kind != b'L' && kind != b'K' && kind != b'x' && kind != b'g',
            "unexpected long-name or pax header in the layer at byte {at}"
        );
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let size = octal(&h[124..136]) as usize;
        let data_at = at + 512;
        entries.push(TarEntry {
            name: String::from_utf8(h[..name_end].to_vec()).unwrap(),
            mode: octal(&h[100..108]) as u32,
            uid: octal(&h[108..116]),
            gid: octal(&h[116..124]),
            mtime: octal(&h[136..148]),
            kind,
            data: tar[data_at..data_at + size].to_vec(),
        });
        at = data_at + size.div_ceil(512) * 512;
    }
    entries
}

#[tokio::test]
async fn the_config_runs_rewind_as_nonroot_on_linux_amd64() {
    let built = built();
    let pulled = pull(built).await;
    let (manifest, config) = (&pulled.manifest, &pulled.config);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST, "{manifest}");
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG, "{manifest}");
    assert_eq!(manifest["layers"][0]["mediaType"], LAYER_GZIP, "{manifest}");
    assert_eq!(config["os"], "linux", "{config}");
    assert_eq!(config["architecture"], "amd64", "{config}");
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/rewind"]), "{config}");
    assert_eq!(c["Cmd"], serde_json::json!(["run"]), "{config}");
    assert_eq!(c["WorkingDir"], "/", "{config}");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(labels["org.opencontainers.image.title"], "rewind");
    assert_eq!(
        labels["org.opencontainers.image.description"],
        env!("CARGO_PKG_DESCRIPTION")
    );
    assert!(
        labels.get("org.opencontainers.image.source").is_some(),
        "{config}"
    );
    // The config's one diff_id is the uncompressed layer's digest.
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([format!("sha256:{}", support::sha256_hex(&pulled.layer_tar))]),
        "{config}"
    );
    eprintln!(
        "image {}: gzipped layer {} bytes, unpacked {} bytes",
        built.pinned,
        pulled.layer_gzip_size,
        pulled.layer_tar.len()
    );
}

#[tokio::test]
async fn the_layer_holds_only_the_binary_the_ca_bundle_and_the_user() {
    let pulled = pull(built()).await;
    let entries = tar_entries(&pulled.layer_tar);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc/",
            "etc/group",
            "etc/passwd",
            "etc/ssl/",
            "etc/ssl/certs/",
            "etc/ssl/certs/ca-certificates.crt",
            "rewind",
        ],
        "the layer must hold exactly these (no shell, nothing else)"
    );
    assert!(!names.iter().any(|n| n.starts_with("bin/")), "no /bin/sh");
    for e in &entries {
        assert_eq!(
            (e.uid, e.gid, e.mtime),
            (0, 0, 0),
            "{}: owner 0:0, mtime 0",
            e.name
        );
        let (kind, mode) = match e.name.as_str() {
            n if n.ends_with('/') => (b'5', 0o755),
            "rewind" => (b'0', 0o755),
            _ => (b'0', 0o644),
        };
        assert_eq!((e.kind, e.mode), (kind, mode), "{}: type and mode", e.name);
    }
    let file = |name: &str| &entries.iter().find(|e| e.name == name).unwrap().data;
    // The Mozilla roots of Debian's ca-certificates, one per file there, and not what this
    // machine added locally to /etc/ssl/certs/ca-certificates.crt.
    let ca = String::from_utf8_lossy(file("etc/ssl/certs/ca-certificates.crt"));
    let mozilla = std::fs::read_dir("/usr/share/ca-certificates/mozilla")
        .expect("Debian's ca-certificates (the script takes the image's roots from there)")
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("crt".as_ref()))
        .count();
    assert!(mozilla > 100, "only {mozilla} Mozilla roots?");
    assert_eq!(
        ca.matches("-----BEGIN CERTIFICATE-----").count(),
        mozilla,
        "the image's CA bundle must hold exactly the Mozilla roots"
    );
    let passwd = String::from_utf8_lossy(file("etc/passwd"));
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    assert!(
        String::from_utf8_lossy(file("etc/group"))
            .lines()
            .any(|l| l == "nonroot:x:65532:")
    );
}

/// What the image's binary must be: x86-64 ELF, no PT_INTERP in its program headers (a
/// dynamically linked program names its loader there), and its section names.
struct Elf<'a>(&'a [u8]);

impl Elf<'_> {
    fn u16_at(&self, at: usize) -> usize {
        u16::from_le_bytes(self.0[at..at + 2].try_into().unwrap()) as usize
    }
    fn u32_at(&self, at: usize) -> usize {
        u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap()) as usize
    }
    fn u64_at(&self, at: usize) -> usize {
        u64::from_le_bytes(self.0[at..at + 8].try_into().unwrap()) as usize
    }

    fn check_header(&self) {
        assert_eq!(&self.0[..4], b"\x7fELF", "not an ELF file");
        assert_eq!(self.0[4], 2, "not a 64-bit ELF");
        assert_eq!(self.0[5], 1, "not little-endian");
        assert_eq!(self.u16_at(18), 62, "e_machine is not x86-64");
    }

    fn has_interpreter(&self) -> bool {
        let (phoff, phentsize, phnum) = (self.u64_at(32), self.u16_at(54), self.u16_at(56));
        (0..phnum).any(|i| self.u32_at(phoff + i * phentsize) == 3)
    }

    fn section_names(&self) -> Vec<String> {
        let (shoff, shentsize, shnum) = (self.u64_at(40), self.u16_at(58), self.u16_at(60));
        let strtab = self.u64_at(shoff + self.u16_at(62) * shentsize + 24);
        (0..shnum)
            .map(|i| {
                let name = strtab + self.u32_at(shoff + i * shentsize);
                let len = self.0[name..].iter().position(|&b| b == 0).unwrap();
                String::from_utf8_lossy(&self.0[name..name + len]).into_owned()
            })
            .collect()
    }
}

#[tokio::test]
async fn the_binary_in_the_layer_is_static_and_runs() {
    let pulled = pull(built()).await;
    let entries = tar_entries(&pulled.layer_tar);
    let binary = &entries.iter().find(|e| e.name == "rewind").unwrap().data;
    let elf = Elf(binary);
    elf.check_header();
    assert!(
        !elf.has_interpreter(),
        "/rewind is dynamically linked; the image has no libc or loader"
    );
    // The release profile keeps line tables; the image does not need them (rootfs.sh strips
    // them: ~100 MB). Its symbols stay, for backtraces. (.debug_gdb_scripts is loaded data, a
    // few bytes naming gdb's pretty-printers, not debug info: objcopy keeps it.)
    let sections = elf.section_names();
    let is_debug_info = |s: &String| s.starts_with(".debug_") && s != ".debug_gdb_scripts";
    assert!(
        sections.iter().any(|s| s == ".symtab") && !sections.iter().any(is_debug_info),
        "/rewind should have its symbols but no debug info; sections: {sections:?}"
    );
    let dir = scratch_dir("binary");
    let path = dir.join("rewind");
    std::fs::write(&path, binary).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    // An empty environment and working directory, as in the image. A child that another test
    // thread forked while the file was open for writing can make exec fail with ETXTBSY for a
    // moment: try again then.
    let mut tries = 0;
    let out = loop {
        match Command::new(&path)
            .arg("--version")
            .env_clear()
            .current_dir(&dir)
            .output()
        {
            Err(e) if e.raw_os_error() == Some(26) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display())),
        }
    };
    assert!(out.status.success(), "rewind --version: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("rewind {VERSION}")
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The Containerfile's final stage: its ARG defaults substituted into ENV, WORKDIR, USER, LABEL,
/// ENTRYPOINT and CMD, as an image config's `config` object would hold them.
fn containerfile_final_stage(path: &Path) -> (BTreeMap<String, String>, Value) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let final_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    let (mut args, mut env, mut labels) = (BTreeMap::new(), Vec::new(), BTreeMap::new());
    let mut config = serde_json::Map::new();
    let unquote = |s: &str, args: &BTreeMap<String, String>| {
        let mut s = s.trim().trim_matches('"').to_string();
        for (k, v) in args {
            s = s.replace(&format!("${{{k}}}"), v);
        }
        assert!(!s.contains('$'), "unknown variable in {s}");
        s
    };
    for line in &lines[final_from + 1..] {
        let (instruction, rest) = line.split_once(' ').unwrap();
        let kv = || rest.split_once('=').unwrap_or((rest, ""));
        match instruction {
            "ARG" => {
                let (k, v) = kv();
                args.insert(k.to_string(), unquote(v, &args));
            }
            "ENV" => {
                let (k, v) = kv();
                env.push(format!("{k}={}", unquote(v, &args)));
            }
            "LABEL" => {
                let (k, v) = kv();
                labels.insert(k.to_string(), unquote(v, &args));
            }
            "WORKDIR" => _ = config.insert("WorkingDir".into(), rest.into()),
            "USER" => _ = config.insert("User".into(), rest.into()),
            "ENTRYPOINT" | "CMD" => {
                let exec: Value = serde_json::from_str(rest)
                    .unwrap_or_else(|e| panic!("{instruction} must be in exec (JSON) form: {e}"));
                let key = if instruction == "CMD" {
                    "Cmd"
                } else {
                    "Entrypoint"
                };
                config.insert(key.into(), exec);
            }
            "COPY" => {}
            other => panic!("the test does not know what {other} does to the config; teach it"),
        }
    }
    config.insert("Env".into(), env.into());
    config.insert("Labels".into(), serde_json::to_value(labels).unwrap());
    (args, Value::Object(config))
}

#[tokio::test]
async fn the_containerfile_sets_the_same_config_as_the_script() {
    let containerfile = repo_root().join("Containerfile");
    let (args, from_containerfile) = containerfile_final_stage(&containerfile);
    assert_eq!(
        args.get("VERSION").map(String::as_str),
        Some(VERSION),
        "the Containerfile's ARG VERSION default must be Cargo.toml's version"
    );
    let text = std::fs::read_to_string(&containerfile).unwrap();
    assert!(
        text.contains("deploy/image/rootfs.sh")
            && text.contains("FROM --platform=linux/amd64 scratch"),
        "the Containerfile lays out the root filesystem with deploy/image/rootfs.sh on scratch"
    );
    let pulled = pull(built()).await;
    let pushed = &pulled.config["config"];
    for key in ["User", "Entrypoint", "Cmd", "WorkingDir", "Env", "Labels"] {
        assert_eq!(
            pushed[key], from_containerfile[key],
            "{key} differs between the image of deploy/image/build.sh (left) and the \
             Containerfile (right)"
        );
    }
}

#[tokio::test]
async fn building_again_gives_the_same_digest() {
    let first = built();
    let again = run_build_script(&first.registry, &first.repository, "again");
    assert_eq!(
        again.digest, first.digest,
        "the same binary must give the same image (fixed mtimes, owners and order in the layer; \
         no timestamps in the config)"
    );
}
