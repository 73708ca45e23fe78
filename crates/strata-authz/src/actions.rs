//! The catalog of every action Strata knows: management actions (control plane) and data
//! actions (data plane, e.g. cryptographic operations with a key). Role patterns are written
//! against these names.

/// One catalogued action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionInfo {
    pub name: &'static str,
    /// True for data actions, matched by `dataActions` rather than `actions`.
    pub data: bool,
    pub description: &'static str,
}

const fn mgmt(name: &'static str, description: &'static str) -> ActionInfo {
    ActionInfo {
        name,
        data: false,
        description,
    }
}

const fn data(name: &'static str, description: &'static str) -> ActionInfo {
    ActionInfo {
        name,
        data: true,
        description,
    }
}

/// Every action, management actions first.
pub const ALL: &[ActionInfo] = &[
    mgmt(
        "Strata.Resources/subscriptions/read",
        "List or read subscriptions",
    ),
    mgmt(
        "Strata.Resources/subscriptions/write",
        "Create or update subscriptions",
    ),
    mgmt(
        "Strata.Resources/subscriptions/delete",
        "Delete subscriptions",
    ),
    mgmt(
        "Strata.Resources/subscriptions/resourceGroups/read",
        "List or read resource groups",
    ),
    mgmt(
        "Strata.Resources/subscriptions/resourceGroups/write",
        "Create or update resource groups",
    ),
    mgmt(
        "Strata.Resources/subscriptions/resourceGroups/delete",
        "Delete resource groups",
    ),
    mgmt(
        "Strata.Resources/changes/read",
        "Read the change history of resources",
    ),
    mgmt("Strata.Identity/users/read", "List or read users"),
    mgmt("Strata.Identity/users/write", "Create or update users"),
    mgmt("Strata.Identity/users/delete", "Delete users"),
    mgmt("Strata.Identity/groups/read", "List or read groups"),
    mgmt("Strata.Identity/groups/write", "Create or update groups"),
    mgmt("Strata.Identity/groups/delete", "Delete groups"),
    mgmt(
        "Strata.Identity/servicePrincipals/read",
        "List or read service principals",
    ),
    mgmt(
        "Strata.Identity/servicePrincipals/write",
        "Create or update service principals",
    ),
    mgmt(
        "Strata.Identity/servicePrincipals/delete",
        "Delete service principals",
    ),
    mgmt(
        "Strata.Authorization/roleDefinitions/read",
        "List or read role definitions",
    ),
    mgmt(
        "Strata.Authorization/roleDefinitions/write",
        "Create or update role definitions",
    ),
    mgmt(
        "Strata.Authorization/roleDefinitions/delete",
        "Delete role definitions",
    ),
    mgmt(
        "Strata.Authorization/roleAssignments/read",
        "List or read role assignments",
    ),
    mgmt(
        "Strata.Authorization/roleAssignments/write",
        "Create or update role assignments",
    ),
    mgmt(
        "Strata.Authorization/roleAssignments/delete",
        "Delete role assignments",
    ),
    mgmt(
        "Strata.Authorization/denyAssignments/read",
        "List or read deny assignments",
    ),
    mgmt(
        "Strata.Authorization/denyAssignments/write",
        "Create or update deny assignments",
    ),
    mgmt(
        "Strata.Authorization/denyAssignments/delete",
        "Delete deny assignments",
    ),
    mgmt(
        "Strata.Authorization/roleEligibilitySchedules/read",
        "List or read PIM role eligibilities",
    ),
    mgmt(
        "Strata.Authorization/roleEligibilitySchedules/write",
        "Create or update PIM role eligibilities",
    ),
    mgmt(
        "Strata.Authorization/roleEligibilitySchedules/delete",
        "Delete PIM role eligibilities",
    ),
    mgmt(
        "Strata.Authorization/roleAssignmentScheduleRequests/read",
        "List or read PIM activation requests",
    ),
    mgmt(
        "Strata.Authorization/roleAssignmentScheduleRequests/write",
        "Create or update PIM activation requests",
    ),
    mgmt("Strata.Audit/entries/read", "Read audit log entries"),
    mgmt(
        "Strata.Compute/virtualMachines/read",
        "List or read virtual machines",
    ),
    mgmt(
        "Strata.Compute/virtualMachines/write",
        "Create or update virtual machines",
    ),
    mgmt(
        "Strata.Compute/virtualMachines/delete",
        "Delete virtual machines",
    ),
    mgmt(
        "Strata.Compute/virtualMachines/start/action",
        "Start a virtual machine",
    ),
    mgmt(
        "Strata.Compute/virtualMachines/stop/action",
        "Stop (power off) a virtual machine",
    ),
    mgmt(
        "Strata.Compute/virtualMachines/restart/action",
        "Restart a virtual machine",
    ),
    mgmt(
        "Strata.Compute/virtualMachines/deallocate/action",
        "Deallocate a virtual machine and release its compute",
    ),
    mgmt(
        "Strata.Compute/virtualMachines/beginGetAccess/action",
        "Copy a virtual machine's OS disk data (into a snapshot)",
    ),
    mgmt("Strata.Compute/disks/read", "List or read disks"),
    mgmt("Strata.Compute/disks/write", "Create or update disks"),
    mgmt("Strata.Compute/disks/delete", "Delete disks"),
    mgmt(
        "Strata.Compute/disks/beginGetAccess/action",
        "Copy a disk's data (into a snapshot)",
    ),
    mgmt("Strata.Compute/snapshots/read", "List or read snapshots"),
    mgmt(
        "Strata.Compute/snapshots/write",
        "Create or update snapshots (needs read on the source VM or disk)",
    ),
    mgmt("Strata.Compute/snapshots/delete", "Delete snapshots"),
    mgmt(
        "Strata.Compute/snapshots/beginGetAccess/action",
        "Download a snapshot's bytes (they stay encrypted) or copy it into a disk",
    ),
    mgmt("Strata.Compute/images/read", "List or read images"),
    mgmt(
        "Strata.KeyVault/deletedVaults/read",
        "List or read soft-deleted key vaults",
    ),
    mgmt(
        "Strata.KeyVault/deletedVaults/purge/action",
        "Purge a soft-deleted key vault and its keys (refused under purge protection before its date)",
    ),
    mgmt("Strata.Compute/images/write", "Create or update images"),
    mgmt("Strata.Compute/images/delete", "Delete images"),
    mgmt(
        "Strata.Network/virtualNetworks/read",
        "List or read virtual networks",
    ),
    mgmt(
        "Strata.Network/virtualNetworks/write",
        "Create or update virtual networks",
    ),
    mgmt(
        "Strata.Network/virtualNetworks/delete",
        "Delete virtual networks",
    ),
    mgmt(
        "Strata.Network/virtualNetworks/peer/action",
        "Peer a virtual network with this one (checked on the remote network)",
    ),
    mgmt(
        "Strata.Network/virtualNetworks/subnets/read",
        "List or read subnets",
    ),
    mgmt(
        "Strata.Network/virtualNetworks/subnets/write",
        "Create or update subnets",
    ),
    mgmt(
        "Strata.Network/virtualNetworks/subnets/delete",
        "Delete subnets",
    ),
    mgmt(
        "Strata.Network/virtualNetworks/subnets/join/action",
        "Attach a network interface to a subnet",
    ),
    mgmt(
        "Strata.Network/networkSecurityGroups/read",
        "List or read network security groups",
    ),
    mgmt(
        "Strata.Network/networkSecurityGroups/write",
        "Create or update network security groups",
    ),
    mgmt(
        "Strata.Network/networkSecurityGroups/delete",
        "Delete network security groups",
    ),
    mgmt(
        "Strata.Network/networkSecurityGroups/join/action",
        "Attach a network security group to a subnet or interface",
    ),
    mgmt(
        "Strata.Network/networkInterfaces/read",
        "List or read network interfaces",
    ),
    mgmt(
        "Strata.Network/networkInterfaces/write",
        "Create or update network interfaces",
    ),
    mgmt(
        "Strata.Network/networkInterfaces/delete",
        "Delete network interfaces",
    ),
    mgmt(
        "Strata.Network/networkInterfaces/join/action",
        "Attach a network interface to a virtual machine",
    ),
    mgmt(
        "Strata.Network/applicationSecurityGroups/read",
        "List or read application security groups",
    ),
    mgmt(
        "Strata.Network/applicationSecurityGroups/write",
        "Create or update application security groups",
    ),
    mgmt(
        "Strata.Network/applicationSecurityGroups/delete",
        "Delete application security groups",
    ),
    mgmt(
        "Strata.Network/applicationSecurityGroups/joinIpConfiguration/action",
        "Make a network interface a member of an application security group",
    ),
    mgmt(
        "Strata.Network/applicationSecurityGroups/joinNetworkSecurityRule/action",
        "Name an application security group in a security rule",
    ),
    mgmt("Strata.KeyVault/vaults/read", "List or read key vaults"),
    mgmt(
        "Strata.KeyVault/vaults/write",
        "Create or update key vaults",
    ),
    mgmt("Strata.KeyVault/vaults/delete", "Delete key vaults"),
    mgmt(
        "Strata.KeyVault/vaults/keys/read",
        "List or read key metadata",
    ),
    mgmt(
        "Strata.KeyVault/vaults/keys/write",
        "Create or update key metadata",
    ),
    mgmt("Strata.KeyVault/vaults/keys/delete", "Delete key metadata"),
    mgmt(
        "Strata.KeyVault/vaults/keys/rotate/action",
        "Rotate a key to a new version",
    ),
    mgmt("Strata.KeyVault/vaults/keys/enable/action", "Enable a key"),
    mgmt(
        "Strata.KeyVault/vaults/keys/disable/action",
        "Disable a key (every cryptographic operation with it is refused)",
    ),
    mgmt(
        "Strata.KeyVault/vaults/keys/recover/action",
        "Recover a soft-deleted key",
    ),
    mgmt(
        "Strata.KeyVault/vaults/keys/purge/action",
        "Purge a soft-deleted key for good",
    ),
    mgmt(
        "Strata.Security/assessments/read",
        "Read security assessments",
    ),
    mgmt(
        "Strata.Security/incidents/read",
        "List or read security incidents",
    ),
    mgmt(
        "Strata.Security/incidents/write",
        "Create or update security incidents",
    ),
    mgmt(
        "Strata.Security/jitPolicies/read",
        "List or read just-in-time access policies",
    ),
    mgmt(
        "Strata.Security/jitPolicies/write",
        "Create or update just-in-time access policies",
    ),
    mgmt(
        "Strata.Security/jitPolicies/initiate/action",
        "Request just-in-time access to a virtual machine",
    ),
    mgmt("Strata.Fabric/hosts/read", "List or read fabric hosts"),
    mgmt("Strata.Fabric/hosts/write", "Create or update fabric hosts"),
    mgmt("Strata.Fabric/hosts/delete", "Delete fabric hosts"),
    mgmt(
        "Strata.Fabric/hosts/attest/action",
        "Attest a fabric host's measured boot",
    ),
    mgmt(
        "Strata.Fabric/hosts/cordon/action",
        "Stop placing new VMs on a fabric host",
    ),
    mgmt(
        "Strata.Fabric/hosts/uncordon/action",
        "Allow placement on a fabric host again",
    ),
    mgmt(
        "Strata.Fabric/hosts/quarantine/action",
        "Quarantine a fabric host (only release moves it)",
    ),
    mgmt(
        "Strata.Fabric/hosts/release/action",
        "Release a quarantined fabric host",
    ),
    mgmt(
        "Strata.Fabric/referencePolicies/read",
        "List or read host reference policies",
    ),
    mgmt(
        "Strata.Fabric/referencePolicies/write",
        "Import signed host reference-policy bundles",
    ),
    mgmt(
        "Strata.Fabric/joinTokens/read",
        "List or read host join tokens",
    ),
    mgmt("Strata.Fabric/joinTokens/write", "Create host join tokens"),
    mgmt("Strata.Fabric/joinTokens/delete", "Delete host join tokens"),
    data(
        "Strata.KeyVault/vaults/keys/read",
        "Read a key's public material and attributes",
    ),
    data("Strata.KeyVault/vaults/keys/create/action", "Create a key"),
    data("Strata.KeyVault/vaults/keys/delete", "Delete a key"),
    data(
        "Strata.KeyVault/vaults/keys/rotate/action",
        "Rotate a key to a new version",
    ),
    data(
        "Strata.KeyVault/vaults/keys/update/action",
        "Update a key's attributes",
    ),
    data(
        "Strata.KeyVault/vaults/keys/encrypt/action",
        "Encrypt data with a key",
    ),
    data(
        "Strata.KeyVault/vaults/keys/decrypt/action",
        "Decrypt data with a key",
    ),
    data(
        "Strata.KeyVault/vaults/keys/wrapKey/action",
        "Wrap a symmetric key with a key",
    ),
    data(
        "Strata.KeyVault/vaults/keys/unwrapKey/action",
        "Unwrap a symmetric key with a key",
    ),
    data(
        "Strata.KeyVault/vaults/keys/sign/action",
        "Sign a digest with a key",
    ),
    data(
        "Strata.KeyVault/vaults/keys/verify/action",
        "Verify a signature with a key",
    ),
];

/// The catalogued action with this name (case-insensitive) on the given plane. Some names (e.g.
/// `Strata.KeyVault/vaults/keys/read`) exist both as a management and as a data action.
pub fn find(name: &str, data: bool) -> Option<&'static ActionInfo> {
    ALL.iter()
        .find(|a| a.data == data && a.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for a in ALL {
            assert!(
                seen.insert((a.name.to_ascii_lowercase(), a.data)),
                "duplicate {}",
                a.name
            );
            assert!(a.name.starts_with("Strata."), "{}", a.name);
            assert!(
                a.name.bytes().all(|b| b.is_ascii_graphic() && b != b'*'),
                "{}",
                a.name
            );
        }
        assert_eq!(
            find("strata.compute/virtualmachines/read", false).map(|a| a.data),
            Some(false)
        );
        assert!(find("Strata.KeyVault/vaults/keys/read", true).is_some());
        assert!(find("Strata.KeyVault/vaults/keys/read", false).is_some());
        assert!(find("Strata.KeyVault/vaults/keys/sign/action", false).is_none());
    }
}
