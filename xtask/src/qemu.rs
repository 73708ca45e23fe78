//! Strata's QEMU: the QEMU source Debian ships (`qemu_10.0.2+ds.orig.tar.xz`, the version of
//! bookworm-backports' `qemu-system-x86`), built with gnutls as its crypto backend, the patches
//! in `xtask/qemu/patches/`, and only the features a Strata host uses, installed under
//! [`PREFIX`]. The QEMU driver prefers it over Debian's binaries (`strata_compute::binaries`).
//!
//! Why: every Strata disk is a LUKS qcow2, so every guest I/O runs AES-256-XTS inside QEMU.
//! Debian builds QEMU on nettle, whose XTS calls AES one 16-byte block at a time (≈ 750 MiB/s
//! per core here); gnutls's pipelined AES-NI XTS does ≈ 5 GB/s on the same core. The numbers,
//! and what the patches change, are in `docs/benchmarks.md` ("Disk encryption").
//!
//! The source is fetched from the host's Debian mirror and checked against the SHA-256 that
//! Debian's signed `Sources` index gives for it (pinned here); meson comes from PyPI pinned by
//! hash. A manifest of everything that goes into the build (source digest, meson, configure
//! flags, patch texts) is written beside the binaries: when it matches, nothing is rebuilt.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, describe, ensure_packages, run};

/// Where Strata's QEMU is installed (`bin/qemu-system-x86_64`, `bin/qemu-img`, `bin/qemu-io`,
/// `share/qemu/` for the option ROMs). Must match `strata_compute::binaries::STRATA_QEMU_DIR`
/// (its `bin`).
pub const PREFIX: &str = "/opt/strata/qemu";
/// The build's inputs, written last: its presence with this content means "installed, current".
const MANIFEST: &str = "BUILD-MANIFEST";
/// Work space (root's, 0700): the downloaded source tarball (kept: a rebuild does not fetch it
/// again), the Python tools, and the source and build tree (made anew for every build).
const WORK: &str = "/var/cache/strata/qemu-build";

const SOURCE: &str = "qemu_10.0.2+ds.orig.tar.xz";
/// Where the source comes from when the host's apt sources name no mirror.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const SOURCE_DIR: &str = "qemu-10.0.2";
/// From Debian's `Sources` index (bookworm-backports and trixie-security,
/// `qemu 1:10.0.2+ds-2+deb13u1`), `Checksums-Sha256`.
const SOURCE_SHA256: &str = "0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1";
/// Python packages QEMU's configure wants in its build environment (the "+ds" source drops the
/// wheels QEMU bundles): meson ≥ 1.5 (bookworm has 1.0) and pycotap. From PyPI, each pinned by
/// the SHA-256 of its wheel (`pip --require-hashes`).
const PYTHON_REQUIREMENTS: &str = "\
meson==1.8.5 --hash=sha256:15ab2cca08271bc055bc33a4929b7c58f15ad67df4c1fa65dc223e822b882bef
pycotap==1.3.1 --hash=sha256:1c3a25b3ff89e48f4e00f1f71dbbc1642b4f65c65d416524d07e73492fff25ea
";

/// Debian packages the build needs (the runtime libraries come with them).
const BUILD_PACKAGES: &[&str] = &[
    "gcc",
    // the option ROMs (kvmvapic.bin, linuxboot_dma.bin, …) are 16/32-bit x86 code
    "gcc-multilib",
    "make",
    "ninja-build",
    "pkg-config",
    "python3-venv",
    "patch",
    "xz-utils",
    "apt-utils",
    "libglib2.0-dev",
    "libgnutls28-dev",
    "libpixman-1-dev",
    "libseccomp-dev",
    "libfdt-dev",
    "zlib1g-dev",
];

/// Everything off unless a Strata host uses it: no display, audio, USB, SPICE, VNC, slirp,
/// curl, iSCSI, … (less code facing the guest and the network than Debian's full build).
const CONFIGURE: &[&str] = &[
    "--target-list=x86_64-softmmu",
    "--without-default-features",
    "--disable-download",
    "--disable-docs",
    "--disable-werror",
    "--disable-install-blobs",
    "--disable-user",
    "--enable-kvm",
    "--enable-tcg",
    "--enable-tools",
    // The crypto backend: gnutls for ciphers, never nettle or gcrypt.
    "--enable-gnutls",
    "--disable-nettle",
    "--disable-gcrypt",
    // `-sandbox on,…` (the driver's seccomp filter) and the swtpm vTPM.
    "--enable-seccomp",
    "--enable-tpm",
    "--enable-pixman",
    "--enable-fdt=system",
];

