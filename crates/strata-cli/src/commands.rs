//! Every CLI command: argument shapes and what each sends to the API.

use crate::client::{Client, agent_for, load_profile, request_token};
use crate::output::{Column, Format, print};
use crate::{Cli, Command, ServeArgs};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;

const RG_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("Location", "/location"),
    ("State", "/properties/provisioningState"),
];
const SUB_COLS: &[Column<'static>] = &[
    ("SubscriptionId", "/name"),
    ("DisplayName", "/properties/displayName"),
    ("State", "/properties/state"),
];
const USER_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("ObjectId", "/properties/objectId"),
    ("Enabled", "/properties/accountEnabled"),
    ("MFA", "/properties/mfaEnabled"),
];
const SP_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("AppId", "/properties/appId"),
    ("ObjectId", "/properties/objectId"),
    ("Enabled", "/properties/accountEnabled"),
];
const GROUP_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("ObjectId", "/properties/objectId"),
    ("Members", "/properties/members"),
];
const ROLE_COLS: &[Column<'static>] = &[
    ("RoleName", "/properties/roleName"),
    ("Id", "/name"),
    ("Type", "/properties/roleType"),
    ("Privileged", "/properties/privileged"),
];
const RA_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("Principal", "/properties/principalId"),
    ("Role", "/properties/roleName"),
    ("Scope", "/properties/scope"),
];
const DENY_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("DenyAssignmentName", "/properties/denyAssignmentName"),
    ("Scope", "/properties/scope"),
    ("Principals", "/properties/principals"),
];
const ELIG_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("Principal", "/properties/principalId"),
    ("Role", "/properties/roleName"),
    ("Scope", "/properties/scope"),
    ("MaxSecs", "/properties/maxDurationSecs"),
];
const ACT_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("Role", "/properties/roleName"),
    ("Scope", "/properties/scope"),
    ("Ends", "/properties/endDateTime"),
];
const AUDIT_COLS: &[Column<'static>] = &[
    ("Seq", "/seq"),
    ("Time", "/entry/time"),
    ("Principal", "/entry/principalName"),
    ("Category", "/entry/category"),
    ("Action", "/entry/action"),
    ("Outcome", "/entry/outcome"),
    ("Status", "/entry/status"),
    ("Scope", "/entry/scope"),
];

#[derive(Args)]
pub struct LoginArgs {
    /// User name (for a user sign-in).
    #[arg(short = 'u', long, required_unless_present = "service_principal")]
    pub username: Option<String>,
    /// Sign in as a service principal: the client id; the secret comes from standard input
    /// (--password-stdin) or STRATA_CLIENT_SECRET. The profile then keeps the secret (0600).
    #[arg(
        long = "service-principal",
        value_name = "CLIENT_ID",
        conflicts_with = "username"
    )]
    pub service_principal: Option<String>,
    /// Current TOTP code, for accounts with MFA.
    #[arg(long)]
    pub totp: Option<String>,
    /// Where to write the signed-in profile (mode 0600).
    #[arg(long)]
    pub out: PathBuf,
    /// Read the password from standard input (otherwise from STRATA_PASSWORD).
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Subcommand)]
pub enum GroupCmd {
    /// Create or update a resource group.
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'l', long, default_value = "local")]
        location: String,
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    Show {
        #[arg(short = 'n', long)]
        name: String,
    },
    List,
    /// Delete a resource group and everything in it.
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum SubCmd {
    List,
    Show {
        #[arg(short = 'n', long)]
        name: String,
    },
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        display_name: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum UserCmd {
    /// Create a user; the password is read from standard input or STRATA_PASSWORD.
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    Show {
        #[arg(short = 'n', long)]
        name: String,
    },
    List,
    Delete {
        #[arg(short = 'n', long)]
        name: String,
    },
    Disable {
        #[arg(short = 'n', long)]
        name: String,
    },
    Enable {
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Refuse every token issued to the user until now.
    Revoke {
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Enrol TOTP MFA; prints the secret once.
    MfaEnable {
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum SpCmd {
    /// Create a service principal and a client secret (printed once).
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long, default_value_t = 180)]
        years_days: u32,
    },
    Show {
        #[arg(short = 'n', long)]
        name: String,
    },
    List,
    Delete {
        #[arg(short = 'n', long)]
        name: String,
    },
    Disable {
        #[arg(short = 'n', long)]
        name: String,
    },
    Enable {
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Refuse every token issued to the service principal until now.
    Revoke {
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Add another client secret (printed once).
    AddSecret {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long, default_value_t = 180)]
        days: u32,
    },
    /// Register a certificate (PEM file) for client-assertion sign-in.
    AddCert {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        cert_file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AdCmd {
    #[command(subcommand)]
    Group(AdGroupCmd),
}

#[derive(Subcommand)]
pub enum AdGroupCmd {
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    Show {
        #[arg(short = 'n', long)]
        name: String,
    },
    List,
    Delete {
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Add a member (object id or user/service-principal name).
    MemberAdd {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        member: String,
    },
    MemberRemove {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        member: String,
    },
}

#[derive(Subcommand)]
pub enum RoleCmd {
    /// List role definitions (built-in and custom).
    List,
    Show {
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Create a custom role from a JSON file with roleName, permissions, assignableScopes.
    Create {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        id: Option<String>,
    },
    Delete {
        #[arg(long)]
        id: String,
    },
    #[command(subcommand)]
    Assignment(AssignmentCmd),
    #[command(subcommand)]
    Deny(DenyCmd),
    #[command(subcommand)]
    Eligible(EligibleCmd),
    /// Activate an eligible role for yourself (PIM).
    Activate {
        #[arg(long)]
        role: String,
        #[arg(long)]
        scope: String,
        #[arg(long)]
        justification: String,
        /// Duration, e.g. 30m, 2h (at most the eligibility's maximum, 8h by default).
        #[arg(long, default_value = "1h")]
        duration: String,
    },
}

#[derive(Subcommand)]
pub enum AssignmentCmd {
    Create {
        /// Object id, or a user / service-principal name.
        #[arg(long)]
        assignee: String,
        /// Role name or id.
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "/")]
        scope: String,
        #[arg(long)]
        name: Option<String>,
    },
    List {
        #[arg(long, default_value = "/")]
        scope: String,
    },
    Delete {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "/")]
        scope: String,
    },
}

#[derive(Subcommand)]
pub enum DenyCmd {
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        scope: String,
        #[arg(long, value_delimiter = ',')]
        actions: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        not_actions: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        data_actions: Vec<String>,
        /// Object ids or names; `Everyone` for all principals.
        #[arg(long, value_delimiter = ',', required = true)]
        principals: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        exclude_principals: Vec<String>,
        /// Apply only at the scope itself, not below it.
        #[arg(long)]
        do_not_apply_to_child_scopes: bool,
    },
    List {
        #[arg(long, default_value = "/")]
        scope: String,
    },
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        scope: String,
    },
}

