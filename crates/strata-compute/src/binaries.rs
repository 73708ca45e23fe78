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
//! emulator is asked for. A directory is used only if it is absolute and it and its emulator
//! are owned by root and writable by nobody else (the agent runs what it finds there as root's
//! child); one that is not is skipped with a warning.

use std::os::unix::fs::MetadataExt as _;
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

/// The block-layer test tool (tests check image contents with it).
pub fn qemu_io() -> PathBuf {
    resolve("qemu-io")
}

/// Every emulator a VM may have been started with on this host: the chosen one, Strata's
/// build and the one on `PATH` (a VM started before the host switched keeps running its own).
pub fn known_qemu_systems() -> Vec<PathBuf> {
    let mut all = vec![
        qemu_system(),
        Path::new(STRATA_QEMU_DIR).join("qemu-system-x86_64"),
        PathBuf::from("qemu-system-x86_64"),
    ];
    all.dedup();
    all
}

/// Where `program` is (a path, or a name looked up on `PATH`), canonical: what
/// `/proc/PID/exe` shows for it. `None`: not there.
pub fn locate(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return std::fs::canonicalize(program).ok();
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
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
                0,
            )
        })
        .as_deref()
}

/// The directory to use, trusting directories owned by `owner` (root, outside tests).
fn choose(configured: Option<PathBuf>, strata: &Path, owner: u32) -> Option<PathBuf> {
    if let Some(dir) = configured.filter(|d| !d.as_os_str().is_empty()) {
        match trusted(&dir, owner) {
            Ok(()) => return Some(dir),
            Err(why) => tracing::warn!(
                dir = %dir.display(),
                reason = %why,
                "{QEMU_DIR_ENV} is not used"
            ),
        }
    }
    if !strata.join("qemu-system-x86_64").exists() {
        return None;
    }
    match trusted(strata, owner) {
        Ok(()) => Some(strata.to_path_buf()),
        Err(why) => {
            tracing::warn!(dir = %strata.display(), reason = %why, "Strata's QEMU is not used");
            None
        }
    }
}

/// `dir` is absolute, and it and its `qemu-system-x86_64` are owned by `owner` and writable by
/// no group or other user.
fn trusted(dir: &Path, owner: u32) -> Result<(), String> {
    if !dir.is_absolute() {
        return Err("not an absolute path".into());
    }
    for path in [dir.to_path_buf(), dir.join("qemu-system-x86_64")] {
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.uid() != owner {
            return Err(format!("{} is owned by uid {}", path.display(), meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{} is writable by its group or others (mode {:o})",
                path.display(),
                meta.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_directory_wins_then_strata_s_build_then_path() {
        use std::os::unix::fs::PermissionsExt as _;
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        let dir = tempfile::tempdir().unwrap();
        let install = |name: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            let emulator = d.join("qemu-system-x86_64");
            std::fs::write(&emulator, b"").unwrap();
            std::fs::set_permissions(&emulator, std::fs::Permissions::from_mode(0o755)).unwrap();
            (d, emulator)
        };
        let strata = dir.path().join("strata");
        // No build installed: PATH.
        assert_eq!(choose(None, &strata, me), None);
        assert_eq!(choose(Some(PathBuf::new()), &strata, me), None);
        // Installed: used.
        let (strata, emulator) = install("strata");
        assert_eq!(choose(None, &strata, me), Some(strata.clone()));
        // Configured: used even over an installed build.
        let (other, _) = install("other");
        assert_eq!(choose(Some(other.clone()), &strata, me), Some(other));
        // Not absolute, or another user's: skipped.
        assert_eq!(
            choose(Some("relative/bin".into()), &strata, me),
            Some(strata.clone())
        );
        assert_eq!(choose(None, &strata, me + 1), None);
        // Writable by others: skipped (here: PATH).
        std::fs::set_permissions(&emulator, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(trusted(&strata, me).unwrap_err().contains("writable"));
        assert_eq!(choose(None, &strata, me), None);
    }
}
