//! Strata's built-in roles, modelled on Azure's (and reusing Azure's well-known role ids).
//! All are assignable anywhere (`/`).

use crate::model::{Permission, RoleDefinition, RoleType};

pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
pub const USER_ACCESS_ADMINISTRATOR: &str = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9";
pub const VIRTUAL_MACHINE_CONTRIBUTOR: &str = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c";
pub const NETWORK_CONTRIBUTOR: &str = "4d97b98b-1d4f-4787-a291-c67834d212e7";
pub const KEY_VAULT_ADMINISTRATOR: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";
pub const KEY_VAULT_CRYPTO_USER: &str = "12338af0-0e69-4776-bea7-57ae8d297424";
pub const SECURITY_ADMIN: &str = "fb1c8493-542b-48eb-b624-b4c8fea62acd";
pub const SECURITY_READER: &str = "39bc4728-0917-49c7-9d2c-d95423bc2eb4";

const SUBSCRIPTION_READ: &str = "Strata.Resources/subscriptions/read";
const RESOURCE_GROUP_READ: &str = "Strata.Resources/subscriptions/resourceGroups/read";

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

struct Spec {
    id: &'static str,
    name: &'static str,
    description: &'static str,
    privileged: bool,
    actions: &'static [&'static str],
    not_actions: &'static [&'static str],
    data_actions: &'static [&'static str],
}

impl Spec {
    fn build(&self) -> RoleDefinition {
        RoleDefinition {
            id: self.id.to_owned(),
            role_name: self.name.to_owned(),
            description: self.description.to_owned(),
            role_type: RoleType::BuiltInRole,
            permissions: vec![Permission {
                actions: strings(self.actions),
                not_actions: strings(self.not_actions),
                data_actions: strings(self.data_actions),
                not_data_actions: Vec::new(),
            }],
            assignable_scopes: vec!["/".to_owned()],
            privileged: self.privileged,
        }
    }
}

const SPECS: &[Spec] = &[
    Spec {
        id: OWNER,
        name: "Owner",
        description: "Full access to manage all resources, including assigning roles.",
        privileged: true,
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
    },
    Spec {
        id: CONTRIBUTOR,
        name: "Contributor",
        description: "Full access to manage all resources, but not to grant access or manage identities.",
        privileged: true,
        actions: &["*"],
        not_actions: &[
            "Strata.Authorization/*/write",
            "Strata.Authorization/*/delete",
            "Strata.Identity/*/write",
            "Strata.Identity/*/delete",
        ],
        data_actions: &[],
    },
    Spec {
        id: READER,
        name: "Reader",
        description: "View all resources, but make no changes.",
        privileged: false,
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
    },
    Spec {
        id: USER_ACCESS_ADMINISTRATOR,
        name: "User Access Administrator",
        description: "Manage access to resources: role definitions, assignments and eligibilities.",
        privileged: true,
        actions: &["*/read", "Strata.Authorization/*"],
        not_actions: &[],
        data_actions: &[],
    },
    Spec {
        id: VIRTUAL_MACHINE_CONTRIBUTOR,
        name: "Virtual Machine Contributor",
        description: "Create and manage virtual machines and their disks, and attach them to networks; no access to the networks themselves.",
        privileged: false,
        actions: &[
            "Strata.Compute/virtualMachines/*",
            "Strata.Compute/disks/*",
            "Strata.Compute/snapshots/*",
            "Strata.Compute/images/read",
            "Strata.Network/networkInterfaces/*",
            "Strata.Network/virtualNetworks/read",
            "Strata.Network/virtualNetworks/subnets/read",
            "Strata.Network/virtualNetworks/subnets/join/action",
            "Strata.Network/networkSecurityGroups/read",
            "Strata.Network/networkSecurityGroups/join/action",
            "Strata.Network/applicationSecurityGroups/read",
            "Strata.Network/applicationSecurityGroups/joinIpConfiguration/action",
            SUBSCRIPTION_READ,
            RESOURCE_GROUP_READ,
        ],
        not_actions: &[],
        data_actions: &[],
    },
    Spec {
        id: NETWORK_CONTRIBUTOR,
        name: "Network Contributor",
        description: "Create and manage networks and attach resources to them (every join action), but not access to them.",
        privileged: false,
        actions: &["Strata.Network/*", SUBSCRIPTION_READ, RESOURCE_GROUP_READ],
        not_actions: &[],
        data_actions: &[],
    },
    Spec {
        id: KEY_VAULT_ADMINISTRATOR,
        name: "Key Vault Administrator",
        description: "Manage key vaults and perform every operation on their keys.",
        privileged: false,
        actions: &["Strata.KeyVault/*", SUBSCRIPTION_READ, RESOURCE_GROUP_READ],
        not_actions: &[],
        data_actions: &["Strata.KeyVault/vaults/*"],
    },
    Spec {
        id: KEY_VAULT_CRYPTO_USER,
        name: "Key Vault Crypto User",
        description: "Perform cryptographic operations with keys; cannot manage vaults or delete keys.",
        privileged: false,
        actions: &[SUBSCRIPTION_READ, RESOURCE_GROUP_READ],
        not_actions: &[],
        data_actions: &[
            "Strata.KeyVault/vaults/keys/read",
            "Strata.KeyVault/vaults/keys/update/action",
            "Strata.KeyVault/vaults/keys/encrypt/action",
            "Strata.KeyVault/vaults/keys/decrypt/action",
            "Strata.KeyVault/vaults/keys/wrapKey/action",
            "Strata.KeyVault/vaults/keys/unwrapKey/action",
            "Strata.KeyVault/vaults/keys/sign/action",
            "Strata.KeyVault/vaults/keys/verify/action",
        ],
    },
    Spec {
        id: SECURITY_ADMIN,
        name: "Security Admin",
        description: "Manage security assessments, incidents and just-in-time policies; cordon and quarantine fabric hosts; read access control, audit and fabric state.",
        privileged: false,
        actions: &[
            "Strata.Authorization/*/read",
            "Strata.Security/*",
            "Strata.Audit/*/read",
            "Strata.Fabric/*/read",
            "Strata.Fabric/hosts/cordon/action",
            "Strata.Fabric/hosts/quarantine/action",
            SUBSCRIPTION_READ,
            RESOURCE_GROUP_READ,
        ],
        not_actions: &[],
        data_actions: &[],
    },
    Spec {
        id: SECURITY_READER,
        name: "Security Reader",
        description: "Read security assessments, incidents and policies, access control, audit and fabric state.",
        privileged: false,
        actions: &[
            "Strata.Authorization/*/read",
            "Strata.Security/*/read",
            "Strata.Audit/*/read",
            "Strata.Fabric/*/read",
            SUBSCRIPTION_READ,
            RESOURCE_GROUP_READ,
        ],
        not_actions: &[],
        data_actions: &[],
    },
];

/// Every built-in role definition.
pub fn roles() -> Vec<RoleDefinition> {
    SPECS.iter().map(Spec::build).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate_role_definition;

    #[test]
    fn built_ins_are_valid_and_unique() {
        let roles = roles();
        let mut ids = std::collections::HashSet::new();
        for role in &roles {
            assert_eq!(validate_role_definition(role), Ok(()), "{}", role.role_name);
            assert!(ids.insert(role.id.clone()), "duplicate id {}", role.id);
        }
        assert_eq!(roles.len(), 10);
    }
}
