//! `strata host …` (operators) and `strata agent` (runs on each host).

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;

use crate::client::Client;
use crate::output::{Column, Format, print};

const HOST_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("State", "/properties/state"),
    ("Cordoned", "/properties/cordoned"),
    ("Trust", "/properties/trustLevel"),
    ("LastAttestation", "/properties/lastAttestation/time"),
    ("Reason", "/properties/reason"),
];

#[derive(Subcommand)]
pub enum HostCmd {
    /// List hosts with their trust state, last attestation and its reason.
    List,
    /// Show one host.
    Show {
        /// Host name.
        name: String,
    },
    /// Ask for an attestation round; with --now, wait for it and show the verdict.
    Attest {
        name: String,
        #[arg(long)]
        now: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Stop placing new VMs on a host.
    Cordon { name: String },
    /// Allow placement again (the host must also be Trusted).
    Uncordon { name: String },
    /// Quarantine a host: nothing but `release` moves it.
    Quarantine {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Release a quarantined host (it must attest again).
    Release { name: String },
    /// Delete a host (its agent must register again with a new join token).
    Delete {
        name: String,
        #[arg(long)]
        yes: bool,
    },
    /// Where N new VMs would be placed now, or why they cannot be.
    Placement {
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// One-time join tokens.
    #[command(subcommand)]
    JoinToken(JoinTokenCmd),
    /// Signed reference policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
}

#[derive(Subcommand)]
pub enum JoinTokenCmd {
    /// Create a one-time join token (shown once).
    Create {
        #[arg(short = 'n', long)]
        name: String,
        /// Lifetime in seconds (60 s to 7 days).
        #[arg(long, default_value_t = 3600)]
        expires_in: i64,
        /// Reference policy the host is appraised against.
        #[arg(long, default_value = "default")]
        policy: String,
        /// Allow a software-TPM development host to use it.
        #[arg(long)]
        allow_development: bool,
        /// Only a host registering under this name may use it.
        #[arg(long)]
        hostname: Option<String>,
    },
    List,
    Delete {
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Import a bundle signed by a configured release key.
    Import {
        /// The signed bundle (JSON).
        file: PathBuf,
    },
    List,
    Show {
        name: String,
    },
    /// Offline: create a release key pair (private key 0600; give the server the public file
    /// with --policy-release-key).
    Keygen {
        /// Key id bundles will name.
        #[arg(long)]
        key_id: String,
        /// Directory for KEY_ID.pk8 (private) and KEY_ID.json (public).
        #[arg(long)]
        out: PathBuf,
    },
    /// Offline: capture a reference policy from a known-good host's TCG event log (review it
    /// before signing).
    Capture {
        /// The event log (on the host: /sys/kernel/security/tpm0/binary_bios_measurements).
        #[arg(long)]
        event_log: PathBuf,
        /// Also pin this binary's SHA-256 as an agent measurement: NAME=PATH (repeatable).
        #[arg(long = "measure")]
        measure: Vec<String>,
    },
    /// Offline: sign policies into a bundle (`NAME=policy.json`, repeatable).
    Sign {
        /// The release private key (PKCS#8, from `keygen`).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        key_id: String,
        /// Bundle version: must be higher than every imported policy it replaces.
        #[arg(long)]
        version: u64,
        /// NAME=FILE pairs.
        #[arg(required = true)]
        policies: Vec<String>,
    },
}

/// The policy commands that need no server.
pub fn offline(cmd: &PolicyCmd) -> Option<Result<()>> {
    Some(match cmd {
        PolicyCmd::Keygen { key_id, out } => keygen(key_id, out),
        PolicyCmd::Capture { event_log, measure } => capture(event_log, measure),
        PolicyCmd::Sign {
            key,
            key_id,
            version,
            policies,
        } => sign(key, key_id, *version, policies),
        _ => return None,
    })
}

fn keygen(key_id: &str, out: &std::path::Path) -> Result<()> {
    strata_types::path::validate_name(key_id)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let private = out.join(format!("{key_id}.pk8"));
    if private.exists() {
        bail!(
            "{} exists; refusing to overwrite a release key",
            private.display()
        );
    }
    let (signer, pkcs8) =
        strata_agent::release::ReleaseSigner::generate(key_id).map_err(|e| anyhow!(e))?;
    strata_control::setup::write_private(&private, &pkcs8)?;
    let public = out.join(format!("{key_id}.json"));
    std::fs::write(&public, serde_json::to_vec_pretty(&signer.release_key())?)?;
    eprintln!(
        "private key: {} (0600; keep it offline)\npublic key:  {} (start the server with --policy-release-key {})",
        private.display(),
        public.display(),
        public.display()
    );
    Ok(())
}

fn capture(event_log: &std::path::Path, measure: &[String]) -> Result<()> {
    let log =
        std::fs::read(event_log).with_context(|| format!("cannot read {}", event_log.display()))?;
    let mut agent = Vec::new();
    for m in measure {
        let (name, path) = m
            .split_once('=')
            .ok_or_else(|| anyhow!("--measure takes NAME=PATH, got '{m}'"))?;
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        agent.push(strata_attest::AgentMeasurement {
            name: name.to_string(),
            sha256: strata_attest::hex(
                ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref(),
            ),
        });
    }
    let policy = strata_agent::release::golden_policy(&log, &agent).map_err(|e| anyhow!(e))?;
    println!("{}", serde_json::to_string_pretty(&policy)?);
    Ok(())
}

fn sign(key: &std::path::Path, key_id: &str, version: u64, policies: &[String]) -> Result<()> {
    let pkcs8 = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
    let signer =
        strata_agent::release::ReleaseSigner::from_pkcs8(key_id, &pkcs8).map_err(|e| anyhow!(e))?;
    let mut map = std::collections::BTreeMap::new();
    for p in policies {
        let (name, file) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("policies are NAME=FILE, got '{p}'"))?;
        strata_types::path::validate_name(name)?;
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
        let policy: strata_attest::policy::ReferencePolicy = serde_json::from_str(&text)
            .with_context(|| format!("{file} is not a reference policy"))?;
        policy.validate().map_err(|e| anyhow!("{file}: {e}"))?;
        map.insert(name.to_string(), policy);
    }
    let bundle = signer
        .sign(version, &strata_types::time::now_rfc3339(), map)
        .map_err(|e| anyhow!(e))?;
    println!("{}", serde_json::to_string_pretty(&bundle)?);
    Ok(())
}

fn host_path(name: &str) -> Result<String> {
    strata_types::path::validate_name(name)?;
    Ok(format!("/providers/Strata.Fabric/hosts/{name}"))
}

pub fn run(client: &Client, out: Format, cmd: HostCmd) -> Result<()> {
    let c = client;
    match cmd {
        HostCmd::List => print(
            out,
            &c.call("GET", "/providers/Strata.Fabric/hosts", None)?,
            HOST_COLS,
        ),
        HostCmd::Show { name } => print(out, &c.call("GET", &host_path(&name)?, None)?, HOST_COLS),
        HostCmd::Attest { name, now, timeout } => {
            let before = c.call("GET", &host_path(&name)?, None)?;
            let last = before
                .pointer("/properties/lastAttestation/time")
                .cloned()
                .unwrap_or(Value::Null);
            let v = c.call("POST", &format!("{}/attest", host_path(&name)?), None)?;
            if !now {
                print(out, &v, HOST_COLS);
                return Ok(());
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
            if out == Format::Table {
                eprintln!("waiting for {name}'s next attestation round…");
            }
            loop {
                let h = c.call("GET", &host_path(&name)?, None)?;
                if h.pointer("/properties/lastAttestation/time") != Some(&last)
                    && h.pointer("/properties/lastAttestation/time").is_some()
                {
                    print(
                        out,
                        &h,
                        &[
                            ("Name", "/name"),
                            ("State", "/properties/state"),
                            ("Passed", "/properties/lastAttestation/passed"),
                            ("Time", "/properties/lastAttestation/time"),
                            ("Reason", "/properties/reason"),
                        ],
                    );
                    return Ok(());
                }
                if std::time::Instant::now() > deadline {
                    bail!(
                        "no attestation round from {name} within {timeout} s: is its agent running?"
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
        HostCmd::Cordon { name } => print(
            out,
            &c.call("POST", &format!("{}/cordon", host_path(&name)?), None)?,
            HOST_COLS,
        ),
        HostCmd::Uncordon { name } => print(
            out,
            &c.call("POST", &format!("{}/uncordon", host_path(&name)?), None)?,
            HOST_COLS,
        ),
        HostCmd::Quarantine { name, reason } => print(
            out,
            &c.call(
                "POST",
                &format!("{}/quarantine", host_path(&name)?),
                Some(&json!({ "reason": reason })),
            )?,
            HOST_COLS,
        ),
        HostCmd::Release { name } => print(
            out,
            &c.call("POST", &format!("{}/release", host_path(&name)?), None)?,
            HOST_COLS,
        ),
        HostCmd::Delete { name, yes } => {
            if !yes {
                bail!("deleting a host forgets its TPM identity; add --yes to confirm");
            }
            c.call("DELETE", &host_path(&name)?, None)?;
        }
        HostCmd::Placement { count } => print(
            out,
            &c.call(
                "POST",
                "/providers/Strata.Fabric/placements/preview",
                Some(&json!({ "count": count })),
            )?,
            &[("Placements", "/placements")],
        ),
        HostCmd::JoinToken(t) => match t {
            JoinTokenCmd::Create {
                name,
                expires_in,
                policy,
                allow_development,
                hostname,
            } => {
                strata_types::path::validate_name(&name)?;
                let v = c.call(
                    "PUT",
                    &format!("/providers/Strata.Fabric/joinTokens/{name}"),
                    Some(&json!({ "properties": { "expiresInSecs": expires_in, "policy": policy, "allowDevelopment": allow_development, "hostname": hostname } })),
                )?;
                print(
                    out,
                    &v,
                    &[
                        ("Name", "/name"),
                        ("ExpiresOn", "/properties/expiresOn"),
                        ("Policy", "/properties/policy"),
                        ("JoinToken", "/secretOutput/joinToken"),
                    ],
                );
                if out == Format::Table {
                    eprintln!(
                        "the join token is shown once; on the host put it in a 0600 file and run: strata agent --server {} --server-ca CA.pem --join-token-file FILE",
                        c.profile.endpoint
                    );
                }
            }
            JoinTokenCmd::List => print(
                out,
                &c.call("GET", "/providers/Strata.Fabric/joinTokens", None)?,
                &[
                    ("Name", "/name"),
                    ("ExpiresOn", "/properties/expiresOn"),
                    ("Used", "/properties/used"),
                    ("UsedBy", "/properties/usedBy"),
                ],
            ),
            JoinTokenCmd::Delete { name } => {
                strata_types::path::validate_name(&name)?;
                c.call(
                    "DELETE",
                    &format!("/providers/Strata.Fabric/joinTokens/{name}"),
                    None,
                )?;
            }
        },
        HostCmd::Policy(p) => match p {
            PolicyCmd::Import { file } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let bundle: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", file.display()))?;
                let v = c.call(
                    "POST",
                    "/providers/Strata.Fabric/referencePolicies/import",
                    Some(&bundle),
                )?;
                print(
                    out,
                    &v,
                    &[
                        ("Version", "/version"),
                        ("KeyId", "/keyId"),
                        ("Policies", "/policies"),
                    ],
                );
            }
            PolicyCmd::List => print(
                out,
                &c.call("GET", "/providers/Strata.Fabric/referencePolicies", None)?,
                &[
                    ("Name", "/name"),
                    ("Version", "/properties/version"),
                    ("KeyId", "/properties/keyId"),
                    ("ImportedAt", "/properties/importedAt"),
                ],
            ),
            PolicyCmd::Show { name } => {
                strata_types::path::validate_name(&name)?;
                print(
                    out,
                    &c.call(
                        "GET",
                        &format!("/providers/Strata.Fabric/referencePolicies/{name}"),
                        None,
                    )?,
                    &[("Name", "/name"), ("Version", "/properties/version")],
                )
            }
            other => {
                if let Some(r) = offline(&other) {
                    r?;
                }
            }
        },
    }
    Ok(())
}

#[derive(Args)]
pub struct AgentArgs {
    /// Control-plane URL, e.g. https://10.0.0.1:8443.
    #[arg(long)]
    pub server: String,
    /// PEM file with the control plane's CA certificate.
    #[arg(long)]
    pub server_ca: PathBuf,
    /// File holding the one-time join token (first start only). Or set STRATA_JOIN_TOKEN;
    /// never pass secrets as arguments (other users can read a command line).
    #[arg(long)]
    pub join_token_file: Option<PathBuf>,
    /// TPM to use.
    #[arg(long, default_value = "device:/dev/tpmrm0")]
    pub tcti: String,
    /// Name to register this host under (default: the system host name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Agent state directory.
    #[arg(long, default_value = "/var/lib/strata-agent")]
    pub state_dir: PathBuf,
    /// TCG event log to send.
    #[arg(long, default_value = strata_agent::agent::AgentConfig::HARDWARE_EVENT_LOG)]
    pub event_log: PathBuf,
    /// This is a software TPM: register as a development host.
    #[arg(long)]
    pub dev_tpm: bool,
    /// Measure this binary into every round: NAME=PATH (e.g. qemu=/opt/strata/qemu/bin/qemu-system-x86_64).
    #[arg(long = "measure")]
    pub measure: Vec<String>,
    #[command(flatten)]
    pub vms: VmArgs,
}

/// Which driver runs a host's VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HypervisorArg {
    /// Real VMs: QEMU with OVMF secure boot and a per-VM swtpm (KVM, or TCG with a warning).
    Qemu,
    /// In-process simulation: nothing boots (control-plane tests and demos).
    Sim,
}

/// What makes the host's VM networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkArg {
    /// Real: a bridge per virtual network, a tap per VM interface and the NSGs as one nftables
    /// ruleset (strata-netdp) in this host's network namespace.
    Netdp,
    /// Nothing: VMs get no network interface (simulated hosts).
    Sim,
}

/// How `strata agent` runs the VMs the control plane assigns to this host.
#[derive(Args, Clone, Debug)]
pub struct VmArgs {
    /// The hypervisor driver for this host's VMs.
    #[arg(long, value_enum, default_value = "qemu")]
    pub hypervisor: HypervisorArg,
    /// VMs' private directories (every ancestor must be searchable by others: VMs run as
    /// their own uids).
    #[arg(long, default_value = strata_agent::images::DEFAULT_VM_DIR)]
    pub vm_dir: PathBuf,
    /// Base images: image NAME is IMAGE_DIR/NAME/disk.qcow2 (world-readable); `tiny` is
    /// built here when missing.
    #[arg(long, default_value = strata_agent::images::DEFAULT_IMAGE_DIR)]
    pub image_dir: PathBuf,
    /// Secure-boot signing key (unencrypted PEM, root-only) for the images this host builds;
    /// with --secure-boot-cert. Default: Debian's OVMF snakeoil pair (development only).
    #[arg(long)]
    pub secure_boot_key: Option<PathBuf>,
    /// The signing key's certificate (PEM); --ovmf-vars must trust it.
    #[arg(long)]
    pub secure_boot_cert: Option<PathBuf>,
    /// OVMF variables template copied for each trusted-launch VM (its db must hold the
    /// signing certificate). Default: Debian's snakeoil template.
    #[arg(long, default_value = strata_agent::drivers::OVMF_VARS_SNAKEOIL)]
    pub ovmf_vars: PathBuf,
    /// The VMs' networks. Default: netdp with --hypervisor qemu, sim with --hypervisor sim.
    #[arg(long, value_enum)]
    pub network: Option<NetworkArg>,
}

/// The VM side of a host agent: the driver `args` ask for over the image store.
pub fn vm_host(args: &VmArgs, development: bool) -> Result<strata_agent::vms::VmHost> {
    use strata_agent::drivers::Driver;
    use strata_agent::images::{ImageStore, SigningKey};
    let signing =
        SigningKey::from_options(args.secure_boot_key.clone(), args.secure_boot_cert.clone())?;
    let driver = match args.hypervisor {
        HypervisorArg::Qemu => Driver::qemu(&args.vm_dir, &args.ovmf_vars)
            .map_err(|e| anyhow!(crate::commands::chain(&e)))?,
        HypervisorArg::Sim => {
            eprintln!(
                "strata-agent: WARNING: --hypervisor sim: VMs assigned to this host are simulated; nothing boots"
            );
            Driver::sim()
        }
    };
    if driver.kind == strata_agent::drivers::HypervisorKind::Qemu
        && signing == SigningKey::Snakeoil
        && !development
    {
        eprintln!(
            "strata-agent: WARNING: images built on this host are signed with Debian's snakeoil key,              whose private half is public; give --secure-boot-key/--secure-boot-cert and a matching --ovmf-vars"
        );
    }
    let network = match (args.network, args.hypervisor) {
        (Some(n), _) => n,
        (None, HypervisorArg::Qemu) => NetworkArg::Netdp,
        (None, HypervisorArg::Sim) => NetworkArg::Sim,
    };
    let network: std::sync::Arc<dyn strata_agent::network::HostNetwork> = match network {
        NetworkArg::Netdp => {
            use strata_agent::network::NetdpNetwork;
            let missing = NetdpNetwork::missing();
            if !missing.is_empty() {
                bail!(
                    "the VM network (--network netdp) needs the commands {}: install the Debian packages iproute2 nftables conntrack, or use --network sim (VMs then get no network interface)",
                    missing.join(", ")
                );
            }
            std::sync::Arc::new(NetdpNetwork::current())
        }
        NetworkArg::Sim => {
            if driver.kind == strata_agent::drivers::HypervisorKind::Qemu {
                eprintln!(
                    "strata-agent: WARNING: --network sim: VMs on this host get no network interface"
                );
            }
            std::sync::Arc::new(strata_agent::network::SimNetwork::new())
        }
    };
    Ok(strata_agent::vms::VmHost::new(
        driver.hypervisor,
        std::sync::Arc::new(ImageStore::new(args.image_dir.clone(), signing)),
        strata_agent::vms::VmHostConfig {
            vm_dir: driver.vm_dir,
            ..Default::default()
        },
    )
    .with_network(network))
}

pub fn agent(a: AgentArgs) -> Result<()> {
    let ca = std::fs::read_to_string(&a.server_ca)
        .with_context(|| format!("cannot read {}", a.server_ca.display()))?;
    let hostname = match a.hostname {
        Some(h) => h,
        None => std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .context("cannot read /etc/hostname; pass --hostname")?,
    };
    strata_types::path::validate_name(&hostname)?;
    let mut measured = vec![(
        "strata-agent".to_string(),
        std::env::current_exe().context("cannot find the agent's own binary")?,
    )];
    for m in a.measure {
        let (n, p) = m
            .split_once('=')
            .ok_or_else(|| anyhow!("--measure takes NAME=PATH, got '{m}'"))?;
        measured.push((n.to_string(), PathBuf::from(p)));
    }
    let vms = vm_host(&a.vms, a.dev_tpm)?;
    let cfg = strata_agent::agent::AgentConfig {
        server: a.server.trim_end_matches('/').to_string(),
        server_ca_pem: ca,
        tcti: a.tcti,
        hostname,
        state_dir: a.state_dir,
        development: a.dev_tpm,
        event_log: a.event_log,
        measured_binaries: measured,
        ak_algorithm: Default::default(),
    };
    let mut agent =
        strata_agent::agent::Agent::new(cfg).map_err(|e| anyhow!(crate::commands::chain(&e)))?;
    if !agent.is_registered() {
        let token = match (&a.join_token_file, std::env::var("STRATA_JOIN_TOKEN")) {
            (Some(f), _) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?
                .trim()
                .to_string(),
            (None, Ok(t)) => t.trim().to_string(),
            (None, Err(_)) => bail!(
                "this host is not registered yet: give the join token (from `strata host join-token create`) in --join-token-file FILE or STRATA_JOIN_TOKEN"
            ),
        };
        let host = agent
            .register(&token)
            .map_err(|e| anyhow!(crate::commands::chain(&e)))?;
        eprintln!("strata-agent: registered as {host}");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = tokio::signal::ctrl_c().await;
                });
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    eprintln!(
        "strata-agent: attesting {} every round the control plane asks for; running its VMs on {:?}",
        agent.host().unwrap_or("?"),
        a.vms.hypervisor
    );
    strata_agent::vms::run_with_vms(&mut agent, vms, &stop, std::time::Duration::from_secs(30));
    Ok(())
}