#[derive(Subcommand)]
pub enum EligibleCmd {
    Create {
        #[arg(long)]
        assignee: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        scope: String,
        /// Longest activation, e.g. 8h.
        #[arg(long, default_value = "8h")]
        max_duration: String,
    },
    List {
        #[arg(long, default_value = "/")]
        scope: String,
    },
    Delete {
        #[arg(long)]
        name: String,
        #[arg(long)]
        scope: String,
    },
}

#[derive(Subcommand)]
pub enum AuthzCmd {
    /// Would PRINCIPAL be allowed ACTION at SCOPE? Prints the decision and the reason.
    Check {
        #[arg(long)]
        principal: String,
        #[arg(long)]
        action: String,
        #[arg(long)]
        scope: String,
        #[arg(long)]
        data_action: bool,
    },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// List audit entries (newest first page by default).
    List {
        #[arg(long)]
        from: Option<u64>,
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Only entries whose action contains this text, case-insensitively (e.g.
        /// `nearExpiry` for key-expiry notices, `keyRelease`, `snapshots`), among the page
        /// read (--limit up to 1000; page with --from).
        #[arg(long)]
        action: Option<String>,
    },
    /// Show the latest signed checkpoint.
    Checkpoint,
    /// Verify a data directory's audit log offline against its signed checkpoints.
    Verify {
        #[arg(long, default_value = "/var/lib/strata")]
        data_dir: PathBuf,
        /// Base64 Ed25519 public key to trust (default: DATA_DIR/audit.pub).
        #[arg(long)]
        public_key: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum AccountCmd {
    /// Print an access token for the profile's credentials (for scripts and load tests).
    GetAccessToken,
    /// Show the profile's endpoint, tenant and subscription.
    Show,
}

#[derive(Args)]
pub struct ApiArgs {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. /subscriptions.
    pub path: String,
    /// JSON body.
    #[arg(long)]
    pub body: Option<String>,
}

fn serve(args: ServeArgs, local_host: bool) -> Result<()> {
    if args.dev_tpm && !local_host {
        bail!(
            "--dev-tpm belongs to `strata up` (which runs a local host); `strata server` runs the control plane only"
        );
    }
    if args.hypervisor.is_some() && !local_host {
        bail!(
            "--hypervisor belongs to `strata up` (which runs a local host); `strata server` runs the control plane only"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut cfg = strata_control::Config::new(args.data_dir.clone(), args.listen);
        cfg.database = args.database;
        cfg.tls_sans = args.tls_sans;
        cfg.issuer = args.issuer;
        cfg.rate_limit_per_sec = args.rate_limit;
        cfg.token_lifetime_secs = args.token_lifetime;
        if args.key_rotation_days < 1 {
            bail!("--key-rotation-days must be at least 1");
        }
        cfg.key_rotation_secs = args.key_rotation_days * 86_400;
        if !(1..=3600).contains(&args.attestation_interval) {
            bail!("--attestation-interval must be 1-3600 seconds");
        }
        cfg.fabric.attestation_interval_secs = args.attestation_interval;
        cfg.fabric.tpm_ca_files = args.tpm_ca;
        cfg.fabric.release_key_files = args.policy_release_key;
        if args.dev_tpm {
            let data_dir = args.data_dir.clone();
            let key =
                tokio::task::spawn_blocking(move || crate::devhost::dev_release_key(&data_dir))
                    .await??;
            cfg.fabric.release_key_files.push(key);
            cfg.fabric.allow_development_placement = true;
        }
        let (data_dir, root_key) = (args.data_dir.clone(), args.root_key.clone());
        cfg.root_key =
            tokio::task::spawn_blocking(move || crate::rootkey::prepare(&data_dir, &root_key))
                .await??;
        let running = strata_control::start(cfg)
            .await
            .map_err(|e| anyhow!(chain(&e)))?;
        eprintln!(
            "strata: control plane at {} (store: {})",
            running.endpoint,
            running.app.store.backend()
        );
        eprintln!(
            "strata: admin profile: {}   try: strata --profile {} group list",
            running.profile_path.display(),
            running.profile_path.display()
        );
        let host = if local_host {
            let (data_dir, profile, endpoint, dev, hypervisor) = (
                args.data_dir.clone(),
                running.profile_path.clone(),
                running.endpoint.clone(),
                args.dev_tpm,
                args.hypervisor,
            );
            let host = tokio::task::spawn_blocking(move || {
                crate::devhost::start(&data_dir, &profile, &endpoint, dev, hypervisor)
            })
            .await??;
            match &host {
                crate::devhost::LocalHost::NotEnrolled(why) => eprintln!("strata: {why}"),
                crate::devhost::LocalHost::Running { .. } => eprintln!(
                    "strata: local host agent running{}; see `strata host list`",
                    if args.dev_tpm {
                        " on a software TPM (development, not hardware trust)"
                    } else {
                        ""
                    }
                ),
            }
            Some(host)
        } else {
            None
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("strata: shutting down");
        if let Some(crate::devhost::LocalHost::Running { agent, stop, _tpm }) = host {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || agent.join()).await;
            drop(_tpm);
        }
        running.stop().await;
        Ok(())
    })
}

pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn read_secret(from_stdin: bool, what: &str) -> Result<String> {
    if from_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok(s.trim_end_matches(['\n', '\r']).to_string());
    }
    std::env::var("STRATA_PASSWORD").map_err(|_| {
        anyhow!("give the {what} on standard input with --password-stdin, or in STRATA_PASSWORD")
    })
}

fn parse_duration(s: &str) -> Result<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid duration '{s}': use e.g. 30m, 2h, 3600s"))?;
    Ok(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("invalid duration '{s}': use e.g. 30m, 2h, 3600s"),
    })
}

