//! The resource types this control plane serves, where each may live, and the POST actions
//! each accepts. Adding a type starts here.

use strata_types::{ResourceId, ResourceTypeName};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Subscription,
    ResourceGroup,
    User,
    Group,
    ServicePrincipal,
    RoleDefinition,
    RoleAssignment,
    DenyAssignment,
    RoleEligibility,
    ActivationRequest,
    Host,
    JoinToken,
    ReferencePolicy,
    VirtualMachine,
    Disk,
    Snapshot,
    Image,
    Vault,
    VaultKey,
    DeletedVault,
    VirtualNetwork,
    NetworkSecurityGroup,
    NetworkInterface,
    ApplicationSecurityGroup,
}

impl Kind {
    pub const ALL: [Kind; 24] = [
        Kind::Subscription,
        Kind::ResourceGroup,
        Kind::User,
        Kind::Group,
        Kind::ServicePrincipal,
        Kind::RoleDefinition,
        Kind::RoleAssignment,
        Kind::DenyAssignment,
        Kind::RoleEligibility,
        Kind::ActivationRequest,
        Kind::Host,
        Kind::JoinToken,
        Kind::ReferencePolicy,
        Kind::VirtualMachine,
        Kind::Disk,
        Kind::Snapshot,
        Kind::Image,
        Kind::Vault,
        Kind::VaultKey,
        Kind::DeletedVault,
        Kind::VirtualNetwork,
        Kind::NetworkSecurityGroup,
        Kind::NetworkInterface,
        Kind::ApplicationSecurityGroup,
    ];

