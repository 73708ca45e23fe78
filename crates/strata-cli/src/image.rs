//! `strata image …`: base images on this machine (offline: no control plane involved).
//!
//! `build tiny` makes the tiny trusted-launch image from Debian's packages
//! (`strata_compute::image`), signed with the host's secure-boot key, into the image directory
//! the host agent reads (`IMAGE_DIR/tiny/disk.qcow2`); `list` shows that directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use serde_json::json;

use strata_agent::images::{self, ImageStore, SigningKey};

use crate::output::{Format, print};

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Build an image offline from Debian packages (progress on stderr).
    Build(BuildArgs),
    /// Images in this machine's image directory.
    List {
        /// The image directory (as the agent's --image-dir).
        #[arg(long, default_value = images::DEFAULT_IMAGE_DIR)]
        image_dir: PathBuf,
    },
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

pub fn run(cmd: ImageCmd, out: Format) -> Result<()> {
    match cmd {
        ImageCmd::Build(b) => build(b, out),
        ImageCmd::List { image_dir } => {
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
    }
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
