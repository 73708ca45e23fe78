//! `strata image …`: disk images.
//!
//! Two kinds, as in Azure (marketplace vs. custom images):
//! - **Platform images** (`tiny`): not resources. Every host builds them itself from Debian's
//!   packages and signs them with its own secure-boot key, so their bytes differ per host.
//!   `build` makes one offline on this machine (into the image directory the host agent
//!   reads); `list --local` shows that directory. VMs name them: `strata vm create --image tiny`.
//! - **Imported images** (`Strata.Compute/images` resources in a resource group): `import`
//!   uploads a raw or qcow2 file to the control plane, which checks it (no backing file, no
//!   external data file, a sane virtual size) and stores it as a canonical qcow2 named by its
//!   SHA-256; hosts fetch it by that digest and verify it. `list`, `show`, `delete`. VMs name
//!   them by name (in the VM's resource group) or id: `strata vm create --image NAME`. Under
//!   trusted launch an image boots only if it is signed for the hosts' secure-boot keys; an
//!   unsigned one ends Failed with "secure boot violation".

use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use strata_agent::images::{self, ImageStore, SigningKey};

use crate::client::Client;
use crate::output::{Column, Format, print};

const IMAGE_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("State", "/properties/provisioningState"),
    ("Uploaded as", "/properties/source/format"),
    ("VirtualSizeBytes", "/properties/virtualSizeBytes"),
    ("SizeBytes", "/properties/sizeBytes"),
    ("SHA256", "/properties/sha256"),
];

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Build a platform image offline from Debian packages (progress on stderr).
    Build(BuildArgs),
    /// Import a raw or qcow2 disk image as an image resource (uploaded with progress).
    Import {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// The image file.
        #[arg(long)]
        file: PathBuf,
        /// The file's format (default: qcow2 if it starts with the qcow2 header, else raw).
        #[arg(long, value_enum)]
        format: Option<ImageFormat>,
    },
    /// Image resources in a resource group (all readable ones in the subscription without
    /// -g); `--local`: this machine's image directory instead.
    List {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: Option<String>,
        /// List the platform images built on this machine (no control plane involved).
        #[arg(long)]
        local: bool,
        /// The image directory (as the agent's --image-dir), with --local.
        #[arg(long, default_value = images::DEFAULT_IMAGE_DIR)]
        image_dir: PathBuf,
    },
    /// Show one image resource.
    Show {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Delete an image resource (VMs made from it keep working; its bytes go when nothing
    /// uses them).
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

#[derive(Args)]
pub struct BuildArgs {
    /// The image to build.
    #[arg(value_parser = [images::TINY])]
    pub name: String,
    /// Output directory (default: IMAGE_DIR/NAME, where the host agent looks for it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The image directory (as the agent's --image-dir).
    #[arg(long, default_value = images::DEFAULT_IMAGE_DIR)]
    pub image_dir: PathBuf,
    /// Secure-boot signing key (unencrypted PEM); with --cert. Default: Debian's OVMF
    /// snakeoil pair (development only: its private key is public).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The signing key's certificate (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
}

/// Whether the command runs on this machine alone (no profile, no control plane).
pub fn is_offline(cmd: &ImageCmd) -> bool {
    matches!(cmd, ImageCmd::Build(_) | ImageCmd::List { local: true, .. })
}

/// The offline commands: `build`, `list --local`.
pub fn run_offline(cmd: ImageCmd, out: Format) -> Result<()> {
    match cmd {
        ImageCmd::Build(b) => build(b, out),
        ImageCmd::List { image_dir, .. } => {
            let store = ImageStore::new(image_dir, SigningKey::Snakeoil);
            let list = store
                .list()
                .map_err(|e| anyhow!(crate::commands::chain(&e)))?;
            print(
                out,
                &serde_json::to_value(list)?,
                &[
                    ("Name", "/name"),
                    ("SizeBytes", "/sizeBytes"),
                    ("Kernel", "/kernel"),
                    ("Disk", "/disk"),
                ],
            );
            Ok(())
        }
        _ => bail!("this image command needs the control plane"),
    }
}

fn image_path(sub: &str, rg: &str, name: &str) -> Result<String> {
    strata_types::path::validate_name(rg)?;
    strata_types::path::validate_name(name)?;
    Ok(format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Strata.Compute/images/{name}"
    ))
}

/// The commands on image resources.
pub fn run(c: &Client, out: Format, sub: &str, cmd: ImageCmd) -> Result<()> {
    match cmd {
        ImageCmd::Import {
            name,
            resource_group,
            file,
            format,
        } => import(
            c,
            out,
            &image_path(sub, &resource_group, &name)?,
            &file,
            format,
        ),
        ImageCmd::List { resource_group, .. } => {
            let groups = match resource_group {
                Some(rg) => {
                    strata_types::path::validate_name(&rg)?;
                    vec![rg]
                }
                None => {
                    c.call("GET", &format!("/subscriptions/{sub}/resourceGroups"), None)?["value"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|g| g["name"].as_str().map(str::to_owned))
                        .collect()
                }
            };
            let mut all = Vec::new();
            for rg in groups {
                let v = c.call(
                    "GET",
                    &format!(
                        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Strata.Compute/images"
                    ),
                    None,
                )?;
                all.extend(v["value"].as_array().cloned().unwrap_or_default());
            }
            print(out, &json!({ "value": all }), IMAGE_COLS);
            Ok(())
        }
        ImageCmd::Show {
            name,
            resource_group,
        } => {
            let v = c.call("GET", &image_path(sub, &resource_group, &name)?, None)?;
            print(out, &v, IMAGE_COLS);
            Ok(())
        }
        ImageCmd::Delete {
            name,
            resource_group,
        } => {
            c.call("DELETE", &image_path(sub, &resource_group, &name)?, None)?;
            Ok(())
        }
        ImageCmd::Build(_) => bail!("strata image build runs offline"),
    }
}

/// Prints a progress line at most every second (and at the end) on stderr.
struct Progress {
    what: &'static str,
    /// Printed once everything went through.
    then: Option<&'static str>,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(what: &'static str, total: u64, then: Option<&'static str>) -> Self {
        let now = Instant::now();
        Self {
            what,
            then,
            total,
            done: 0,
            started: now,
            last: now,
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= Duration::from_secs(1) || self.done == self.total {
            self.last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "{} {:>5.1}%  {} of {} MiB  {:.1} MiB/s",
                self.what,
                100.0 * self.done as f64 / self.total.max(1) as f64,
                self.done >> 20,
                self.total >> 20,
                self.done as f64 / secs / f64::from(1 << 20)
            );
            if self.done == self.total
                && let Some(then) = self.then.take()
            {
                eprintln!("{then}");
            }
        }
    }
}