/// Built and installed: the emulator, the image tool, the benchmark's `qemu-io`.
const PROGRAMS: &[&str] = &["qemu-system-x86_64", "qemu-img", "qemu-io"];

const PATCHES: &[(&str, &str)] = &[
    (
        "0001-pc-bios-no-edk2-blobs-in-ds-source.patch",
        include_str!("../qemu/patches/0001-pc-bios-no-edk2-blobs-in-ds-source.patch"),
    ),
    (
        "0002-crypto-block-no-lock-around-stateless-ivgen.patch",
        include_str!("../qemu/patches/0002-crypto-block-no-lock-around-stateless-ivgen.patch"),
    ),
    (
        "0003-crypto-pbkdf-calibrate-on-100ms.patch",
        include_str!("../qemu/patches/0003-crypto-pbkdf-calibrate-on-100ms.patch"),
    ),
];

/// What goes into the build, as text: equal manifests, equal builds.
fn manifest() -> String {
    let mut m = format!(
        "source {SOURCE} sha256:{SOURCE_SHA256}\n{PYTHON_REQUIREMENTS}configure --prefix={PREFIX} {}\n\
         install bin/{{{}}} share/qemu/{{the option ROMs: pc-bios/optionrom/*.bin}}\n",
        CONFIGURE.join(" "),
        PROGRAMS.join(",")
    );
    for (name, text) in PATCHES {
        m.push_str(&format!("patch {name}\n{text}"));
    }
    m
}

