//! `strata vm …`: virtual machines. Long operations (create, start, stop) wait for the VM to
//! get there, with progress on stderr, unless `--no-wait`.

use anyhow::{Result, bail};
use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::output::{Column, Format, print};

const VM_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("Size", "/properties/hardwareProfile/vmSize"),
    (
        "OsDiskBytes",
        "/properties/storageProfile/osDisk/diskSizeBytes",
    ),
    ("Security", "/properties/securityProfile/securityType"),
    ("Host", "/properties/host"),
    ("Provisioning", "/properties/provisioningState"),
    ("Power", "/properties/powerState"),
    ("Reason", "/properties/failureReason"),
    ("Boot integrity", "/properties/bootIntegrity/status"),
];

#[derive(Clone, Copy, ValueEnum)]
pub enum SecurityType {
    /// UEFI secure boot and a vTPM (the default).
    #[value(name = "TrustedLaunch")]
    TrustedLaunch,
    /// Neither secure boot nor a vTPM.
    #[value(name = "Standard")]
    Standard,
}

#[derive(Subcommand)]
pub enum VmCmd {
    /// Create a VM and wait until it runs (or fails, with the reason).
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// Image to boot: `tiny` (the signed busybox platform image every host builds), or an
        /// imported image resource by name (in the VM's resource group) or id.
        #[arg(long)]
        image: String,
        /// The OS disk's size in GiB (default: the image's size; never smaller).
        #[arg(long = "os-disk-size-gb")]
        os_disk_size_gb: Option<u64>,
        /// Strata_B1 (1 vCPU, 512 MiB), Strata_B2, Strata_D2, Strata_D4, Strata_D8.
        #[arg(long, default_value = "Strata_B1")]
        size: String,
        #[arg(long, value_enum, default_value = "TrustedLaunch")]
        security_type: SecurityType,
        /// Trusted launch without UEFI secure boot.
        #[arg(long)]
        no_secure_boot: bool,
        /// Trusted launch without a vTPM.
        #[arg(long)]
        no_vtpm: bool,
        /// Existing network interfaces (names in the resource group). Without any, like
        /// `az vm create`, the VM gets `NAME-nic` in the resource group's `default-vnet`
        /// (10.0.0.0/16, subnet `default` 10.0.0.0/24; created if missing), with its own
        /// deny-by-default network security group; both are deleted with the VM.
        #[arg(long = "nics", value_delimiter = ',')]
        nics: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// List the VMs in a resource group.
    List {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Show one VM.
    Show {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Start a stopped, deallocated or failed VM.
    Start {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop a VM (ACPI power button, then a hard stop); it keeps its host.
    Stop {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Restart a VM (stop, then start on the same host) and wait until it runs again.
    Restart {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop a VM and release its host (its host-local disk overlay and vTPM state go with it).
    Deallocate {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Delete a VM; its host removes every process and file it had.
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(long)]
        yes: bool,
    },
    /// The tail of the VM's serial console, as its host last reported it.
    ConsoleLog {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
}

#[derive(clap::Args, Clone, Copy)]
pub struct Wait {
    /// Return at once instead of waiting for the VM to get there.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this many seconds (the VM keeps going).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

fn vm_path(sub: &str, rg: &str, name: &str) -> Result<String> {
    strata_types::path::validate_name(rg)?;
    strata_types::path::validate_name(name)?;
    Ok(format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Strata.Compute/virtualMachines/{name}"
    ))
}

fn nic_path(sub: &str, rg: &str, name: &str) -> Result<String> {
    strata_types::path::validate_name(name)?;
    Ok(format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Strata.Network/networkInterfaces/{name}"
    ))
}

/// The default network a VM gets when none is named, as `az vm create` builds one: the
/// resource group's `default-vnet` (created if missing) and a new interface `VM-nic` in its
/// `default` subnet, which gets its own deny-by-default network security group.
fn default_nic(c: &Client, out: Format, sub: &str, rg: &str, vm: &str) -> Result<String> {
    let vnet = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Strata.Network/virtualNetworks/default-vnet"
    );
    let exists = c.call("GET", &vnet, None).is_ok();
    if !exists {
        if out == Format::Table {
            eprintln!(
                "creating virtual network default-vnet (10.0.0.0/16, subnet default 10.0.0.0/24)"
            );
        }
        c.call_with(
            "PUT",
            &vnet,
            Some(&json!({ "properties": {
                "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
                "subnets": [{ "name": "default", "properties": { "addressPrefix": "10.0.0.0/24" } }],
            }})),
            &[("If-None-Match", "*")],
        )?;
    }
    let nic = nic_path(sub, rg, &format!("{vm}-nic"))?;
    if out == Format::Table {
        eprintln!("creating network interface {vm}-nic (with its own deny-by-default NSG)");
    }
    c.call_with(
        "PUT",
        &nic,
        Some(&json!({ "properties": { "subnet": { "id": format!("{vnet}/subnets/default") } } })),
        &[("If-None-Match", "*")],
    )?;
    Ok(nic)
}

fn prop<'a>(v: &'a Value, field: &str) -> &'a str {
    v.pointer(&format!("/properties/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Polls the VM until its power state is `target` (and provisioning has settled) or it failed.
fn wait_for(c: &Client, out: Format, path: &str, target: &str, wait: Wait) -> Result<Value> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let v = c.call("GET", path, None)?;
        let (provisioning, power) = (prop(&v, "provisioningState"), prop(&v, "powerState"));
        if provisioning == "Failed" {
            print(out, &v, VM_COLS);
            bail!(
                "the VM failed: {}{}",
                prop(&v, "failureReason"),
                match prop(&v, "failureDetail") {
                    "" => String::new(),
                    d => format!(" ({d})"),
                }
            );
        }
        if provisioning == "Succeeded" && power == target {
            return Ok(v);
        }
        let now = format!("{provisioning}/{power}");
        if out == Format::Table && now != last {
            eprintln!(
                "{:>4} s  {} {now}",
                started.elapsed().as_secs(),
                v["name"].as_str().unwrap_or("")
            );
            last = now;
        }
        if started.elapsed() > Duration::from_secs(wait.timeout) {
            bail!(
                "gave up after {} s with the VM at {provisioning}/{power}; it keeps going: see `strata vm show`",
                wait.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn finish(c: &Client, out: Format, path: &str, v: Value, target: &str, wait: Wait) -> Result<()> {
    let v = if wait.no_wait {
        v
    } else {
        wait_for(c, out, path, target, wait)?
    };
    print(out, &v, VM_COLS);
    Ok(())
}

pub fn run(c: &Client, out: Format, sub: &str, cmd: VmCmd) -> Result<()> {
    match cmd {
        VmCmd::Create {
            name,
            resource_group,
            image,
            os_disk_size_gb,
            size,
            security_type,
            no_secure_boot,
            no_vtpm,
            nics,
            wait,
        } => {
            let path = vm_path(sub, &resource_group, &name)?;
            // A platform image by name; anything else is an image resource.
            let mut storage = if image == "tiny" {
                json!({ "image": image })
            } else if image.starts_with('/') {
                json!({ "imageReference": { "id": image } })
            } else {
                strata_types::path::validate_name(&image)?;
                json!({ "imageReference": { "id": format!(
                    "/subscriptions/{sub}/resourceGroups/{resource_group}/providers/Strata.Compute/images/{image}"
                ) } })
            };
            if let Some(gb) = os_disk_size_gb {
                storage["osDisk"] = json!({ "diskSizeGB": gb });
            }
            // The interface made here goes with the VM (deleteOption Delete); named ones stay.
            let mut made_nic = None;
            let nic_refs: Vec<Value> = if nics.is_empty() {
                let id = default_nic(c, out, sub, &resource_group, &name)?;
                made_nic = Some(id.clone());
                vec![json!({ "id": id, "properties": { "deleteOption": "Delete" } })]
            } else {
                nics.iter()
                    .map(|n| nic_path(sub, &resource_group, n).map(|id| json!({ "id": id })))
                    .collect::<Result<_>>()?
            };
            let security = match security_type {
                SecurityType::TrustedLaunch => json!({
                    "securityType": "TrustedLaunch",
                    "uefiSettings": { "secureBootEnabled": !no_secure_boot, "vTpmEnabled": !no_vtpm },
                }),
                SecurityType::Standard => {
                    if no_secure_boot || no_vtpm {
                        bail!("--no-secure-boot and --no-vtpm apply to TrustedLaunch only");
                    }
                    json!({ "securityType": "Standard" })
                }
            };
            let body = json!({ "properties": {
                "hardwareProfile": { "vmSize": size },
                "storageProfile": storage,
                "securityProfile": security,
                "networkProfile": {
                    "networkInterfaces": nic_refs,
                },
            }});
            // Create only: an existing VM of that name is an error, not an update.
            let v = match c.call_with("PUT", &path, Some(&body), &[("If-None-Match", "*")]) {
                Ok(v) => v,
                Err(e) => {
                    // Refused (no Trusted host, quota, …): the interface made for it, and its
                    // own NSG with it, would otherwise stay behind and block a retry.
                    if let Some(nic) = made_nic
                        && let Err(d) = c.call("DELETE", &nic, None)
                    {
                        eprintln!("strata: could not remove the interface made for the VM: {d:#}");
                    }
                    return Err(e);
                }
            };
            finish(c, out, &path, v, "running", wait)
        }
        VmCmd::List { resource_group } => {
            strata_types::path::validate_name(&resource_group)?;
            let v = c.call(
                "GET",
                &format!(
                    "/subscriptions/{sub}/resourceGroups/{resource_group}/providers/Strata.Compute/virtualMachines"
                ),
                None,
            )?;
            print(out, &v, VM_COLS);
            Ok(())
        }
        VmCmd::Show {
            name,
            resource_group,
        } => {
            print(
                out,
                &c.call("GET", &vm_path(sub, &resource_group, &name)?, None)?,
                VM_COLS,
            );
            Ok(())
        }
        VmCmd::Start {
            name,
            resource_group,
            wait,
        } => {
            let path = vm_path(sub, &resource_group, &name)?;
            let v = c.call("POST", &format!("{path}/start"), None)?;
            finish(c, out, &path, v, "running", wait)
        }
        VmCmd::Stop {
            name,
            resource_group,
            wait,
        } => {
            let path = vm_path(sub, &resource_group, &name)?;
            let v = c.call("POST", &format!("{path}/stop"), None)?;
            finish(c, out, &path, v, "stopped", wait)
        }
        VmCmd::Restart {
            name,
            resource_group,
            wait,
        } => {
            let path = vm_path(sub, &resource_group, &name)?;
            let v = c.call("POST", &format!("{path}/restart"), None)?;
            finish(c, out, &path, v, "running", wait)
        }
        VmCmd::Deallocate {
            name,
            resource_group,
        } => {
            let path = vm_path(sub, &resource_group, &name)?;
            print(
                out,
                &c.call("POST", &format!("{path}/deallocate"), None)?,
                VM_COLS,
            );
            Ok(())
        }
        VmCmd::Delete {
            name,
            resource_group,
            yes,
        } => {
            if !yes {
                bail!("deleting a VM removes it and its files on the host; add --yes to confirm");
            }
            c.call("DELETE", &vm_path(sub, &resource_group, &name)?, None)?;
            Ok(())
        }
        VmCmd::ConsoleLog {
            name,
            resource_group,
        } => {
            let path = vm_path(sub, &resource_group, &name)?;
            let v = c.call("POST", &format!("{path}/retrieveBootDiagnosticsData"), None)?;
            match out {
                Format::Json => print(out, &v, &[]),
                _ => print!("{}", v["consoleTail"].as_str().unwrap_or("")),
            }
            Ok(())
        }
    }
}