fn scope_path(scope: &str) -> String {
    let s = scope.trim_end_matches('/');
    if s.is_empty() {
        String::new()
    } else if s.starts_with('/') {
        s.to_string()
    } else {
        format!("/{s}")
    }
}

fn new_name() -> String {
    uuid::Uuid::new_v4().to_string()
}

struct Ctx {
    client: Client,
    out: Format,
    subscription: Option<String>,
}

impl Ctx {
    fn sub(&self) -> Result<String> {
        self.subscription
            .clone()
            .or_else(|| self.client.profile.subscription_id.clone())
            .ok_or_else(|| {
                anyhow!("no subscription: pass --subscription or set STRATA_SUBSCRIPTION")
            })
    }
    fn rg_path(&self, name: &str) -> Result<String> {
        strata_types::path::validate_name(name)?;
        Ok(format!(
            "/subscriptions/{}/resourceGroups/{name}",
            self.sub()?
        ))
    }
    fn show(&self, v: &Value, cols: &[Column<'_>]) {
        print(self.out, v, cols);
    }
    /// Object id for an id, user name or service-principal name.
    fn principal_id(&self, who: &str) -> Result<String> {
        if who.eq_ignore_ascii_case("everyone") {
            return Ok(strata_authz::EVERYONE.to_string());
        }
        if uuid::Uuid::parse_str(who).is_ok() {
            return Ok(who.to_string());
        }
        for t in ["users", "servicePrincipals", "groups"] {
            if let Ok(v) = self.client.call(
                "GET",
                &format!("/providers/Strata.Identity/{t}/{who}"),
                None,
            ) && let Some(id) = v.pointer("/properties/objectId").and_then(Value::as_str)
            {
                return Ok(id.to_string());
            }
        }
        bail!("no user, service principal or group named '{who}'")
    }
    fn role_id(&self, role: &str) -> Result<String> {
        let list = self.client.call(
            "GET",
            "/providers/Strata.Authorization/roleDefinitions",
            None,
        )?;
        list["value"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| {
                r["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(role))
                    || r.pointer("/properties/roleName")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(role))
            })
            .and_then(|r| r["name"].as_str().map(String::from))
            .ok_or_else(|| anyhow!("no role named '{role}'; see `strata role list`"))
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let out = cli.output;
    let profile = cli.profile.clone();
    let command = match cli.command {
        Command::Up(a) => return serve(a, true),
        Command::Server(a) => return serve(a, false),
        Command::Agent(a) => return crate::host::agent(a),
        Command::Image(i) if crate::image::is_offline(&i) => {
            return crate::image::run_offline(i, out);
        }
        Command::RootKey(r) => return crate::rootkey::run(r, out),
        Command::Host(crate::host::HostCmd::Policy(p))
            if let Some(r) = crate::host::offline(&p) =>
        {
            return r;
        }
        Command::Login(a) => return login(&profile, a),
        Command::Audit(AuditCmd::Verify {
            data_dir,
            public_key,
        }) => return audit_verify(&data_dir, public_key, out),
        other => other,
    };
    let ctx = Ctx {
        client: Client::new(&profile)?,
        out,
        subscription: cli.subscription,
    };
    let c = &ctx.client;
    match command {
        Command::Group(g) => match g {
            GroupCmd::Create {
                name,
                location,
                tags,
            } => {
                let tags: serde_json::Map<String, Value> = tags
                    .iter()
                    .map(|t| {
                        let (k, v) = t.split_once('=').unwrap_or((t, ""));
                        (k.to_string(), Value::String(v.to_string()))
                    })
                    .collect();
                let v = c.call(
                    "PUT",
                    &ctx.rg_path(&name)?,
                    Some(&json!({ "location": location, "tags": tags })),
                )?;
                ctx.show(&v, RG_COLS);
            }
            GroupCmd::Show { name } => {
                ctx.show(&c.call("GET", &ctx.rg_path(&name)?, None)?, RG_COLS)
            }
            GroupCmd::List => ctx.show(
                &c.call(
                    "GET",
                    &format!("/subscriptions/{}/resourceGroups", ctx.sub()?),
                    None,
                )?,
                RG_COLS,
            ),
            GroupCmd::Delete { name, yes } => {
                if !yes {
                    bail!(
                        "deleting a resource group deletes everything in it; add --yes to confirm"
                    );
                }
                c.call("DELETE", &ctx.rg_path(&name)?, None)?;
            }
        },
        Command::Subscription(s) => match s {
            SubCmd::List => ctx.show(&c.call("GET", "/subscriptions", None)?, SUB_COLS),
            SubCmd::Show { name } => ctx.show(
                &c.call("GET", &format!("/subscriptions/{name}"), None)?,
                SUB_COLS,
            ),
            SubCmd::Create { name, display_name } => {
                let v = c.call("PUT", &format!("/subscriptions/{name}"), Some(&json!({ "properties": { "displayName": display_name.unwrap_or_else(|| name.clone()) } })))?;
                ctx.show(&v, SUB_COLS);
            }
        },
        Command::User(u) => user(&ctx, u)?,
        Command::Sp(s) => sp(&ctx, s)?,
        Command::Ad(AdCmd::Group(g)) => ad_group(&ctx, g)?,
        Command::Role(r) => role(&ctx, r)?,
        Command::Authz(AuthzCmd::Check {
            principal,
            action,
            scope,
            data_action,
        }) => {
            let pid = ctx.principal_id(&principal)?;
            let v = c.call("POST", "/providers/Strata.Authorization/checkAccess", Some(&json!({ "principalId": pid, "action": action, "scope": scope_or_root(&scope), "dataAction": data_action })))?;
            ctx.show(&v, &[("Decision", "/decision"), ("Reason", "/reason")]);
        }
        Command::Audit(a) => match a {
            AuditCmd::List {
                from,
                limit,
                action,
            } => {
                let q = match from {
                    Some(f) => format!("?from={f}&limit={limit}"),
                    None => format!("?limit={limit}"),
                };
                let mut page =
                    c.call("GET", &format!("/providers/Strata.Audit/entries{q}"), None)?;
                if let Some(want) = action.map(|a| a.to_ascii_lowercase())
                    && let Some(entries) = page.get_mut("value").and_then(Value::as_array_mut)
                {
                    entries.retain(|e| {
                        e.pointer("/entry/action")
                            .and_then(Value::as_str)
                            .is_some_and(|a| a.to_ascii_lowercase().contains(&want))
                    });
                }
                ctx.show(&page, AUDIT_COLS);
            }
            AuditCmd::Checkpoint => ctx.show(
                &c.call("GET", "/providers/Strata.Audit/checkpoints/latest", None)?,
                &[
                    ("TreeSize", "/checkpoint/checkpoint/treeSize"),
                    ("Root", "/checkpoint/checkpoint/rootHash"),
                    ("KeyId", "/checkpoint/keyId"),
                ],
            ),
            AuditCmd::Verify { .. } => {}
        },
        Command::Account(AccountCmd::GetAccessToken) => {
            let token = c.access_token()?;
            ctx.show(
                &json!({ "accessToken": token, "tokenType": "Bearer" }),
                &[("AccessToken", "/accessToken")],
            );
        }
        Command::Account(AccountCmd::Show) => {
            let p = &c.profile;
            ctx.show(
                &json!({ "endpoint": p.endpoint, "tenantId": p.tenant_id, "subscriptionId": p.subscription_id, "clientId": p.client_id }),
                &[("Endpoint", "/endpoint"), ("TenantId", "/tenantId"), ("SubscriptionId", "/subscriptionId")],
            );
        }
        Command::Api(a) => {
            let body = a
                .body
                .map(|b| serde_json::from_str::<Value>(&b))
                .transpose()
                .context("--body is not JSON")?;
            let v = c.call(&a.method.to_ascii_uppercase(), &a.path, body.as_ref())?;
            print(Format::Json, &v, &[]);
        }
        Command::Host(h) => crate::host::run(c, out, h)?,
        Command::Vm(v) => crate::vm::run(c, out, &ctx.sub()?, v)?,
        Command::Image(i) => crate::image::run(c, out, &ctx.sub()?, i)?,
        Command::Keyvault(k) => crate::keyvault::run(c, out, &ctx.sub()?, k)?,
        Command::Disk(d) => crate::disk::run(c, out, &ctx.sub()?, d)?,
        Command::Snapshot(s) => crate::snapshot::run(c, out, &ctx.sub()?, s)?,
        Command::Network(n) => crate::network::run(c, out, &ctx.sub()?, n)?,
        Command::Up(_)
        | Command::Server(_)
        | Command::Login(_)
        | Command::Agent(_)
        | Command::RootKey(_) => {}
    }
    Ok(())
}

fn scope_or_root(s: &str) -> String {
    let p = scope_path(s);
    if p.is_empty() { "/".into() } else { p }
}

fn login(profile: &std::path::Path, a: LoginArgs) -> Result<()> {
    let base = load_profile(profile)?;
    let agent = agent_for(&base)?;
    if let Some(client_id) = a.service_principal {
        let secret = if a.password_stdin {
            read_secret(true, "client secret")?
        } else {
            std::env::var("STRATA_CLIENT_SECRET").map_err(|_| {
                anyhow!("give the client secret on standard input with --password-stdin, or in STRATA_CLIENT_SECRET")
            })?
        };
        // Prove the credentials work before saving them.
        request_token(
            &agent,
            &base.endpoint,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", &secret),
            ],
        )?;
        let p = strata_control::Profile {
            client_id: Some(client_id.clone()),
            client_secret: Some(secret),
            access_token: None,
            access_token_expires_at: None,
            ..base
        };
        strata_control::setup::write_private(&a.out, &serde_json::to_vec_pretty(&p)?)
            .map_err(|e| anyhow!(chain(&e)))?;
        eprintln!(
            "signed in as service principal {client_id}; profile written to {}",
            a.out.display()
        );
        return Ok(());
    }
    let username = a
        .username
        .ok_or_else(|| anyhow!("--username is required"))?;
    let password = read_secret(a.password_stdin, "password")?;
    let mut pairs = vec![
        ("grant_type", "password"),
        ("username", username.as_str()),
        ("password", password.as_str()),
    ];
    if let Some(t) = a.totp.as_deref() {
        pairs.push(("totp", t));
    }
    let (token, expires_in) = request_token(&agent, &base.endpoint, &pairs)?;
    let p = strata_control::Profile {
        client_id: None,
        client_secret: None,
        access_token: Some(token),
        access_token_expires_at: Some(strata_types::time::now_unix() + expires_in),
        ..base
    };
    strata_control::setup::write_private(&a.out, &serde_json::to_vec_pretty(&p)?)
        .map_err(|e| anyhow!(chain(&e)))?;
    eprintln!(
        "signed in as {username}; profile written to {} (valid {expires_in} s)",
        a.out.display()
    );
    Ok(())
}

/// Checks a name given with -n before it goes into a URL.
fn checked(name: &str) -> Result<&str> {
    strata_types::path::validate_name(name)?;
    Ok(name)
}

fn user(ctx: &Ctx, cmd: UserCmd) -> Result<()> {
    let c = &ctx.client;
    let path = |n: &str| -> Result<String> {
        Ok(format!("/providers/Strata.Identity/users/{}", checked(n)?))
    };
    match cmd {
        UserCmd::Create {
            name,
            display_name,
            password_stdin,
        } => {
            let pw = read_secret(password_stdin, "password")?;
            let mut props = json!({ "password": pw });
            if let Some(d) = display_name {
                props["displayName"] = json!(d);
            }
            let v = c.call_with(
                "PUT",
                &path(&name)?,
                Some(&json!({ "properties": props })),
                &[("if-none-match", "*")],
            )?;
            ctx.show(&v, USER_COLS);
        }
        UserCmd::Show { name } => ctx.show(&c.call("GET", &path(&name)?, None)?, USER_COLS),
        UserCmd::List => ctx.show(
            &c.call("GET", "/providers/Strata.Identity/users", None)?,
            USER_COLS,
        ),
        UserCmd::Delete { name } => {
            c.call("DELETE", &path(&name)?, None)?;
        }
        UserCmd::Disable { name } => ctx.show(
            &c.call(
                "PATCH",
                &path(&name)?,
                Some(&json!({ "properties": { "accountEnabled": false } })),
            )?,
            USER_COLS,
        ),
        UserCmd::Enable { name } => ctx.show(
            &c.call(
                "PATCH",
                &path(&name)?,
                Some(&json!({ "properties": { "accountEnabled": true } })),
            )?,
            USER_COLS,
        ),
        UserCmd::Revoke { name } => ctx.show(
            &c.call("POST", &format!("{}/revokeSessions", path(&name)?), None)?,
            USER_COLS,
        ),
        UserCmd::MfaEnable { name } => {
            let v = c.call("POST", &format!("{}/enableMfa", path(&name)?), None)?;
            ctx.show(
                &v,
                &[
                    ("TotpSecret", "/secretOutput/totpSecret"),
                    ("OtpauthUri", "/secretOutput/otpauthUri"),
                ],
            );
        }
    }
    Ok(())
}

fn sp(ctx: &Ctx, cmd: SpCmd) -> Result<()> {
    let c = &ctx.client;
    let path = |n: &str| -> Result<String> {
        Ok(format!(
            "/providers/Strata.Identity/servicePrincipals/{}",
            checked(n)?
        ))
    };
    let secret_cols: &[Column<'_>] = &[
        ("ClientId", "/secretOutput/clientId"),
        ("ClientSecret", "/secretOutput/clientSecret"),
        ("Expires", "/secretOutput/endDateTime"),
    ];
    match cmd {
        SpCmd::Create { name, years_days } => {
            let created = c.call_with(
                "PUT",
                &path(&name)?,
                Some(&json!({ "properties": {} })),
                &[("if-none-match", "*")],
            )?;
            let with_secret = c.call(
                "POST",
                &format!("{}/addPassword", path(&name)?),
                Some(&json!({ "expiresInDays": years_days })),
            )?;
            let out = json!({
                "name": name,
                "objectId": created.pointer("/properties/objectId"),
                "clientId": with_secret.pointer("/secretOutput/clientId"),
                "clientSecret": with_secret.pointer("/secretOutput/clientSecret"),
                "endDateTime": with_secret.pointer("/secretOutput/endDateTime"),
                "tenantId": ctx.client.profile.tenant_id,
            });
            ctx.show(
                &out,
                &[
                    ("Name", "/name"),
                    ("ObjectId", "/objectId"),
                    ("ClientId", "/clientId"),
                    ("ClientSecret", "/clientSecret"),
                ],
            );
        }
        SpCmd::Show { name } => ctx.show(&c.call("GET", &path(&name)?, None)?, SP_COLS),
        SpCmd::List => ctx.show(
            &c.call("GET", "/providers/Strata.Identity/servicePrincipals", None)?,
            SP_COLS,
        ),
        SpCmd::Delete { name } => {
            c.call("DELETE", &path(&name)?, None)?;
        }
        SpCmd::Disable { name } => ctx.show(
            &c.call(
                "PATCH",
                &path(&name)?,
                Some(&json!({ "properties": { "accountEnabled": false } })),
            )?,
            SP_COLS,
        ),
        SpCmd::Enable { name } => ctx.show(
            &c.call(
                "PATCH",
                &path(&name)?,
                Some(&json!({ "properties": { "accountEnabled": true } })),
            )?,
            SP_COLS,
        ),
        SpCmd::Revoke { name } => ctx.show(
            &c.call("POST", &format!("{}/revokeSessions", path(&name)?), None)?,
            SP_COLS,
        ),
        SpCmd::AddSecret { name, days } => ctx.show(
            &c.call(
                "POST",
                &format!("{}/addPassword", path(&name)?),
                Some(&json!({ "expiresInDays": days })),
            )?,
            secret_cols,
        ),
        SpCmd::AddCert { name, cert_file } => {
            let pem = std::fs::read_to_string(&cert_file)
                .with_context(|| format!("cannot read {}", cert_file.display()))?;
            ctx.show(
                &c.call(
                    "POST",
                    &format!("{}/addCertificate", path(&name)?),
                    Some(&json!({ "certificate": pem })),
                )?,
                &[
                    ("KeyId", "/secretOutput/keyId"),
                    ("Thumbprint", "/secretOutput/thumbprintSha256"),
                ],
            );
        }
    }
    Ok(())
}

fn ad_group(ctx: &Ctx, cmd: AdGroupCmd) -> Result<()> {
    let c = &ctx.client;
    let path = |n: &str| -> Result<String> {
        Ok(format!("/providers/Strata.Identity/groups/{}", checked(n)?))
    };
    match cmd {
        AdGroupCmd::Create { name, members } => {
            let ids = members
                .iter()
                .map(|m| ctx.principal_id(m))
                .collect::<Result<Vec<_>>>()?;
            ctx.show(
                &c.call(
                    "PUT",
                    &path(&name)?,
                    Some(&json!({ "properties": { "members": ids } })),
                )?,
                GROUP_COLS,
            );
        }
        AdGroupCmd::Show { name } => ctx.show(&c.call("GET", &path(&name)?, None)?, GROUP_COLS),
        AdGroupCmd::List => ctx.show(
            &c.call("GET", "/providers/Strata.Identity/groups", None)?,
            GROUP_COLS,
        ),
        AdGroupCmd::Delete { name } => {
            c.call("DELETE", &path(&name)?, None)?;
        }
        AdGroupCmd::MemberAdd { name, member } => group_members(ctx, &name, &member, true)?,
        AdGroupCmd::MemberRemove { name, member } => group_members(ctx, &name, &member, false)?,
    }
    Ok(())
}

fn group_members(ctx: &Ctx, name: &str, member: &str, add: bool) -> Result<()> {
    let path = format!("/providers/Strata.Identity/groups/{name}");
    let id = ctx.principal_id(member)?;
    let current = ctx.client.call("GET", &path, None)?;
    let etag = current["etag"].as_str().unwrap_or_default().to_string();
    let mut members: Vec<String> = current
        .pointer("/properties/members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(String::from))
        .collect();
    members.retain(|m| *m != id);
    if add {
        members.push(id);
    }
    let v = ctx.client.call_with(
        "PATCH",
        &path,
        Some(&json!({ "properties": { "members": members } })),
        &[("if-match", &etag)],
    )?;
    ctx.show(&v, GROUP_COLS);
    Ok(())
}

fn role(ctx: &Ctx, cmd: RoleCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        RoleCmd::List => ctx.show(
            &c.call(
                "GET",
                "/providers/Strata.Authorization/roleDefinitions",
                None,
            )?,
            ROLE_COLS,
        ),
        RoleCmd::Show { name } => {
            let id = ctx.role_id(&name)?;
            ctx.show(
                &c.call(
                    "GET",
                    &format!("/providers/Strata.Authorization/roleDefinitions/{id}"),
                    None,
                )?,
                ROLE_COLS,
            );
        }
        RoleCmd::Create { file, id } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let props: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let id = id.unwrap_or_else(new_name);
            ctx.show(
                &c.call(
                    "PUT",
                    &format!("/providers/Strata.Authorization/roleDefinitions/{id}"),
                    Some(&json!({ "properties": props })),
                )?,
                ROLE_COLS,
            );
        }
        RoleCmd::Delete { id } => {
            c.call(
                "DELETE",
                &format!("/providers/Strata.Authorization/roleDefinitions/{id}"),
                None,
            )?;
        }
        RoleCmd::Assignment(a) => match a {
            AssignmentCmd::Create {
                assignee,
                role,
                scope,
                name,
            } => {
                let pid = ctx.principal_id(&assignee)?;
                let rid = ctx.role_id(&role)?;
                let path = format!(
                    "{}/providers/Strata.Authorization/roleAssignments/{}",
                    scope_path(&scope),
                    name.unwrap_or_else(new_name)
                );
                ctx.show(&c.call("PUT", &path, Some(&json!({ "properties": { "principalId": pid, "roleDefinitionId": rid } })))?, RA_COLS);
            }
            AssignmentCmd::List { scope } => ctx.show(
                &c.call(
                    "GET",
                    &format!(
                        "{}/providers/Strata.Authorization/roleAssignments",
                        scope_path(&scope)
                    ),
                    None,
                )?,
                RA_COLS,
            ),
            AssignmentCmd::Delete { name, scope } => {
                c.call(
                    "DELETE",
                    &format!(
                        "{}/providers/Strata.Authorization/roleAssignments/{name}",
                        scope_path(&scope)
                    ),
                    None,
                )?;
            }
        },
        RoleCmd::Deny(d) => match d {
            DenyCmd::Create {
                name,
                scope,
                actions,
                not_actions,
                data_actions,
                principals,
                exclude_principals,
                do_not_apply_to_child_scopes,
            } => {
                let principals = principals
                    .iter()
                    .map(|p| ctx.principal_id(p))
                    .collect::<Result<Vec<_>>>()?;
                let excluded = exclude_principals
                    .iter()
                    .map(|p| ctx.principal_id(p))
                    .collect::<Result<Vec<_>>>()?;
                let body = json!({ "properties": {
                    "denyAssignmentName": name,
                    "permissions": [{ "actions": actions, "notActions": not_actions, "dataActions": data_actions }],
                    "principals": principals,
                    "excludePrincipals": excluded,
                    "doNotApplyToChildScopes": do_not_apply_to_child_scopes,
                }});
                let path = format!(
                    "{}/providers/Strata.Authorization/denyAssignments/{}",
                    scope_path(&scope),
                    new_name()
                );
                ctx.show(&c.call("PUT", &path, Some(&body))?, DENY_COLS);
            }
            DenyCmd::List { scope } => ctx.show(
                &c.call(
                    "GET",
                    &format!(
                        "{}/providers/Strata.Authorization/denyAssignments",
                        scope_path(&scope)
                    ),
                    None,
                )?,
                DENY_COLS,
            ),
            DenyCmd::Delete { name, scope } => {
                c.call(
                    "DELETE",
                    &format!(
                        "{}/providers/Strata.Authorization/denyAssignments/{name}",
                        scope_path(&scope)
                    ),
                    None,
                )?;
            }
        },
        RoleCmd::Eligible(e) => match e {
            EligibleCmd::Create {
                assignee,
                role,
                scope,
                max_duration,
            } => {
                let pid = ctx.principal_id(&assignee)?;
                let rid = ctx.role_id(&role)?;
                let path = format!(
                    "{}/providers/Strata.Authorization/roleEligibilitySchedules/{}",
                    scope_path(&scope),
                    new_name()
                );
                ctx.show(&c.call("PUT", &path, Some(&json!({ "properties": { "principalId": pid, "roleDefinitionId": rid, "maxDurationSecs": parse_duration(&max_duration)? } })))?, ELIG_COLS);
            }
            EligibleCmd::List { scope } => ctx.show(
                &c.call(
                    "GET",
                    &format!(
                        "{}/providers/Strata.Authorization/roleEligibilitySchedules",
                        scope_path(&scope)
                    ),
                    None,
                )?,
                ELIG_COLS,
            ),
            EligibleCmd::Delete { name, scope } => {
                c.call(
                    "DELETE",
                    &format!(
                        "{}/providers/Strata.Authorization/roleEligibilitySchedules/{name}",
                        scope_path(&scope)
                    ),
                    None,
                )?;
            }
        },
        RoleCmd::Activate {
            role,
            scope,
            justification,
            duration,
        } => {
            let rid = ctx.role_id(&role)?;
            let path = format!(
                "{}/providers/Strata.Authorization/roleAssignmentScheduleRequests/{}",
                scope_path(&scope),
                new_name()
            );
            ctx.show(&c.call("PUT", &path, Some(&json!({ "properties": { "roleDefinitionId": rid, "justification": justification, "durationSecs": parse_duration(&duration)? } })))?, ACT_COLS);
        }
    }
    Ok(())
}

