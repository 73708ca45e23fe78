//! The development TPM of `strata up --dev-tpm`: a swtpm kept in the data directory (its own
//! local EK CA, state persisted across restarts, PCRs reset at every start like a reboot),
//! for machines without a TPM. Hosts enrolled on it are marked "development (software TPM)"
//! everywhere; nothing about it is hardware trust.
//!
//! Caveat, stated where it is used: the `swtpm:` TCTI speaks TCP, so the TPM listens on a
//! loopback port that other local users could reach.

use std::path::{Path, PathBuf};
use std::process::Child;

use crate::testhost::{HostError, TestCa, free_port_pair, launch, manufacture};

/// A running development TPM.
#[derive(Debug)]
pub struct DevTpm {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for DevTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DevTpm {
    /// Starts the TPM kept in `dir`, manufacturing it (EK, EK certificate from a local CA,
    /// SHA-1 and SHA-256 banks) on first use.
    pub fn start(dir: &Path) -> Result<DevTpm, HostError> {
        let ca = TestCa::at(&dir.join("ca"))?;
        let state = dir.join("state");
        if !state.join("tpm2-00.permall").exists() {
            std::fs::create_dir_all(&state).map_err(|source| HostError::Io {
                what: format!("{}", state.display()),
                source,
            })?;
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700));
            manufacture(&ca, &state)?;
        }
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port_pair()?;
            match launch(&state, port) {
                Ok(child) => {
                    return Ok(DevTpm {
                        child,
                        port,
                        dir: dir.to_path_buf(),
                    });
                }
                Err(HostError::Start { reason }) => last = reason,
                Err(e) => return Err(e),
            }
        }
        Err(HostError::Start { reason: last })
    }

    /// The TCTI configuration string.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Where the TPM and its CA live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
