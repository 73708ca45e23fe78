//! `strata disk …`: managed disks, every one encrypted at rest — by the subscription's platform
//! key, or by a key vault key (`--key-vault-key`, which needs wrapKey on that key). No key
//! material is ever shown: `show` names the encryption type and the key version in use.
//! `create --source-snapshot` makes a disk from a snapshot (`strata snapshot`).

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

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
    /// Create an encrypted disk (platform key unless --key-vault-key names a customer key),
    /// empty (--size-gb) or a copy of a snapshot (--source-snapshot).
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// The size in GiB: needed for an empty disk; with --source-snapshot the default is
        /// the snapshot's size.
        #[arg(long = "size-gb")]
        size_gb: Option<u64>,
        /// A snapshot to copy: its name (in the disk's resource group) or its id.
        #[arg(long = "source-snapshot")]
        source_snapshot: Option<String>,
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

/// The body that creates a disk: empty, or a copy of a snapshot. A copy names its encryption
/// only for a customer key; otherwise the control plane's default (the platform key) holds.
fn create_body(
    sub: &str,
    rg: &str,
    size_gb: Option<u64>,
    key_vault_key: Option<String>,
    source_snapshot: Option<&str>,
) -> Result<Value> {
    let mut properties = match (source_snapshot, size_gb) {
        (Some(snapshot), _) => json!({ "creationData": {
            "createOption": "Copy",
            "sourceResourceId": crate::snapshot::snapshot_id(sub, rg, snapshot)?,
        } }),
        (None, Some(_)) => json!({ "encryption": { "type": "EncryptionAtRestWithPlatformKey" } }),
        (None, None) => {
            bail!("give --size-gb for an empty disk, or --source-snapshot to copy a snapshot")
        }
    };
    if let Some(k) = key_vault_key {
        properties["encryption"] =
            json!({ "type": "EncryptionAtRestWithCustomerKey", "keyVaultKeyId": k });
    }
    if let Some(gb) = size_gb {
        properties["diskSizeGB"] = json!(gb);
    }
    Ok(json!({ "properties": properties }))
}

pub fn run(c: &Client, out: Format, sub: &str, cmd: DiskCmd) -> Result<()> {
    match cmd {
        DiskCmd::Create {
            name,
            resource_group,
            size_gb,
            source_snapshot,
            key_vault_key,
        } => {
            let body = create_body(
                sub,
                &resource_group,
                size_gb,
                key_vault_key,
                source_snapshot.as_deref(),
            )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";
    const KEY: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/web/providers/Strata.KeyVault/vaults/kv1/keys/k";

    fn body(size: Option<u64>, key: Option<&str>, snapshot: Option<&str>) -> Result<Value, String> {
        create_body(SUB, "web", size, key.map(str::to_owned), snapshot)
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn create_bodies() {
        let snap = format!(
            "/subscriptions/{SUB}/resourceGroups/web/providers/Strata.Compute/snapshots/s1"
        );
        let platform = json!({ "type": "EncryptionAtRestWithPlatformKey" });
        let customer = json!({ "type": "EncryptionAtRestWithCustomerKey", "keyVaultKeyId": KEY });
        let copy = json!({ "createOption": "Copy", "sourceResourceId": snap });
        assert_eq!(
            body(Some(8), None, None),
            Ok(json!({ "properties": { "diskSizeGB": 8, "encryption": platform } }))
        );
        assert_eq!(
            body(Some(8), Some(KEY), None),
            Ok(json!({ "properties": { "diskSizeGB": 8, "encryption": customer } }))
        );
        assert_eq!(
            body(None, None, Some("s1")),
            Ok(json!({ "properties": { "creationData": copy } }))
        );
        assert_eq!(
            body(Some(20), Some(KEY), Some(&snap)),
            Ok(
                json!({ "properties": { "creationData": copy, "diskSizeGB": 20, "encryption": customer } })
            )
        );
        let err = body(None, None, None).unwrap_err();
        assert!(
            err.contains("--size-gb") && err.contains("--source-snapshot"),
            "{err}"
        );
        assert!(body(None, None, Some("bad name")).is_err());
    }
}
