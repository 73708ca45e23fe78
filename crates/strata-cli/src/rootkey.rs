//! The control plane's root key: `--root-key auto|tpm|file` for `strata up` / `strata server`,
//! and `strata root-key status|seal|export` (offline: no control plane involved). The TPM
//! work is `strata_agent::rootseal`; the recovery story is in docs/security.md.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use strata_agent::rootseal::{self, RootKeyMode, RootKeyOptions};

use crate::commands::chain;
use crate::output::{Format, print};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// The sealed key if there is one, else an existing root.key, else a new key sealed to
    /// the TPM when one is usable (a file with a warning otherwise).
    Auto,
    /// Sealed to the TPM; an existing root.key is sealed and its plain copy removed.
    Tpm,
    /// A 0600 file (development, hosts without a TPM); warns on every start.
    File,
}

/// How `strata up` / `strata server` get the root key.
#[derive(Args, Clone, Debug)]
pub struct RootKeyArgs {
    /// Where the root key comes from.
    #[arg(
        long = "root-key",
        value_enum,
        env = "STRATA_ROOT_KEY",
        default_value = "auto"
    )]
    pub mode: ModeArg,
    /// The TPM that seals the root key (a TCTI string, e.g. device:/dev/tpmrm0 or
    /// swtpm:host=127.0.0.1,port=2321).
    #[arg(long = "root-key-tcti", env = "STRATA_ROOT_KEY_TCTI", default_value = rootseal::DEFAULT_TCTI)]
    pub tcti: String,
    /// Bind a newly sealed root key to these SHA-256 PCRs (comma-separated, e.g. 7): it then
    /// unseals only while they hold, so a firmware or secure-boot update needs the recovery
    /// copy. Default: no PCR binding.
    #[arg(long = "root-key-pcrs", value_delimiter = ',')]
    pub pcrs: Vec<u32>,
}

impl RootKeyArgs {
    pub fn options(&self) -> RootKeyOptions {
        RootKeyOptions {
            mode: match self.mode {
                ModeArg::Auto => RootKeyMode::Auto,
                ModeArg::Tpm => RootKeyMode::Tpm,
                ModeArg::File => RootKeyMode::File,
            },
            tcti: self.tcti.clone(),
            pcrs: self.pcrs.clone(),
        }
    }
}

/// Chooses (and, with `--root-key tpm`, migrates) the root key of `data_dir`; prints what was
/// decided. Blocking.
pub fn prepare(
    data_dir: &Path,
    args: &RootKeyArgs,
) -> Result<strata_control::setup::RootKeySource> {
    let prepared = rootseal::prepare(data_dir, &args.options()).map_err(|e| anyhow!(chain(&e)))?;
    for note in &prepared.notes {
        eprintln!("strata: {note}");
    }
    eprintln!("strata: root key: {}", prepared.provider.describe());
    Ok(strata_control::setup::RootKeySource::provider(
        prepared.provider,
    ))
}

#[derive(Subcommand)]
pub enum RootKeyCmd {
    /// What protects a data directory's root key (TPM-sealed or a file, PCRs), and whether
    /// the TPM is usable. Unseals nothing.
    Status {
        #[arg(long, default_value = "/var/lib/strata")]
        data_dir: PathBuf,
        #[arg(long, env = "STRATA_ROOT_KEY_TCTI", default_value = rootseal::DEFAULT_TCTI)]
        tcti: String,
    },
    /// Seal a data directory's root key to the TPM now (what `--root-key tpm` does at start):
    /// the key is unchanged, the plain root.key is overwritten and removed. Make a recovery
    /// copy first (`strata root-key export`).
    Seal {
        #[arg(long, default_value = "/var/lib/strata")]
        data_dir: PathBuf,
        #[arg(long, env = "STRATA_ROOT_KEY_TCTI", default_value = rootseal::DEFAULT_TCTI)]
        tcti: String,
        /// Bind it to these SHA-256 PCRs (comma-separated).
        #[arg(long, value_delimiter = ',')]
        pcrs: Vec<u32>,
    },
    /// Write the root key to a new 0600 file, for offline escrow: the recovery copy for a
    /// dead or cleared TPM. Keep it off this host.
    Export {
        #[arg(long, default_value = "/var/lib/strata")]
        data_dir: PathBuf,
        #[arg(long, env = "STRATA_ROOT_KEY_TCTI", default_value = rootseal::DEFAULT_TCTI)]
        tcti: String,
        /// The file to create (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: RootKeyCmd, out: Format) -> Result<()> {
    match cmd {
        RootKeyCmd::Status { data_dir, tcti } => {
            let st = rootseal::status(&data_dir, &tcti).map_err(|e| anyhow!(chain(&e)))?;
            print(
                out,
                &serde_json::to_value(&st)?,
                &[
                    ("PROTECTION", "/protection"),
                    ("PATH", "/path"),
                    ("PCRS", "/pcrs"),
                    ("TPM", "/tcti"),
                    ("TPM USABLE", "/tpmUsable"),
                ],
            );
        }
        RootKeyCmd::Seal {
            data_dir,
            tcti,
            pcrs,
        } => {
            let opts = RootKeyOptions {
                mode: RootKeyMode::Tpm,
                tcti,
                pcrs,
            };
            let prepared = rootseal::prepare(&data_dir, &opts).map_err(|e| anyhow!(chain(&e)))?;
            // Creates the sealed key if the directory had none; unseals it either way.
            let loaded = prepared
                .provider
                .load_or_create()
                .map_err(|e| anyhow!(chain(&e)))?;
            print(
                out,
                &json!({
                    "provider": prepared.provider.describe(),
                    "created": loaded.created,
                    "notes": prepared.notes,
                }),
                &[("PROVIDER", "/provider"), ("CREATED", "/created")],
            );
        }
        RootKeyCmd::Export {
            data_dir,
            tcti,
            out: file,
        } => {
            rootseal::export(&data_dir, &tcti, &file).map_err(|e| anyhow!(chain(&e)))?;
            eprintln!(
                "strata: wrote the root key to {} (0600); move it off this host and keep it offline",
                file.display()
            );
        }
    }
    Ok(())
}