    /// Canonical type name, as RBAC actions and responses spell it.
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Subscription => strata_types::path::SUBSCRIPTIONS_TYPE,
            Kind::ResourceGroup => strata_types::path::RESOURCE_GROUPS_TYPE,
            Kind::User => "Strata.Identity/users",
            Kind::Group => "Strata.Identity/groups",
            Kind::ServicePrincipal => "Strata.Identity/servicePrincipals",
            Kind::RoleDefinition => "Strata.Authorization/roleDefinitions",
            Kind::RoleAssignment => "Strata.Authorization/roleAssignments",
            Kind::DenyAssignment => "Strata.Authorization/denyAssignments",
            Kind::RoleEligibility => "Strata.Authorization/roleEligibilitySchedules",
            Kind::ActivationRequest => "Strata.Authorization/roleAssignmentScheduleRequests",
            Kind::Host => "Strata.Fabric/hosts",
            Kind::JoinToken => "Strata.Fabric/joinTokens",
            Kind::ReferencePolicy => "Strata.Fabric/referencePolicies",
            Kind::VirtualMachine => "Strata.Compute/virtualMachines",
            Kind::Disk => "Strata.Compute/disks",
            Kind::Snapshot => "Strata.Compute/snapshots",
            Kind::Image => "Strata.Compute/images",
            Kind::Vault => "Strata.KeyVault/vaults",
            Kind::VaultKey => "Strata.KeyVault/vaults/keys",
            Kind::DeletedVault => "Strata.KeyVault/deletedVaults",
            Kind::VirtualNetwork => "Strata.Network/virtualNetworks",
            Kind::NetworkSecurityGroup => "Strata.Network/networkSecurityGroups",
            Kind::NetworkInterface => "Strata.Network/networkInterfaces",
            Kind::ApplicationSecurityGroup => "Strata.Network/applicationSecurityGroups",
        }
    }

    pub fn type_key(self) -> String {
        self.type_name().to_ascii_lowercase()
    }

    pub fn from_type(t: &ResourceTypeName) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.type_name().eq_ignore_ascii_case(t.as_str()))
    }

    pub fn action(self, verb: &str) -> String {
        format!("{}/{verb}", self.type_name())
    }

    /// Identity and authorization data: a write to it rebuilds the directory snapshot.
    pub fn is_directory(self) -> bool {
        !matches!(
            self,
            Kind::Subscription
                | Kind::ResourceGroup
                | Kind::Host
                | Kind::JoinToken
                | Kind::ReferencePolicy
                | Kind::VirtualMachine
                | Kind::Disk
                | Kind::Snapshot
                | Kind::Image
                | Kind::Vault
                | Kind::VaultKey
                | Kind::DeletedVault
                | Kind::VirtualNetwork
                | Kind::NetworkSecurityGroup
                | Kind::NetworkInterface
                | Kind::ApplicationSecurityGroup
        )
    }

    /// Workload resources: they live in a resource group.
    pub fn in_resource_group(self) -> bool {
        matches!(
            self,
            Kind::VirtualMachine
                | Kind::Disk
                | Kind::Snapshot
                | Kind::Image
                | Kind::Vault
                | Kind::DeletedVault
                | Kind::VirtualNetwork
                | Kind::NetworkSecurityGroup
                | Kind::NetworkInterface
                | Kind::ApplicationSecurityGroup
        )
    }

    /// Authorization objects attach to any scope (tenant, subscription, group or resource).
    pub fn is_extension(self) -> bool {
        matches!(
            self,
            Kind::RoleAssignment
                | Kind::DenyAssignment
                | Kind::RoleEligibility
                | Kind::ActivationRequest
        )
    }

    /// Where this kind may be created; `Err` explains the rule.
    pub fn check_parent(self, parent: &ResourceId) -> Result<(), String> {
        let ok = match self {
            Kind::Subscription | Kind::ResourceGroup => true, // the path grammar places them
            Kind::User
            | Kind::Group
            | Kind::ServicePrincipal
            | Kind::RoleDefinition
            | Kind::Host
            | Kind::JoinToken
            | Kind::ReferencePolicy => parent.is_tenant(),
            Kind::VirtualMachine | Kind::Disk | Kind::Snapshot | Kind::Image => {
                parent.scope() == strata_types::path::Scope::ResourceGroup
            }
            Kind::Vault | Kind::DeletedVault => {
                parent.scope() == strata_types::path::Scope::ResourceGroup
            }
            Kind::VirtualNetwork
            | Kind::NetworkSecurityGroup
            | Kind::NetworkInterface
            | Kind::ApplicationSecurityGroup => {
                parent.scope() == strata_types::path::Scope::ResourceGroup
            }
            Kind::VaultKey => {
                return parent
                    .resource_type()
                    .filter(|t| t.as_str().eq_ignore_ascii_case(Kind::Vault.type_name()))
                    .map(|_| ())
                    .ok_or_else(|| {
                        "keys live in a key vault: use …/providers/Strata.KeyVault/vaults/VAULT/keys/NAME"
                            .to_string()
                    });
            }
            _ => true,
        };
        if ok {
            Ok(())
        } else if self.in_resource_group() {
            Err(format!(
                "{} live in a resource group: use /subscriptions/SUB/resourceGroups/RG/providers/{}/NAME",
                self.type_name(),
                self.type_name()
            ))
        } else {
            Err(format!(
                "{} live at the tenant root: use /providers/{}/NAME",
                self.type_name(),
                self.type_name()
            ))
        }
    }

    /// POST actions on one resource of this kind (`…/{name}/{action}`).
    pub fn post_actions(self) -> &'static [&'static str] {
        match self {
            Kind::User => &["enableMfa", "disableMfa", "revokeSessions"],
            Kind::ServicePrincipal => &[
                "addPassword",
                "addCertificate",
                "removeCredential",
                "revokeSessions",
            ],
            Kind::Host => &["attest", "cordon", "uncordon", "quarantine", "release"],
            Kind::VirtualMachine => &[
                "start",
                "stop",
                "restart",
                "deallocate",
                "retrieveBootDiagnosticsData",
            ],
            Kind::Disk => &["rewrapKey"],
            // The snapshot's encrypted bytes, streamed (`GET …/export`, `handlers::snapshots`).
            Kind::Snapshot => &["export"],
            Kind::DeletedVault => &["purge"],
            // The image's bytes, streamed (`handlers::images`): not a JSON action.
            Kind::Image => &["upload"],
            Kind::NetworkInterface => &[
                "ipFlowVerify",
                "effectiveNetworkSecurityGroups",
                "reachability",
                "ddosCounters",
            ],
            Kind::VaultKey => &[
                "rotate",
                "enable",
                "disable",
                "recover",
                "purge",
                "wrapKey",
                "unwrapKey",
                "encrypt",
                "decrypt",
                "sign",
                "verify",
            ],
            _ => &[],
        }
    }

    /// Whether PUT creates or replaces it (hosts join through the agent door; reference
    /// policies arrive only in signed bundles).
    pub fn puttable(self) -> bool {
        !matches!(
            self,
            Kind::Host | Kind::ReferencePolicy | Kind::DeletedVault
        )
    }

    /// Whether DELETE applies (a deleted vault goes only through its purge, which honours
    /// purge protection).
    pub fn deletable(self) -> bool {
        self != Kind::DeletedVault
    }

    /// The RBAC action a POST action needs.
    pub fn post_action_permission(self, action: &str) -> String {
        match (self, action) {
            (Kind::Host, a) => format!("Strata.Fabric/hosts/{a}/action"),
            // A read of what the agent reported; nothing changes.
            (Kind::VirtualMachine, "retrieveBootDiagnosticsData") => self.action("read"),
            (Kind::VirtualMachine, a) => format!("Strata.Compute/virtualMachines/{a}/action"),
            // Questions about the interface's rules; nothing changes.
            (Kind::NetworkInterface, _) => self.action("read"),
            // Management (rotate, enable, …) and data actions (wrapKey, …) alike; which plane
            // decides is `post_action_is_data`.
            (Kind::VaultKey, a) => format!("Strata.KeyVault/vaults/keys/{a}/action"),
            // Azure's name for handing out a snapshot's bytes.
            (Kind::Snapshot, _) => "Strata.Compute/snapshots/beginGetAccess/action".into(),
            (Kind::DeletedVault, a) => format!("Strata.KeyVault/deletedVaults/{a}/action"),
            _ => self.action("write"),
        }
    }

    /// Whether a POST action is a data action (decided against roles' `dataActions`, never
    /// their `actions`): the key vault's cryptographic operations.
    pub fn post_action_is_data(self, action: &str) -> bool {
        self == Kind::VaultKey
            && matches!(
                action,
                "wrapKey" | "unwrapKey" | "encrypt" | "decrypt" | "sign" | "verify"
            )
    }

    /// Whether PATCH is meaningful (authorization objects are immutable, as in Azure; hosts
    /// and reference policies change only through their own flows).
    pub fn patchable(self) -> bool {
        !matches!(
            self,
            Kind::RoleAssignment
                | Kind::DenyAssignment
                | Kind::ActivationRequest
                | Kind::RoleEligibility
                | Kind::Host
                | Kind::JoinToken
                | Kind::ReferencePolicy
                | Kind::DeletedVault
        )
    }
}
