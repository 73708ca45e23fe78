//! Which QEMU programs run: Strata's own build when the host has it, else the distribution's.
//!
//! Strata's QEMU (`/opt/strata/qemu/bin`, made by `cargo xtask up`, `deps` or `qemu`; see
//! `xtask/src/qemu.rs`) is Debian's QEMU 10.0.2 source built with gnutls as its crypto
//! backend and only the features a Strata host uses. Every VM disk is a LUKS qcow2, so every
//! guest I/O runs AES-256-XTS inside QEMU; Debian's build does that through nettle at about a
//! sixth of gnutls's speed (docs/benchmarks.md, "Disk encryption"). Both read and write the
//! same disks: the format is LUKS1 inside qcow2 either way.
//!
//! Order: the directory in `STRATA_QEMU_DIR` when set (e.g. `/usr/bin` to run Debian's QEMU on
//! purpose), else [`STRATA_QEMU_DIR`] when it holds `qemu-system-x86_64`, else the programs on
//! `PATH` (Debian's `qemu-system-x86` and `qemu-utils`), with a warning the first time the
//! emulator is asked for.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where `cargo xtask` installs Strata's QEMU.
pub const STRATA_QEMU_DIR: &str = "/opt/strata/qemu/bin";
/// The environment variable that names another directory.
pub const QEMU_DIR_ENV: &str = "STRATA_QEMU_DIR";

/// The emulator.
pub fn qemu_system() -> PathBuf {
    let path = resolve("qemu-system-x86_64");
    static WARNED: OnceLock<()> = OnceLock::new();
    if choice().is_none() {
        WARNED.get_or_init(|| {
            tracing::warn!(
                "Strata's QEMU is not installed ({STRATA_QEMU_DIR}): using the distribution's \
                 QEMU from PATH, whose disk encryption is several times slower; \
                 `cargo xtask qemu` builds it"
            );
        });
    }
    path
}

/// The image tool (creates, converts and inspects disks).
pub fn qemu_img() -> PathBuf {
    resolve("qemu-img")
}

/// The block-layer test tool (the disk benchmark drives it).
pub fn qemu_io() -> PathBuf {
    resolve("qemu-io")
}

/// A short description of the QEMU in use, for logs and host inventories.
pub fn describe() -> String {
    match choice() {
        Some(dir) if dir == Path::new(STRATA_QEMU_DIR) => {
            format!("Strata's QEMU ({STRATA_QEMU_DIR})")
        }
        Some(dir) => format!("QEMU from {} ({QEMU_DIR_ENV})", dir.display()),
        None => "the distribution's QEMU (PATH)".to_owned(),
    }
}

fn resolve(program: &str) -> PathBuf {
    match choice() {
        Some(dir) => dir.join(program),
        None => PathBuf::from(program),
    }
}

/// The directory chosen once per process (`None`: search PATH).
fn choice() -> Option<&'static Path> {
    static CHOICE: OnceLock<Option<PathBuf>> = OnceLock::new();
    CHOICE
        .get_or_init(|| {
            choose(
                std::env::var_os(QEMU_DIR_ENV).map(PathBuf::from),
                Path::new(STRATA_QEMU_DIR),
            )
        })
        .as_deref()
}

fn choose(configured: Option<PathBuf>, strata: &Path) -> Option<PathBuf> {
    if let Some(dir) = configured.filter(|d| !d.as_os_str().is_empty()) {
        return Some(dir);
    }
    strata
        .join("qemu-system-x86_64")
        .is_file()
        .then(|| strata.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_directory_wins_then_strata_s_build_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let strata = dir.path().join("strata");
        std::fs::create_dir_all(&strata).unwrap();
        // No build installed: PATH.
        assert_eq!(choose(None, &strata), None);
        assert_eq!(choose(Some(PathBuf::new()), &strata), None);
        // Installed: used.
        std::fs::write(strata.join("qemu-system-x86_64"), b"").unwrap();
        assert_eq!(choose(None, &strata), Some(strata.clone()));
        // Configured: used even over an installed build.
        assert_eq!(
            choose(Some("/usr/bin".into()), &strata),
            Some(PathBuf::from("/usr/bin"))
        );
    }
}
