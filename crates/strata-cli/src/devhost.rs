//! The local host inside `strata up`.
//!
//! - With a TPM (`/dev/tpmrm0`): the local agent enrols this machine like any host. Production
//!   rules apply: its EK certificate must chain to a `--tpm-ca`, and it is Trusted only once a
//!   signed reference policy (`strata host policy import`) matches its boot.
//! - Without one: this machine is not enrolled and says why; nothing can be placed on it.
//! - With `--dev-tpm`: a software TPM in `DATA_DIR/dev/tpm`, a simulated measured boot, a
//!   local release key (`DATA_DIR/dev/release-key.pk8`, 0600) that signs a "development"
//!   policy for exactly that boot, and a host marked "development (software TPM)" in every
//!   listing. It makes the single-machine demo work; it is not hardware trust.
//!
//! The local host runs the VMs placed on it with the QEMU driver when this machine has what it
//! needs (root and the Debian packages in `strata_compute::COMPUTE_PACKAGES`), under
//! `/var/lib/strata-compute`, images signed with Debian's snakeoil key; otherwise on the
//! in-process simulator, with a loud warning.

use anyhow::{Context, Result, anyhow};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use strata_agent::agent::{Agent, AgentConfig};
use strata_agent::bootplan::{BootImages, BootPlan};
use strata_agent::devtpm::DevTpm;
use strata_agent::release::{ReleaseSigner, golden_policy};

use crate::client::{ApiFailure, Client};

pub const HARDWARE_TPM: &str = "/dev/tpmrm0";
const DEV_POLICY: &str = "development";
const DEV_RELEASE_KEY_ID: &str = "local-development";

/// Where the local host stands, for the start-up banner.
pub enum LocalHost {
    NotEnrolled(String),
    Running {
        agent: std::thread::JoinHandle<()>,
        stop: Arc<AtomicBool>,
        _tpm: Option<DevTpm>,
    },
}

/// The development release key: created once, kept 0600. Returns the path of its public
/// half (for `--policy-release-key`).
pub fn dev_release_key(data_dir: &Path) -> Result<PathBuf> {
    let dir = data_dir.join("dev");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let private = dir.join("release-key.pk8");
    if !private.exists() {
        let (_, pkcs8) = ReleaseSigner::generate(DEV_RELEASE_KEY_ID).map_err(|e| anyhow!(e))?;
        strata_control::setup::write_private(&private, &pkcs8)?;
    }
    let public = dir.join("release-key.json");
    std::fs::write(
        &public,
        serde_json::to_vec_pretty(&load_signer(&private)?.release_key())?,
    )?;
    Ok(public)
}

fn load_signer(path: &Path) -> Result<ReleaseSigner> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    ReleaseSigner::from_pkcs8(DEV_RELEASE_KEY_ID, &bytes)
        .map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(strata_attest::hex(
        ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref(),
    ))
}

