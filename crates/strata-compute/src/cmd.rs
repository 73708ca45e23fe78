//! Running host programs: one place that turns "not installed" and "exited non-zero" into
//! errors that name the program and the Debian package to install.

use std::process::{Command, Output, Stdio};

/// A host program failed or is missing.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The program is not on PATH.
    #[error("{program} is not installed: {package}")]
    Missing {
        program: String,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started for another reason.
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("{command} failed with {status}: {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

/// How to get `program` (for error messages): usually the Debian package that provides it.
pub(crate) fn package_of(program: &str) -> &'static str {
    let path = std::path::Path::new(program);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(program);
    let qemu = matches!(name, "qemu-system-x86_64" | "qemu-img" | "qemu-io");
    match (name, dir) {
        (_, Some(d)) if qemu && d == std::path::Path::new(crate::binaries::STRATA_QEMU_DIR) => {
            "build Strata's QEMU with `cargo xtask qemu`"
        }
        (_, Some(_)) if qemu => "put it in the directory STRATA_QEMU_DIR names, or unset it",
        ("qemu-system-x86_64", _) => "install the Debian package qemu-system-x86",
        ("qemu-img" | "qemu-io", _) => "install the Debian package qemu-utils",
        ("swtpm", _) => "install the Debian package swtpm",
        ("busybox", _) => "install the Debian package busybox-static",
        ("mformat" | "mcopy" | "mmd", _) => "install the Debian package mtools",
        ("sgdisk", _) => "install the Debian package gdisk",
        ("objcopy", _) => "install the Debian package binutils",
        ("sbsign" | "sbverify", _) => "install the Debian package sbsigntool",
        ("openssl", _) => "install the Debian package openssl",
        ("apt-get" | "apt-cache", _) => "install the Debian package apt",
        ("dpkg-deb", _) => "install the Debian package dpkg",
        _ => "install the Debian package that provides it",
    }
}

pub(crate) fn spawn_error(cmd: &Command, source: std::io::Error) -> CmdError {
    let program = cmd.get_program().to_string_lossy().into_owned();
    if source.kind() == std::io::ErrorKind::NotFound {
        let package = package_of(&program);
        CmdError::Missing {
            program,
            package,
            source,
        }
    } else {
        CmdError::Spawn { program, source }
    }
}

/// `program args…` as one line, for logs and errors (no secrets are ever passed in argv).
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; its stdout is returned, its stderr goes into the error.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, CmdError> {
    tracing::debug!(command = %describe(cmd), "run");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd, e))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(CmdError::Failed {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs `cmd` and returns its stdout as text.
pub(crate) fn stdout(cmd: &mut Command) -> Result<String, CmdError> {
    Ok(String::from_utf8_lossy(&run(cmd)?.stdout).into_owned())
}
