//! `strata disk …`: managed disks, every one encrypted at rest — by the subscription's platform
//! key, or by a key vault key (`--key-vault-key`, which needs wrapKey on that key). No key
//! material is ever shown: `show` names the encryption type and the key version in use.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::client::Client;
use crate::output::{Column, Format, print};

const DISK_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("SizeGB", "/properties/diskSizeGB"),
    ("Encryption", "/properties/encryption/type"),
    ("KeyVersion", "/properties/encryption/keyVersion"),
    ("State", "/properties/diskState"),
    ("ManagedBy", "/properties/managedBy"),
];

#[derive(Subcommand)]
pub enum DiskCmd {
    /// Create an encrypted disk (platform key unless --key-vault-key names a customer key).
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(long = "size-gb")]
        size_gb: u64,
        /// A key vault key's id (…/providers/Strata.KeyVault/vaults/V/keys/K) to wrap the
        /// disk's key with: EncryptionAtRestWithCustomerKey.
        #[arg(long = "key-vault-key")]
        key_vault_key: Option<String>,
    },
    /// List the disks in a resource group.
    List {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Show one disk: size, encryption type, key version, state.
    Show {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Reseal the disk's key under its customer key's current version (after a rotation).
    Rewrap {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Delete a disk (refused while it is a VM's OS disk).
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
}

fn disk_path(sub: &str, rg: &str, name: &str) -> Result<String> {
    strata_types::path::validate_name(rg)?;
    strata_types::path::validate_name(name)?;
    Ok(format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Strata.Compute/disks/{name}"
    ))
}

pub fn run(c: &Client, out: Format, sub: &str, cmd: DiskCmd) -> Result<()> {
    match cmd {
        DiskCmd::Create {
            name,
            resource_group,
            size_gb,
            key_vault_key,
        } => {
            let encryption = match key_vault_key {
                Some(k) => json!({ "type": "EncryptionAtRestWithCustomerKey", "keyVaultKeyId": k }),
                None => json!({ "type": "EncryptionAtRestWithPlatformKey" }),
            };
            let body = json!({ "properties": { "diskSizeGB": size_gb, "encryption": encryption } });
            let path = disk_path(sub, &resource_group, &name)?;
            let v = c.call_with("PUT", &path, Some(&body), &[("If-None-Match", "*")])?;
            print(out, &v, DISK_COLS);
        }
        DiskCmd::List { resource_group } => {
            strata_types::path::validate_name(&resource_group)?;
            let v = c.call(
                "GET",
                &format!(
                    "/subscriptions/{sub}/resourceGroups/{resource_group}/providers/Strata.Compute/disks"
                ),
                None,
            )?;
            print(out, &v, DISK_COLS);
        }
        DiskCmd::Show {
            name,
            resource_group,
        } => {
            let v = c.call("GET", &disk_path(sub, &resource_group, &name)?, None)?;
            print(out, &v, DISK_COLS);
        }
        DiskCmd::Rewrap {
            name,
            resource_group,
        } => {
            let path = format!("{}/rewrapKey", disk_path(sub, &resource_group, &name)?);
            let v = c.call("POST", &path, Some(&json!({})))?;
            print(out, &v, DISK_COLS);
        }
        DiskCmd::Delete {
            name,
            resource_group,
        } => {
            c.call("DELETE", &disk_path(sub, &resource_group, &name)?, None)?;
        }
    }
    Ok(())
}