/// Starts the local host's agent (see the module docs). Blocking; call off the async runtime.
pub fn start(
    data_dir: &Path,
    profile: &Path,
    endpoint: &str,
    dev_tpm: bool,
    hypervisor: Option<crate::host::HypervisorArg>,
) -> Result<LocalHost> {
    let hardware = Path::new(HARDWARE_TPM).exists();
    if !hardware && !dev_tpm {
        return Ok(LocalHost::NotEnrolled(format!(
            "this machine has no TPM ({HARDWARE_TPM}), so it is not enrolled as a host and no VM can be placed on it; \
             run `strata up --dev-tpm` for a development host on a software TPM (never production trust)"
        )));
    }
    let client = Client::new(profile)?;
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|h| strata_types::path::validate_name(h).is_ok())
        .unwrap_or_else(|| "local-host".into());
    let me = std::env::current_exe().context("cannot find the strata binary")?;
    let (tcti, event_log, tpm, development) = if dev_tpm {
        let dir = data_dir.join("dev");
        let tpm = DevTpm::start(&dir.join("tpm")).map_err(|e| anyhow!("{e}"))?;
        // Every start is a reboot: PCRs are reset, so measure the development boot again.
        let plan = BootPlan::uefi(&BootImages::default());
        let log = {
            let mut t = strata_agent::tpm::Tpm::open(&tpm.tcti()).map_err(|e| anyhow!("{e}"))?;
            strata_agent::testhost::simulate_boot(&mut t, &plan).map_err(|e| anyhow!("{e}"))?
        };
        let log_path = dir.join("binary_bios_measurements");
        std::fs::write(&log_path, &log)?;
        // Sign and import the policy for exactly this boot and this binary.
        let policy = golden_policy(
            &log,
            &[strata_attest::AgentMeasurement {
                name: "strata-agent".into(),
                sha256: sha256_file(&me)?,
            }],
        )
        .map_err(|e| anyhow!("the development event log: {e}"))?;
        let bundle = load_signer(&dir.join("release-key.pk8"))?
            .sign(
                strata_types::time::now_unix().max(1) as u64,
                &strata_types::time::now_rfc3339(),
                [(DEV_POLICY.to_string(), policy)].into_iter().collect(),
            )
            .map_err(|e| anyhow!(e))?;
        match client.call(
            "POST",
            "/providers/Strata.Fabric/referencePolicies/import",
            Some(&serde_json::to_value(&bundle)?),
        ) {
            Ok(_) => {}
            Err(e)
                if e.downcast_ref::<ApiFailure>()
                    .is_some_and(|f| f.status == 409) => {}
            Err(e) => return Err(e.context("importing the development reference policy")),
        }
        (tpm.tcti(), log_path, Some(tpm), true)
    } else {
        (
            format!("device:{HARDWARE_TPM}"),
            PathBuf::from(AgentConfig::HARDWARE_EVENT_LOG),
            None,
            false,
        )
    };
    let ca_pem = client.profile.ca_certificate.clone();
    let cfg = AgentConfig {
        server: endpoint.to_string(),
        server_ca_pem: ca_pem,
        tcti,
        hostname: hostname.clone(),
        state_dir: data_dir.join("agent"),
        development,
        event_log,
        measured_binaries: vec![("strata-agent".into(), me)],
        ak_algorithm: Default::default(),
    };
    let mut agent = Agent::new(cfg).map_err(|e| anyhow!("{e}"))?;
    if !agent.is_registered() {
        let token_name = format!("local-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let v = client.call(
            "PUT",
            &format!("/providers/Strata.Fabric/joinTokens/{token_name}"),
            Some(&json!({ "properties": {
                "expiresInSecs": 600,
                "policy": if development { DEV_POLICY } else { "default" },
                "allowDevelopment": development,
            } })),
        )?;
        let token = v
            .pointer("/secretOutput/joinToken")
            .and_then(|t| t.as_str())
            .ok_or_else(|| anyhow!("the join token was not returned"))?
            .to_string();
        if let Err(e) = agent.register(&token) {
            return Ok(LocalHost::NotEnrolled(format!(
                "the local host could not enrol: {e}"
            )));
        }
    }
    let mut vm_args = local_vm_args(hypervisor);
    let vms = match crate::host::vm_host(&vm_args, true) {
        Ok(v) => v,
        Err(e) if vm_args.hypervisor == crate::host::HypervisorArg::Qemu => {
            eprintln!(
                "strata: WARNING: the QEMU driver cannot run here ({e:#}): the local host SIMULATES its VMs (nothing boots)"
            );
            vm_args.hypervisor = crate::host::HypervisorArg::Sim;
            crate::host::vm_host(&vm_args, true)?
        }
        Err(e) => return Err(e),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::Builder::new()
        .name("strata-agent".into())
        .spawn(move || {
            strata_agent::vms::run_with_vms(&mut agent, vms, &s, std::time::Duration::from_secs(30))
        })?;
    Ok(LocalHost::Running {
        agent: handle,
        stop,
        _tpm: tpm,
    })
}

/// The local host's VM network: the real one (strata-netdp) unless its commands are missing,
/// then none (with a warning).
fn local_network(hypervisor: crate::host::HypervisorArg) -> Option<crate::host::NetworkArg> {
    let missing = strata_agent::network::NetdpNetwork::missing();
    if hypervisor == crate::host::HypervisorArg::Qemu && !missing.is_empty() {
        eprintln!(
            "strata: WARNING: this machine lacks {} for the VM network: the local host's VMs get no \
             network interface. Install the Debian packages iproute2 nftables conntrack.",
            missing.join(", ")
        );
        return Some(crate::host::NetworkArg::Sim);
    }
    None
}

/// The local host's VM settings: the driver `--hypervisor` names, else QEMU when this machine
/// can run it, else the simulator.
fn local_vm_args(asked: Option<crate::host::HypervisorArg>) -> crate::host::VmArgs {
    use crate::host::{HypervisorArg, VmArgs};
    use strata_agent::images::{DEFAULT_IMAGE_DIR, DEFAULT_VM_DIR};
    let vars = PathBuf::from(strata_agent::drivers::OVMF_VARS_SNAKEOIL);
    let missing = strata_agent::drivers::missing_for_qemu(&vars);
    let hypervisor = if asked == Some(HypervisorArg::Sim) {
        eprintln!("strata: --hypervisor sim: the local host SIMULATES its VMs (nothing boots)");
        HypervisorArg::Sim
    } else if missing.is_empty() {
        eprintln!(
            "strata: the local host runs its VMs under QEMU (VMs in {DEFAULT_VM_DIR}, images in {DEFAULT_IMAGE_DIR}, signed with Debian's snakeoil key)"
        );
        HypervisorArg::Qemu
    } else {
        eprintln!(
            "strata: WARNING: this machine lacks {} for real VMs: the local host SIMULATES its VMs \
             (nothing boots). Install the Debian packages {} and run as root for QEMU.",
            missing.join(", "),
            strata_agent::drivers::COMPUTE_PACKAGES.join(" ")
        );
        HypervisorArg::Sim
    };
    VmArgs {
        hypervisor,
        vm_dir: DEFAULT_VM_DIR.into(),
        image_dir: DEFAULT_IMAGE_DIR.into(),
        secure_boot_key: None,
        secure_boot_cert: None,
        ovmf_vars: vars,
        network: local_network(hypervisor),
    }
}
