//! `strata keyvault …`: key vaults and their keys — lifecycle (create, rotate, disable, enable,
//! soft delete, recover, purge) and the data plane (wrap, unwrap, encrypt, decrypt, sign,
//! verify). Secrets to operate on are read from a file or stdin, never from the command line.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::io::Read as _;
use std::path::PathBuf;

use crate::client::Client;
use crate::output::{Column, Format, print};

const VAULT_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("RetentionDays", "/properties/softDeleteRetentionInDays"),
    ("PurgeProtection", "/properties/enablePurgeProtection"),
];

const DELETED_VAULT_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("Deleted", "/properties/deletionDate"),
    ("ScheduledPurge", "/properties/scheduledPurgeDate"),
    ("PurgeProtection", "/properties/purgeProtectionEnabled"),
];

const KEY_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("Kty", "/properties/kty"),
    ("Enabled", "/properties/enabled"),
    ("Version", "/properties/currentVersion"),
    ("Deleted", "/properties/deletedDate"),
    ("PurgeAt", "/properties/scheduledPurgeDate"),
];

const RESULT_COLS: &[Column<'static>] = &[("Kid", "/kid"), ("Value", "/value")];

#[derive(Subcommand)]
pub enum KeyVaultCmd {
    /// Create a key vault (purge protection on unless --no-purge-protection).
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// Days a deleted key stays recoverable (7-90).
        #[arg(long, default_value_t = 90)]
        retention_days: u32,
        /// Allow purging deleted keys before their retention ends (cannot be undone later).
        #[arg(long)]
        no_purge_protection: bool,
    },
    /// List the key vaults in a resource group.
    List {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Show one key vault.
    Show {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Delete a key vault: soft delete. Its keys are frozen (and disks under them locked)
    /// until it is recovered; it is purged with them after its retention.
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Bring back a soft-deleted key vault with its keys.
    Recover {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Purge a soft-deleted key vault and its keys for good (refused under purge protection
    /// before its scheduled purge date).
    Purge {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// List the soft-deleted key vaults in a resource group.
    ListDeleted {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Keys in a vault.
    #[command(subcommand)]
    Key(KeyCmd),
}

#[derive(Args, Clone)]
pub struct KeyRef {
    #[arg(long)]
    vault: String,
    #[arg(short = 'g', long = "resource-group")]
    resource_group: String,
    #[arg(short = 'n', long)]
    name: String,
}

#[derive(Args, Clone)]
pub struct Input {
    /// File holding the bytes to operate on ('-' for stdin). For unwrap and decrypt: the
    /// base64url `value` that wrap or encrypt printed.
    #[arg(long)]
    value_file: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Kty {
    /// AES-256-GCM: wrap, unwrap, encrypt, decrypt.
    #[value(name = "oct")]
    Oct,
    /// ECDSA P-256: sign, verify.
    #[value(name = "EC")]
    Ec,
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Create a key (version 1).
    Create {
        #[command(flatten)]
        key: KeyRef,
        #[arg(long, value_enum, default_value = "oct")]
        kty: Kty,
        /// Rotate to a new version every N days.
        #[arg(long)]
        rotate_every_days: Option<u32>,
    },
    /// List a vault's keys.
    List {
        #[arg(long)]
        vault: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// Include soft-deleted keys.
        #[arg(long)]
        include_deleted: bool,
    },
    Show(KeyRef),
    /// Make a new current version; older versions still decrypt and unwrap.
    Rotate(KeyRef),
    /// Refuse every cryptographic operation with the key until enabled.
    Disable(KeyRef),
    Enable(KeyRef),
    /// Soft-delete: recoverable until the vault's retention ends.
    Delete(KeyRef),
    Recover(KeyRef),
    /// Remove a soft-deleted key for good (refused under purge protection).
    Purge(KeyRef),
    /// A key's rotation policy (Azure's shape): when the key sweep rotates it, and when its
    /// versions expire.
    #[command(subcommand, name = "rotation-policy")]
    RotationPolicy(RotationPolicyCmd),
    /// Wrap a 32-byte key.
    Wrap {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        input: Input,
    },
    Unwrap {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        input: Input,
    },
    Encrypt {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        input: Input,
    },
    Decrypt {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        input: Input,
    },
    /// Sign a message (ES256; the service hashes it with SHA-256).
    Sign {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        input: Input,
    },
    /// Verify a signature over the message in --value-file.
    Verify {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        input: Input,
        /// The base64url signature that `sign` printed.
        #[arg(long)]
        signature: String,
        /// The key version that signed (`…/keys/K/VERSION`, as `sign` printed); default current.
        #[arg(long)]
        kid: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum RotationPolicyCmd {
    /// Show a key's rotation policy.
    Show(KeyRef),
    /// Replace a key's rotation policy: with --value (the policy as JSON, from a file or '-'
    /// for stdin), or built from the flags (ISO 8601 durations such as P90D, P1Y, PT12H).
    /// No flags and no --value removes the policy.
    Update {
        #[command(flatten)]
        key: KeyRef,
        /// The whole policy as JSON: {"lifetimeActions":[{"trigger":{"timeAfterCreate":"P90D"},
        /// "action":{"type":"Rotate"}}],"attributes":{"expiryTime":"P1Y"}}.
        #[arg(long, conflicts_with_all = ["rotate_after", "rotate_before_expiry", "expiry_time", "notify_before_expiry"])]
        value: Option<PathBuf>,
        /// Rotate once the current version is this old (timeAfterCreate).
        #[arg(long)]
        rotate_after: Option<String>,
        /// Rotate this long before the current version expires (timeBeforeExpiry; needs
        /// --expiry-time).
        #[arg(long)]
        rotate_before_expiry: Option<String>,
        /// Each new version expires this long after it is made (expiryTime).
        #[arg(long)]
        expiry_time: Option<String>,
        /// Notify this long before expiry (recorded and shown; no notification channel yet).
        #[arg(long)]
        notify_before_expiry: Option<String>,
    },
}

/// The policy the flags describe, in Azure's shape (`None`: no policy).
fn policy_from_flags(
    rotate_after: Option<String>,
    rotate_before_expiry: Option<String>,
    expiry_time: Option<String>,
    notify_before_expiry: Option<String>,
) -> Value {
    let mut actions = Vec::new();
    if let Some(d) = rotate_after {
        actions
            .push(json!({ "trigger": { "timeAfterCreate": d }, "action": { "type": "Rotate" } }));
    }
    if let Some(d) = rotate_before_expiry {
        actions
            .push(json!({ "trigger": { "timeBeforeExpiry": d }, "action": { "type": "Rotate" } }));
    }
    if let Some(d) = notify_before_expiry {
        actions
            .push(json!({ "trigger": { "timeBeforeExpiry": d }, "action": { "type": "Notify" } }));
    }
    if actions.is_empty() && expiry_time.is_none() {
        return Value::Null;
    }
    json!({ "lifetimeActions": actions, "attributes": { "expiryTime": expiry_time } })
}

fn vault_path(sub: &str, rg: &str, name: &str) -> Result<String> {
    strata_types::path::validate_name(rg)?;
    strata_types::path::validate_name(name)?;
    Ok(format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Strata.KeyVault/vaults/{name}"
    ))
}

fn key_path(sub: &str, k: &KeyRef) -> Result<String> {
    strata_types::path::validate_name(&k.name)?;
    Ok(format!(
        "{}/keys/{}",
        vault_path(sub, &k.resource_group, &k.vault)?,
        k.name
    ))
}

fn read_input(input: &Input) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if input.value_file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading stdin")?;
    } else {
        let mut f = std::fs::File::open(&input.value_file)
            .with_context(|| format!("opening {}", input.value_file.display()))?;
        f.read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", input.value_file.display()))?;
    }
    Ok(bytes)
}

/// The base64url text in a file (as wrap/encrypt printed it), whitespace trimmed.
fn read_text(input: &Input) -> Result<String> {
    let bytes = read_input(input)?;
    let text = std::str::from_utf8(&bytes).context("the value file is not base64url text")?;
    Ok(text.trim().to_string())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn run(c: &Client, out: Format, sub: &str, cmd: KeyVaultCmd) -> Result<()> {
    match cmd {
        KeyVaultCmd::Create {
            name,
            resource_group,
            retention_days,
            no_purge_protection,
        } => {
            let body = json!({ "properties": {
                "softDeleteRetentionInDays": retention_days,
                "enablePurgeProtection": !no_purge_protection,
            }});
            let path = vault_path(sub, &resource_group, &name)?;
            let v = c.call_with("PUT", &path, Some(&body), &[("If-None-Match", "*")])?;
            print(out, &v, VAULT_COLS);
        }
        KeyVaultCmd::List { resource_group } => {
            strata_types::path::validate_name(&resource_group)?;
            let v = c.call(
                "GET",
                &format!(
                    "/subscriptions/{sub}/resourceGroups/{resource_group}/providers/Strata.KeyVault/vaults"
                ),
                None,
            )?;
            print(out, &v, VAULT_COLS);
        }
        KeyVaultCmd::Show {
            name,
            resource_group,
        } => {
            let v = c.call("GET", &vault_path(sub, &resource_group, &name)?, None)?;
            print(out, &v, VAULT_COLS);
        }
        KeyVaultCmd::Delete {
            name,
            resource_group,
        } => {
            c.call("DELETE", &vault_path(sub, &resource_group, &name)?, None)?;
            eprintln!(
                "key vault {name} soft-deleted: its keys are frozen until 'strata keyvault recover -n {name} -g {resource_group}'"
            );
        }
        KeyVaultCmd::Recover {
            name,
            resource_group,
        } => {
            let v = c.call(
                "PUT",
                &vault_path(sub, &resource_group, &name)?,
                Some(&json!({ "properties": { "createMode": "recover" } })),
            )?;
            print(out, &v, VAULT_COLS);
        }
        KeyVaultCmd::Purge {
            name,
            resource_group,
        } => {
            strata_types::path::validate_name(&resource_group)?;
            strata_types::path::validate_name(&name)?;
            c.call(
                "POST",
                &format!(
                    "/subscriptions/{sub}/resourceGroups/{resource_group}/providers/Strata.KeyVault/deletedVaults/{name}/purge"
                ),
                Some(&json!({})),
            )?;
        }
        KeyVaultCmd::ListDeleted { resource_group } => {
            strata_types::path::validate_name(&resource_group)?;
            let v = c.call(
                "GET",
                &format!(
                    "/subscriptions/{sub}/resourceGroups/{resource_group}/providers/Strata.KeyVault/deletedVaults"
                ),
                None,
            )?;
            print(out, &v, DELETED_VAULT_COLS);
        }
        KeyVaultCmd::Key(k) => run_key(c, out, sub, k)?,
    }
    Ok(())
}

fn action(c: &Client, out: Format, sub: &str, k: &KeyRef, action: &str) -> Result<()> {
    let v = c.call(
        "POST",
        &format!("{}/{action}", key_path(sub, k)?),
        Some(&json!({})),
    )?;
    if !v.is_null() {
        print(out, &v, KEY_COLS);
    }
    Ok(())
}

fn crypto(c: &Client, out: Format, sub: &str, k: &KeyRef, op: &str, body: Value) -> Result<()> {
    let v = c.call("POST", &format!("{}/{op}", key_path(sub, k)?), Some(&body))?;
    print(out, &v, RESULT_COLS);
    Ok(())
}

fn run_key(c: &Client, out: Format, sub: &str, cmd: KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::Create {
            key,
            kty,
            rotate_every_days,
        } => {
            let kty = match kty {
                Kty::Oct => "oct",
                Kty::Ec => "EC",
            };
            let mut props = json!({ "kty": kty });
            if let (Some(days), Some(o)) = (rotate_every_days, props.as_object_mut()) {
                o.insert("rotationPolicy".into(), json!({ "rotateEveryDays": days }));
            }
            let v = c.call_with(
                "PUT",
                &key_path(sub, &key)?,
                Some(&json!({ "properties": props })),
                &[("If-None-Match", "*")],
            )?;
            print(out, &v, KEY_COLS);
        }
        KeyCmd::List {
            vault,
            resource_group,
            include_deleted,
        } => {
            let mut path = format!("{}/keys", vault_path(sub, &resource_group, &vault)?);
            if include_deleted {
                path.push_str("?includeDeleted=true");
            }
            print(out, &c.call("GET", &path, None)?, KEY_COLS);
        }
        KeyCmd::Show(k) => print(out, &c.call("GET", &key_path(sub, &k)?, None)?, KEY_COLS),
        KeyCmd::Rotate(k) => action(c, out, sub, &k, "rotate")?,
        KeyCmd::Disable(k) => action(c, out, sub, &k, "disable")?,
        KeyCmd::Enable(k) => action(c, out, sub, &k, "enable")?,
        KeyCmd::Recover(k) => action(c, out, sub, &k, "recover")?,
        KeyCmd::Purge(k) => action(c, out, sub, &k, "purge")?,
        KeyCmd::RotationPolicy(RotationPolicyCmd::Show(k)) => {
            let v = c.call("GET", &key_path(sub, &k)?, None)?;
            print(out, &v["properties"]["rotationPolicy"], &[]);
        }
        KeyCmd::RotationPolicy(RotationPolicyCmd::Update {
            key,
            value,
            rotate_after,
            rotate_before_expiry,
            expiry_time,
            notify_before_expiry,
        }) => {
            let policy = match value {
                Some(file) => {
                    let bytes = read_input(&Input { value_file: file })?;
                    serde_json::from_slice::<Value>(&bytes)
                        .context("--value must be the rotation policy as JSON")?
                }
                None => policy_from_flags(
                    rotate_after,
                    rotate_before_expiry,
                    expiry_time,
                    notify_before_expiry,
                ),
            };
            // Replace, not merge (as `az keyvault key rotation-policy update`): read, change
            // the policy, write back under If-Match.
            let path = key_path(sub, &key)?;
            let mut v = c.call("GET", &path, None)?;
            let etag = v["etag"].as_str().unwrap_or("*").to_string();
            v["properties"]["rotationPolicy"] = policy;
            let v = c.call_with(
                "PUT",
                &path,
                Some(&json!({ "properties": v["properties"] })),
                &[("If-Match", &etag)],
            )?;
            print(out, &v["properties"]["rotationPolicy"], &[]);
        }
        KeyCmd::Delete(k) => {
            let v = c.call("DELETE", &key_path(sub, &k)?, None)?;
            print(out, &v, KEY_COLS);
        }
        KeyCmd::Wrap { key, input } => {
            let bytes = read_input(&input)?;
            if bytes.len() != 32 {
                bail!(
                    "wrap takes a 32-byte key; the file holds {} bytes",
                    bytes.len()
                );
            }
            crypto(
                c,
                out,
                sub,
                &key,
                "wrapKey",
                json!({ "alg": "A256GCM", "value": b64(&bytes) }),
            )?;
        }
        KeyCmd::Encrypt { key, input } => {
            let bytes = read_input(&input)?;
            crypto(
                c,
                out,
                sub,
                &key,
                "encrypt",
                json!({ "alg": "A256GCM", "value": b64(&bytes) }),
            )?;
        }
        KeyCmd::Unwrap { key, input } => {
            let text = read_text(&input)?;
            crypto(
                c,
                out,
                sub,
                &key,
                "unwrapKey",
                json!({ "alg": "A256GCM", "value": text }),
            )?;
        }
        KeyCmd::Decrypt { key, input } => {
            let text = read_text(&input)?;
            crypto(
                c,
                out,
                sub,
                &key,
                "decrypt",
                json!({ "alg": "A256GCM", "value": text }),
            )?;
        }
        KeyCmd::Sign { key, input } => {
            let bytes = read_input(&input)?;
            crypto(
                c,
                out,
                sub,
                &key,
                "sign",
                json!({ "alg": "ES256", "value": b64(&bytes) }),
            )?;
        }
        KeyCmd::Verify {
            key,
            input,
            signature,
            kid,
        } => {
            let bytes = read_input(&input)?;
            let mut body = json!({ "alg": "ES256", "message": b64(&bytes), "value": signature });
            if let (Some(kid), Some(o)) = (kid, body.as_object_mut()) {
                o.insert("kid".into(), json!(kid));
            }
            crypto(c, out, sub, &key, "verify", body)?;
        }
    }
    Ok(())
}
