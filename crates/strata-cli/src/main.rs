//! `strata`: the command-line interface. Resource commands talk to the control plane over
//! HTTPS using a profile (`--profile`, `STRATA_PROFILE`, default `/var/lib/strata/admin-profile.json`);
//! `strata up` / `strata server` run the control plane in the foreground; `strata audit verify`
//! checks a data directory offline.

mod client;
mod commands;
mod devhost;
mod disk;
mod host;
mod image;
mod keyvault;
mod network;
mod output;
mod rootkey;
mod snapshot;
mod vm;

use clap::{Args, Parser, Subcommand};
use output::Format;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a secure-by-default IaaS control plane"
)]
pub struct Cli {
    /// Client profile (endpoint, CA, credentials).
    #[arg(
        long,
        global = true,
        env = "STRATA_PROFILE",
        default_value = "/var/lib/strata/admin-profile.json"
    )]
    pub profile: PathBuf,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "table"
    )]
    pub output: Format,
    /// Subscription for resource-group commands (default: the profile's).
    #[arg(long, global = true, env = "STRATA_SUBSCRIPTION")]
    pub subscription: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Data directory (database, keys, certificates, admin profile).
    #[arg(long, default_value = "/var/lib/strata")]
    pub data_dir: PathBuf,
    /// Address to listen on (HTTPS only).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// PostgreSQL URL for a shared store (default: embedded SQLite in the data directory).
    #[arg(long, env = "STRATA_DATABASE")]
    pub database: Option<String>,
    /// Extra DNS names / IPs for the server certificate.
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// Token issuer URL (default https://LISTEN).
    #[arg(long)]
    pub issuer: Option<String>,
    /// Requests per second allowed per principal.
    #[arg(long, default_value_t = 500.0)]
    pub rate_limit: f64,
    /// Access-token lifetime in seconds.
    #[arg(long, default_value_t = 600)]
    pub token_lifetime: i64,
    /// Rotate the token-signing key after this many days.
    #[arg(long, default_value_t = 30)]
    pub key_rotation_days: i64,
    /// Seconds between host attestation rounds (1-3600).
    #[arg(long, default_value_t = 10)]
    pub attestation_interval: u64,
    /// PEM file of TPM vendor CA certificates that EK certificates must chain to (repeatable).
    #[arg(long = "tpm-ca")]
    pub tpm_ca: Vec<PathBuf>,
    /// Release public key(s) that reference-policy bundles must be signed by (repeatable).
    #[arg(long = "policy-release-key")]
    pub policy_release_key: Vec<PathBuf>,
    /// `strata up` on a machine without a TPM: run a software TPM for the local host, marked
    /// "development (software TPM)" everywhere.
    #[arg(long)]
    pub dev_tpm: bool,
    /// `strata up`: the driver for the local host's VMs. Default (and `qemu`): QEMU when this
    /// machine can run it (root and the compute packages), else the simulator with a warning;
    /// `sim` always simulates (nothing boots, no VM network), for demos and tests.
    #[arg(long, value_enum)]
    pub hypervisor: Option<host::HypervisorArg>,
    #[command(flatten)]
    pub root_key: rootkey::RootKeyArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the control plane and the local host's agent in the foreground.
    Up(ServeArgs),
    /// Run the control plane only.
    Server(ServeArgs),
    /// Sign in as a user and save a profile holding the short-lived token.
    Login(commands::LoginArgs),
    /// Resource groups.
    #[command(subcommand)]
    Group(commands::GroupCmd),
    /// Subscriptions.
    #[command(subcommand, name = "sub")]
    Subscription(commands::SubCmd),
    /// Users.
    #[command(subcommand)]
    User(commands::UserCmd),
    /// Service principals.
    #[command(subcommand)]
    Sp(commands::SpCmd),
    /// Directory groups (of users and service principals).
    #[command(subcommand)]
    Ad(commands::AdCmd),
    /// Roles, assignments, deny assignments and PIM.
    #[command(subcommand)]
    Role(commands::RoleCmd),
    /// Ask the authorization engine for a decision and its reason.
    #[command(subcommand)]
    Authz(commands::AuthzCmd),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(commands::AuditCmd),
    /// Call any API path: `strata api GET /subscriptions`.
    Api(commands::ApiArgs),
    /// The signed-in account.
    #[command(subcommand)]
    Account(commands::AccountCmd),
    /// Fabric hosts: trust state, attestation, join tokens, reference policies.
    #[command(subcommand)]
    Host(host::HostCmd),
    /// Run the host agent: register with a join token, then attest every interval and run
    /// the VMs the control plane assigns to this host.
    Agent(host::AgentArgs),
    /// Disk images: import a raw or qcow2 file as an image resource (list, show, delete);
    /// build the tiny signed platform image on this machine (list --local).
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Virtual machines: create, list, show, start, stop, deallocate, delete, console log.
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// Key vaults and keys: create, rotate, disable, enable, delete, recover, purge; wrap,
    /// unwrap, encrypt, decrypt, sign, verify.
    #[command(subcommand)]
    Keyvault(keyvault::KeyVaultCmd),
    /// Managed disks, encrypted at rest (platform or customer key): create, list, show,
    /// rewrap, delete.
    #[command(subcommand)]
    Disk(disk::DiskCmd),
    /// Encrypted disk snapshots: create (from a VM's OS disk or a disk), list, show, delete,
    /// export the LUKS-encrypted qcow2.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Virtual networks, subnets, peerings, NSGs and rules, NICs, ASGs; flow verify,
    /// effective rules and reachability.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// The control plane's root key on this machine: status, seal it to the TPM, export
    /// the offline recovery copy.
    #[command(subcommand, name = "root-key")]
    RootKey(rootkey::RootKeyCmd),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("STRATA_LOG").unwrap_or_else(|_| "info".into());
    let level = match filter.as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "warn" => tracing::Level::WARN,
        "error" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