/// Builds and installs Strata's QEMU unless the installed one was built from exactly these
/// inputs. About 10 minutes on 2 cores the first time; seconds after.
pub fn ensure() -> Result {
    let prefix = Path::new(PREFIX);
    let want = manifest();
    if fs::read_to_string(prefix.join(MANIFEST)).is_ok_and(|have| have == want)
        && PROGRAMS
            .iter()
            .all(|p| prefix.join("bin").join(p).is_file())
    {
        return Ok(());
    }
    warn_if_debian_is_newer();
    eprintln!(
        "xtask: building Strata's QEMU into {PREFIX} (QEMU 10.0.2, gnutls crypto; once per \
         machine, about 5-10 minutes on 2 cores)"
    );
    ensure_packages(BUILD_PACKAGES)?;
    let work = PathBuf::from(WORK);
    fs::create_dir_all(&work).map_err(|e| format!("mkdir {}: {e}", work.display()))?;
    // Only root may touch what root builds and installs.
    fs::set_permissions(&work, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", work.display()))?;
    // One build at a time (two `cargo xtask` runs on one machine).
    let lock_path = work.join("lock");
    let lock =
        fs::File::create(&lock_path).map_err(|e| format!("create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    let tarball = work.join(SOURCE);
    fetch_source(&tarball)?;

    // A fresh source tree for every build: the patches apply to pristine files. Extracted as
    // root's files whatever owners the tarball records.
    let src = work.join(SOURCE_DIR);
    if src.exists() {
        fs::remove_dir_all(&src).map_err(|e| format!("remove {}: {e}", src.display()))?;
    }
    run(Command::new("tar")
        .args(["--no-same-owner", "--no-same-permissions", "-xf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&work))?;
    for (name, text) in PATCHES {
        let file = write_file(&work, name, text)?;
        run(Command::new("patch")
            .args(["-p1", "--quiet", "-d"])
            .arg(&src)
            .arg("-i")
            .arg(&file))?;
    }

    let venv = work.join("venv");
    let req = work.join("requirements.txt");
    if fs::read_to_string(&req).ok().as_deref() != Some(PYTHON_REQUIREMENTS) {
        let _ = fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--require-hashes", "--no-deps", "-r"])
            .arg(write_file(&work, "requirements.in", PYTHON_REQUIREMENTS)?))?;
        fs::write(&req, PYTHON_REQUIREMENTS)
            .map_err(|e| format!("write {}: {e}", req.display()))?;
    }

    let build = src.join("build");
    fs::create_dir_all(&build).map_err(|e| format!("mkdir {}: {e}", build.display()))?;
    run(Command::new(src.join("configure"))
        .current_dir(&build)
        .arg(format!("--python={}", venv.join("bin/python3").display()))
        .arg(format!("--prefix={PREFIX}"))
        .args(CONFIGURE)
        .stdout(std::process::Stdio::null()))?;
    run(Command::new("ninja").current_dir(&build).args(PROGRAMS))?;
    run(Command::new("make")
        .args(["-s", "-C"])
        .arg(build.join("pc-bios/optionrom")))?;

    install(&build, prefix)?;
    // The manifest vouches for the files only once they are on disk.
    run(&mut Command::new("sync"))?;
    fs::write(prefix.join(MANIFEST), want)
        .map_err(|e| format!("write {}: {e}", prefix.join(MANIFEST).display()))?;
    drop(lock);
    eprintln!("xtask: Strata's QEMU is in {PREFIX}/bin");
    Ok(())
}

/// Strata's build follows the pinned source, not apt: say so when Debian's QEMU has moved on
/// (a newer Debian package may carry fixes this build lacks until the pin moves).
fn warn_if_debian_is_newer() {
    let Ok(out) = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "qemu-system-x86"])
        .output()
    else {
        return;
    };
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // "1:10.0.2+ds-2+deb13u1~bpo12+1" -> "10.0.2"
    let upstream = version
        .split_once(':')
        .map_or(version.as_str(), |(_, v)| v)
        .split(['+', '-', '~'])
        .next()
        .unwrap_or_default();
    if out.status.success() && !upstream.is_empty() && upstream != "10.0.2" {
        eprintln!(
            "xtask: WARNING: Debian's qemu-system-x86 is {version}; Strata's QEMU is built from \
             the pinned 10.0.2 source (xtask/src/qemu.rs): check whether the newer version fixes \
             something Strata's hosts need, and move the pin"
        );
    }
}

/// The source tarball from the host's Debian mirror, verified by `apt-helper` against the
/// pinned SHA-256 (a mismatch leaves no file).
fn fetch_source(tarball: &Path) -> Result {
    if tarball.is_file() && sha256_of(tarball)? == SOURCE_SHA256 {
        return Ok(());
    }
    // Any mirror will do: the file is checked against the pinned digest.
    let mirror = crate::eventlog::debian_mirror().unwrap_or_else(|why| {
        eprintln!("xtask: {why}: fetching the QEMU source from {DEFAULT_MIRROR}");
        DEFAULT_MIRROR.to_string()
    });
    let url = format!("{}/pool/main/q/qemu/{SOURCE}", mirror.trim_end_matches('/'));
    let _ = fs::remove_file(tarball);
    run(Command::new("/usr/lib/apt/apt-helper")
        .arg("download-file")
        .arg(&url)
        .arg(tarball)
        .arg(format!("SHA256:{SOURCE_SHA256}")))?;
    let got = sha256_of(tarball)?;
    if got != SOURCE_SHA256 {
        let _ = fs::remove_file(tarball);
        return Err(format!("{url}: SHA-256 {got}, expected {SOURCE_SHA256}"));
    }
    Ok(())
}

/// Writes `text` to `dir/name` and returns the path.
fn write_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}

fn sha256_of(file: &Path) -> Result<String> {
    let mut cmd = Command::new("sha256sum");
    cmd.arg(file);
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", describe(&cmd)))?;
    if !out.status.success() {
        return Err(format!("{} failed", describe(&cmd)));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The programs into `PREFIX/bin`, the option ROMs into `PREFIX/share/qemu` (QEMU looks for
/// its data relative to its binary), each replaced by rename so a running QEMU keeps its file.
fn install(build: &Path, prefix: &Path) -> Result {
    let bin = prefix.join("bin");
    let share = prefix.join("share/qemu");
    for d in [&bin, &share] {
        fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    // An old manifest must not vouch for half-installed files.
    let _ = fs::remove_file(prefix.join(MANIFEST));
    for p in PROGRAMS {
        put(&build.join(p), &bin.join(p), 0o755)?;
    }
    let roms = build.join("pc-bios/optionrom");
    for entry in fs::read_dir(&roms).map_err(|e| format!("{}: {e}", roms.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|x| x == "bin") {
            let name = path.file_name().unwrap_or_default();
            put(&path, &share.join(name), 0o644)?;
        }
    }
    Ok(())
}

fn put(from: &Path, to: &Path, mode: u32) -> Result {
    let tmp = to.with_extension("strata-new");
    fs::copy(from, &tmp)
        .map_err(|e| format!("copy {} to {}: {e}", from.display(), tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    fs::rename(&tmp, to).map_err(|e| format!("rename {} to {}: {e}", tmp.display(), to.display()))
}