fn audit_verify(data_dir: &std::path::Path, public_key: Option<String>, out: Format) -> Result<()> {
    use base64::Engine as _;
    let key_b64 = match public_key {
        Some(k) => k,
        None => std::fs::read_to_string(data_dir.join("audit.pub")).with_context(|| {
            format!(
                "cannot read {} (or pass --public-key)",
                data_dir.join("audit.pub").display()
            )
        })?,
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64.trim())
        .context("the audit public key is not base64")?;
    let store = strata_store::SqliteStore::open_read_only(&data_dir.join("strata.db"))
        .map_err(|e| anyhow!(chain(&e)))?;
    use strata_store::Store as _;
    let checkpoints = store.checkpoints().map_err(|e| anyhow!(chain(&e)))?;
    let mut entries = Vec::new();
    let mut from = 0;
    loop {
        let rows = store
            .audit_rows(from, 10_000)
            .map_err(|e| anyhow!(chain(&e)))?;
        let Some(last) = rows.last() else { break };
        from = last.seq + 1;
        entries.extend(rows.into_iter().map(|r| strata_audit::StoredEntry {
            seq: r.seq,
            entry_json: r.entry,
            stored_leaf_hash: r.leaf_hash,
        }));
    }
    let report = strata_audit::verify_log(entries, &checkpoints, &key);
    if out == Format::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "entries: {}   checkpoints: {}   verified up to: {}",
            report.entries, report.checkpoints, report.verified_tree_size
        );
        for p in &report.problems {
            println!("PROBLEM: {p}");
        }
    }
    if !report.problems.is_empty() {
        bail!(
            "the audit log failed verification ({} problem(s))",
            report.problems.len()
        );
    }
    if report.checkpoints == 0 {
        bail!("no signed checkpoint found; nothing could be verified");
    }
    if out != Format::Json {
        println!(
            "OK: every entry up to {} matches the signed checkpoints",
            report.verified_tree_size
        );
    }
    Ok(())
}