/// Counts (and reports) what is read through it.
struct Counting<R> {
    inner: R,
    progress: Progress,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

fn import(
    c: &Client,
    out: Format,
    path: &str,
    file: &std::path::Path,
    format: Option<ImageFormat>,
) -> Result<()> {
    let open =
        || std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()));
    let size = open()?
        .metadata()
        .with_context(|| format!("cannot stat {}", file.display()))?
        .len();
    if size == 0 {
        bail!("{} is empty", file.display());
    }
    let format = match format {
        Some(ImageFormat::Raw) => "raw",
        Some(ImageFormat::Qcow2) => "qcow2",
        None => {
            let mut head = [0u8; 4];
            let n = open()?.read(&mut head)?;
            match strata_compute::import::Format::detect(&head[..n]) {
                strata_compute::import::Format::Qcow2 => "qcow2",
                strata_compute::import::Format::Raw => "raw",
            }
        }
    };
    // The digest first: the control plane refuses bytes that do not match it, so what is
    // stored is exactly this file.
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut reader = Counting {
        inner: open()?,
        progress: Progress::new("hashing  ", size, None),
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    let sha256 = strata_attest::hex(hash.finish().as_ref());
    let declared = c.call(
        "PUT",
        path,
        Some(&json!({ "properties": { "source": {
            "type": "Upload", "format": format, "uploadSizeBytes": size, "sha256": sha256,
        } } })),
    )?;
    if declared.pointer("/properties/provisioningState") != Some(&json!("PendingUpload")) {
        bail!(
            "image {} already has its content (sha256 {}); delete it or import under another name",
            declared["name"].as_str().unwrap_or(""),
            declared
                .pointer("/properties/sha256")
                .and_then(Value::as_str)
                .unwrap_or("?")
        );
    }
    let body = Counting {
        inner: open()?,
        progress: Progress::new(
            "uploading",
            size,
            Some("uploaded; the control plane checks the image and converts it to qcow2"),
        ),
    };
    eprintln!(
        "uploading {} ({size} bytes, {format}, sha256 {sha256})",
        file.display()
    );
    let v = c.upload(&format!("{path}/upload"), size, body)?;
    print(out, &v, IMAGE_COLS);
    Ok(())
}

fn build(b: BuildArgs, out: Format) -> Result<()> {
    let signing = SigningKey::from_options(b.key, b.cert)
        .map_err(|e| anyhow!(e.to_string().replace("--secure-boot-", "--")))?;
    let dir = b.out.unwrap_or_else(|| b.image_dir.join(&b.name));
    let started = Instant::now();
    let image = images::build_tiny_into(&dir, &signing, &mut |line| {
        eprintln!("strata image build {}: {line}", b.name);
    })
    .map_err(|e| anyhow!(crate::commands::chain(&e)))?;
    print(
        out,
        &json!({
            "name": b.name,
            "disk": image.disk,
            "rawDisk": image.raw_disk,
            "uki": image.uki,
            "kernel": image.kernel,
            "signingCertificate": signing.cert(),
            "cached": image.cached,
            "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        }),
        &[
            ("Name", "/name"),
            ("Disk", "/disk"),
            ("Kernel", "/kernel"),
            ("Cached", "/cached"),
        ],
    );
    Ok(())
}
