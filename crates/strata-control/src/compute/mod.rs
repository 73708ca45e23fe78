//! `Strata.Compute/virtualMachines` as the control plane sees them: the resource's shape and
//! validation, placement at create time, the desired state handed to the host's agent, and the
//! agent's status reports folded back into the resource.
//!
//! ```text
//!            PUT (placed on a Trusted host, vTPM key sealed)
//!                 │
//!                 ▼
//!   provisioningState=Creating ──agent: Running──▶ Succeeded, powerState=running
//!        │                                              │ stop ▲ start
//!        │ agent: Failed (secure boot violation, …)     ▼      │
//!        └──────────────────────▶ Failed ◀──────── powerState=stopped
//!                                   │ start (retry)       │ deallocate
//!                                   ▼                     ▼
//!                                Updating          powerState=deallocated (host released)
//! ```
//!
//! `restart` is stop-then-start driven here: desired Stopped with `restartPending`; the host's
//! report of Stopped for that generation turns it into desired Running (a new generation).
//!
//! The agent learns what to run from `GET /fabric/v1/hosts/{host}/assignments` (mTLS with the
//! host's attestation-bound certificate): each VM assigned to the host with its desired state
//! (`Running` or `Stopped`) and, only while the host is Trusted, the VM's vTPM state key (sealed
//! in the store under the root key; this is secure key release for vTPM state). A VM missing
//! from the list is deleted by the agent. The agent reports back with
//! `POST /fabric/v1/hosts/{host}/vmstatus`; a report about a VM that is not assigned to the
//! reporting host changes nothing and is audited.

pub mod boot_integrity;
pub mod disks;
pub mod door;
pub mod images;
pub mod index;
pub mod snapshots;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strata_types::ApiError;

/// VM sizes: (name, vCPUs, memory MiB).
pub const SIZES: &[(&str, u32, u32)] = &[
    ("Strata_B1", 1, 512),
    ("Strata_B2", 2, 1024),
    ("Strata_D2", 2, 4096),
    ("Strata_D4", 4, 8192),
    ("Strata_D8", 8, 16384),
];
pub const DEFAULT_SIZE: &str = "Strata_B1";

/// Images every host can provide (built on the host from Debian's packages and signed with the
/// host's secure-boot key). Not resources: see `images` for how they relate to image resources.
pub const PLATFORM_IMAGES: &[&str] = &["tiny"];

/// The disk size a platform image gives a guest, bytes.
pub fn platform_image_bytes(_name: &str) -> u64 {
    strata_compute::image::DISK_BYTES
}

/// OS disk sizes accepted (`storageProfile.osDisk.diskSizeGB`), GiB: as for disks.
pub const MAX_OS_DISK_GB: u64 = 32 * 1024;

/// The longest serial-console tail kept per VM.
pub const CONSOLE_TAIL_MAX: usize = 16 * 1024;

/// What the agent should make of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Desired {
    Running,
    Stopped,
}

/// `internal` of a VM document (never returned by the API).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmInternal {
    #[serde(default)]
    pub desired: Option<Desired>,
    /// Bumped on every change of `desired`; reports name the generation they answer.
    #[serde(default)]
    pub generation: u64,
    /// A restart in progress: the VM is being stopped and is started again once its host
    /// reports it stopped (see `door::apply_reports`).
    #[serde(default)]
    pub restart_pending: bool,
    /// The vTPM state key, sealed under the root key (AAD: [`vtpm_key_aad`]).
    #[serde(default)]
    pub vtpm_key: Option<String>,
    /// The OS disk's data key, wrapped by the subscription's platform key (AAD: the disk's
    /// resource id, [`os_disk_id`]), as a `strata_kms::Envelope` in text form.
    #[serde(default)]
    pub disk_key: Option<String>,
    #[serde(default)]
    pub console_tail: String,
    /// The fingerprint of the boot evidence last appraised (`boot_integrity`), so the same
    /// evidence, sent with every report, is appraised once.
    #[serde(default)]
    pub boot_evidence: Option<String>,
    /// Unix seconds of the last status report.
    #[serde(default)]
    pub reported_at: i64,
    /// The image resource's content the VM was made from (its host fetches and verifies it);
    /// `None` for a platform image.
    #[serde(default)]
    pub image: Option<images::ImageContent>,
    /// Snapshots of the OS disk the host has yet to take (`compute::snapshots`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<snapshots::PendingSnapshot>,
}

/// The resource a VM's OS-disk data key is bound to.
pub fn os_disk_id(vm_key: &str) -> String {
    format!("{vm_key}/osdisk")
}

/// `internal` of a subscription: its platform key, wrapped by the root key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionKeys {
    #[serde(default)]
    pub platform_key: Option<strata_kms::WrappedPlatformKey>,
}

/// A new subscription's `internal`: its platform key, created with it so that the first disks
/// created in parallel do not race to make one.
pub fn new_subscription_internal(
    root: &crate::crypto::RootKey,
    subscription_key: &str,
) -> Result<Value, ApiError> {
    let (_, wrapped) = root
        .kms()
        .create_platform_key(subscription_key, 1)
        .map_err(|_| ApiError::internal())?;
    serde_json::to_value(SubscriptionKeys {
        platform_key: Some(wrapped),
    })
    .map_err(|_| ApiError::internal())
}

/// Opens `subscription`'s platform key (its id is the subscription's storage key).
pub fn open_platform_key(
    root: &crate::crypto::RootKey,
    subscription_key: &str,
    stored: &strata_kms::WrappedPlatformKey,
) -> Result<strata_kms::PlatformKey, ApiError> {
    root.kms()
        .open_platform_key(subscription_key, stored)
        .map_err(|e| {
            tracing::error!(subscription = %subscription_key, error = %e, "the platform key does not open");
            ApiError::internal()
        })
}

/// The associated data binding a sealed vTPM key to its VM.
pub fn vtpm_key_aad(vm_key: &str) -> String {
    format!("strata/vtpm-key/v1:{vm_key}")
}

/// The caller-settable properties of a VM.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmInput {
    #[serde(default)]
    pub hardware_profile: Option<HardwareProfile>,
    #[serde(default)]
    pub storage_profile: Option<StorageProfile>,
    #[serde(default)]
    pub security_profile: Option<SecurityProfile>,
    #[serde(default)]
    pub network_profile: Option<NetworkProfile>,
    // Read-only, accepted and ignored so that GET-modify-PUT works.
    #[serde(default)]
    pub vm_id: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub host: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub provisioning_state: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub power_state: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub failure_reason: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub failure_detail: Option<serde::de::IgnoredAny>,
}

/// The VM's network interfaces (created beforehand, as `az vm create` does for you).
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkProfile {
    #[serde(default)]
    pub network_interfaces: Vec<NicReference>,
}

/// A VM's network interface, as in ARM: `properties.deleteOption` `Delete` makes the interface
/// (and the NSG strata created for it) go with the VM; `Detach`, the default, keeps it.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq, Clone)]
#[serde(deny_unknown_fields)]
pub struct NicReference {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<NicReferenceProperties>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq, Eq, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NicReferenceProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_option: Option<DeleteOption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq, Eq, Clone, Copy)]
pub enum DeleteOption {
    Delete,
    Detach,
}

#[derive(Debug, Deserialize, Serialize, PartialEq, Eq, Clone)]
#[serde(deny_unknown_fields)]
pub struct SubResource {
    pub id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HardwareProfile {
    #[serde(default)]
    pub vm_size: Option<String>,
    // Read-only (derived from the size).
    #[serde(default)]
    pub v_cpus: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "memoryMiB")]
    pub memory_mib: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StorageProfile {
    /// A platform image by name (`tiny`).
    #[serde(default)]
    pub image: Option<String>,
    /// An image resource by id (`Strata.Compute/images`); the caller needs read on it.
    #[serde(default)]
    pub image_reference: Option<ImageReference>,
    /// An existing `Strata.Compute/disks` resource to use as the OS disk (its key, platform or
    /// customer-managed, becomes the VM's disk key; see `compute::disks`), and/or the OS disk's
    /// size.
    #[serde(default)]
    pub os_disk: Option<OsDiskRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageReference {
    pub id: String,
    // Read-only (the digest the VM was made from).
    #[serde(default)]
    pub sha256: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OsDiskRef {
    #[serde(default)]
    pub id: Option<String>,
    /// The OS disk's size, GiB: at least the image's virtual size. Default: the image's size
    /// (or the size of the disk resource named by `id`).
    #[serde(default, rename = "diskSizeGB")]
    pub disk_size_gb: Option<u64>,
    // Read-only (the size in effect, bytes).
    #[serde(default)]
    pub disk_size_bytes: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityProfile {
    #[serde(default)]
    pub security_type: Option<String>,
    #[serde(default)]
    pub uefi_settings: Option<UefiSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UefiSettings {
    #[serde(default)]
    pub secure_boot_enabled: Option<bool>,
    #[serde(default)]
    pub v_tpm_enabled: Option<bool>,
}

/// The image a VM boots.
#[derive(Clone, Debug, Eq)]
pub enum ImageName {
    /// A platform image every host builds (`PLATFORM_IMAGES`).
    Platform(String),
    /// An image resource, by id.
    Resource(String),
}

impl PartialEq for ImageName {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Platform(a), Self::Platform(b)) => a == b,
            (Self::Resource(a), Self::Resource(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

/// A validated VM definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmShape {
    pub size: &'static str,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub image: ImageName,
    /// The OS disk's size, GiB (`None`: the image's own size).
    pub os_disk_gb: Option<u64>,
    pub trusted_launch: bool,
    pub secure_boot: bool,
    pub vtpm: bool,
}

impl VmShape {
    /// Checks the input; defaults are Azure's for trusted launch: TrustedLaunch, secure boot
    /// and vTPM on.
    pub fn from_input(input: &VmInput) -> Result<VmShape, ApiError> {
        let size_name = input
            .hardware_profile
            .as_ref()
            .and_then(|h| h.vm_size.as_deref())
            .unwrap_or(DEFAULT_SIZE);
        let &(size, vcpus, memory_mib) = SIZES
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(size_name))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidVmSize",
                    format!(
                        "unknown VM size '{size_name}': use one of {}",
                        SIZES.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
        let storage = input.storage_profile.as_ref();
        let image = match (
            storage.and_then(|s| s.image.clone()),
            storage.and_then(|s| s.image_reference.as_ref()),
        ) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "InvalidImage",
                    "give properties.storageProfile.image (a platform image) or storageProfile.imageReference.id (an image resource), not both",
                ));
            }
            (None, None) => {
                return Err(ApiError::bad_request(
                    "ImageRequired",
                    "properties.storageProfile.image (e.g. \"tiny\") or storageProfile.imageReference.id (an image resource) is required",
                ));
            }
            (Some(image), None) => {
                if !PLATFORM_IMAGES.contains(&image.as_str()) {
                    return Err(ApiError::bad_request(
                        "ImageNotFound",
                        format!(
                            "image '{image}' not found: the platform images are {}; an imported image is named by its id in storageProfile.imageReference.id",
                            PLATFORM_IMAGES.join(", ")
                        ),
                    ));
                }
                ImageName::Platform(image)
            }
            (None, Some(r)) => {
                let id = strata_types::ResourceId::parse(&r.id)
                    .ok()
                    .filter(|id| {
                        id.resource_type().is_some_and(|t| {
                            t.as_str().eq_ignore_ascii_case("Strata.Compute/images")
                        })
                    })
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "InvalidImageReference",
                            "storageProfile.imageReference.id must be an image's id: /subscriptions/SUB/resourceGroups/RG/providers/Strata.Compute/images/NAME",
                        )
                    })?;
                ImageName::Resource(id.to_string())
            }
        };
        let os_disk_gb = storage
            .and_then(|s| s.os_disk.as_ref())
            .and_then(|d| d.disk_size_gb);
        if let Some(gb) = os_disk_gb
            && !(1..=MAX_OS_DISK_GB).contains(&gb)
        {
            return Err(ApiError::bad_request(
                "InvalidDiskSize",
                format!("storageProfile.osDisk.diskSizeGB must be 1 to {MAX_OS_DISK_GB}, got {gb}"),
            ));
        }
        let security = input.security_profile.as_ref();
        let security_type = security
            .and_then(|s| s.security_type.as_deref())
            .unwrap_or("TrustedLaunch");
        let uefi = security.and_then(|s| s.uefi_settings.as_ref());
        let secure_boot = uefi.and_then(|u| u.secure_boot_enabled);
        let vtpm = uefi.and_then(|u| u.v_tpm_enabled);
        let (trusted_launch, secure_boot, vtpm) = if security_type
            .eq_ignore_ascii_case("TrustedLaunch")
        {
            (true, secure_boot.unwrap_or(true), vtpm.unwrap_or(true))
        } else if security_type.eq_ignore_ascii_case("Standard") {
            if secure_boot == Some(true) || vtpm == Some(true) {
                return Err(ApiError::bad_request(
                    "InvalidSecurityProfile",
                    "secure boot and vTPM need securityType TrustedLaunch; Standard VMs have neither",
                ));
            }
            (false, false, false)
        } else {
            return Err(ApiError::bad_request(
                "InvalidSecurityType",
                format!(
                    "unknown securityType '{security_type}': use TrustedLaunch (the default) or Standard"
                ),
            ));
        };
        Ok(VmShape {
            size,
            vcpus,
            memory_mib,
            image,
            os_disk_gb,
            trusted_launch,
            secure_boot,
            vtpm,
        })
    }

    /// The shape's part of the resource's properties.
    pub fn properties(&self) -> Value {
        let mut storage = match &self.image {
            ImageName::Platform(name) => json!({ "image": name }),
            ImageName::Resource(id) => json!({ "imageReference": { "id": id } }),
        };
        if let Some(gb) = self.os_disk_gb {
            storage["osDisk"] = json!({ "diskSizeGB": gb });
        }
        json!({
            "hardwareProfile": {
                "vmSize": self.size,
                "vCpus": self.vcpus,
                "memoryMiB": self.memory_mib,
            },
            "storageProfile": storage,
            "securityProfile": {
                "securityType": if self.trusted_launch { "TrustedLaunch" } else { "Standard" },
                "uefiSettings": {
                    "secureBootEnabled": self.secure_boot,
                    "vTpmEnabled": self.vtpm,
                },
            },
        })
    }

    /// Reads the shape back from stored properties.
    pub fn of_properties(props: &Value) -> Option<VmShape> {
        let size_name = props.pointer("/hardwareProfile/vmSize")?.as_str()?;
        let &(size, vcpus, memory_mib) = SIZES.iter().find(|(n, _, _)| *n == size_name)?;
        let image = match props
            .pointer("/storageProfile/image")
            .and_then(Value::as_str)
        {
            Some(name) => ImageName::Platform(name.to_owned()),
            None => ImageName::Resource(
                props
                    .pointer("/storageProfile/imageReference/id")?
                    .as_str()?
                    .to_owned(),
            ),
        };
        Some(VmShape {
            size,
            vcpus,
            memory_mib,
            image,
            os_disk_gb: props
                .pointer("/storageProfile/osDisk/diskSizeGB")
                .and_then(Value::as_u64),
            trusted_launch: props.pointer("/securityProfile/securityType")?.as_str()?
                == "TrustedLaunch",
            secure_boot: props
                .pointer("/securityProfile/uefiSettings/secureBootEnabled")?
                .as_bool()?,
            vtpm: props
                .pointer("/securityProfile/uefiSettings/vTpmEnabled")?
                .as_bool()?,
        })
    }
}

/// A power state an agent reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reported {
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
    Deleted,
}

/// The resource's `(provisioningState, powerState)` after a report, given what was asked.
pub fn fold_report(desired: Desired, reported: Reported) -> (&'static str, &'static str) {
    match (desired, reported) {
        (_, Reported::Failed) => ("Failed", "stopped"),
        (Desired::Running, Reported::Running) => ("Succeeded", "running"),
        (Desired::Stopped, Reported::Stopped) => ("Succeeded", "stopped"),
        (_, Reported::Creating) => ("Creating", "starting"),
        (_, Reported::Starting) => ("Updating", "starting"),
        (_, Reported::Stopping) => ("Updating", "stopping"),
        (Desired::Running, Reported::Stopped) => ("Updating", "starting"),
        (Desired::Stopped, Reported::Running) => ("Updating", "stopping"),
        (_, Reported::Deleted) => ("Updating", "stopped"),
    }
}

/// The tail of a console log, cut at a character boundary.
pub fn console_tail(text: &str) -> &str {
    if text.len() <= CONSOLE_TAIL_MAX {
        return text;
    }
    let mut start = text.len() - CONSOLE_TAIL_MAX;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(props: Value) -> Result<VmShape, String> {
        let input: VmInput = serde_json::from_value(props).map_err(|e| e.to_string())?;
        VmShape::from_input(&input).map_err(|e| format!("{}: {}", e.code, e.message))
    }

    #[test]
    fn defaults_are_trusted_launch() {
        let s = shape(json!({ "storageProfile": { "image": "tiny" } })).unwrap();
        assert_eq!(
            (
                s.size,
                s.vcpus,
                s.memory_mib,
                s.trusted_launch,
                s.secure_boot,
                s.vtpm
            ),
            ("Strata_B1", 1, 512, true, true, true)
        );
        assert_eq!(VmShape::of_properties(&s.properties()), Some(s));
    }

    #[test]
    fn validation_names_the_bad_input() {
        for (props, expect) in [
            (json!({}), "ImageRequired"),
            (
                json!({ "storageProfile": { "image": "win11" } }),
                "ImageNotFound: image 'win11'",
            ),
            (
                json!({ "storageProfile": { "image": "tiny" }, "hardwareProfile": { "vmSize": "huge" } }),
                "InvalidVmSize: unknown VM size 'huge': use one of Strata_B1",
            ),
            (
                json!({ "storageProfile": { "image": "tiny" }, "securityProfile": { "securityType": "Confidential" } }),
                "InvalidSecurityType",
            ),
            (
                json!({ "storageProfile": { "image": "tiny" }, "securityProfile": { "securityType": "Standard", "uefiSettings": { "vTpmEnabled": true } } }),
                "InvalidSecurityProfile",
            ),
            (
                json!({ "storageProfile": { "image": "tiny", "disk": 1 } }),
                "unknown field `disk`",
            ),
        ] {
            let err = shape(props.clone()).unwrap_err();
            assert!(err.contains(expect), "{props}: {err}");
        }
        let s = shape(json!({ "storageProfile": { "image": "tiny" }, "securityProfile": { "securityType": "standard" } })).unwrap();
        assert!(!s.trusted_launch && !s.secure_boot && !s.vtpm);
        let s = shape(json!({ "storageProfile": { "image": "tiny" }, "securityProfile": { "uefiSettings": { "secureBootEnabled": false } } })).unwrap();
        assert!(s.trusted_launch && !s.secure_boot && s.vtpm);
    }

    #[test]
    fn image_references_and_os_disk_sizes() {
        let id = "/subscriptions/s1/resourceGroups/golden/providers/Strata.Compute/images/ubuntu";
        let s = shape(json!({ "storageProfile": {
            "imageReference": { "id": id }, "osDisk": { "diskSizeGB": 20 } } }))
        .unwrap();
        assert_eq!(s.image, ImageName::Resource(id.into()));
        assert_eq!(s.os_disk_gb, Some(20));
        assert_eq!(VmShape::of_properties(&s.properties()), Some(s.clone()));
        // The same image named with other casing is the same image.
        assert_eq!(ImageName::Resource(id.to_uppercase()), s.image);
        assert_ne!(ImageName::Platform("tiny".into()), s.image);
        for (props, expect) in [
            (
                json!({ "storageProfile": { "image": "tiny", "imageReference": { "id": id } } }),
                "InvalidImage",
            ),
            (
                json!({ "storageProfile": { "imageReference": { "id": "/subscriptions/s1/resourceGroups/g/providers/Strata.Compute/disks/d" } } }),
                "InvalidImageReference",
            ),
            (
                json!({ "storageProfile": { "image": "tiny", "osDisk": { "diskSizeGB": 0 } } }),
                "InvalidDiskSize",
            ),
            (
                json!({ "storageProfile": { "image": "tiny", "osDisk": { "diskSizeGB": MAX_OS_DISK_GB + 1 } } }),
                "InvalidDiskSize",
            ),
        ] {
            let err = shape(props.clone()).unwrap_err();
            assert!(err.starts_with(expect), "{props}: {err}");
        }
    }

    #[test]
    fn reports_fold_into_states() {
        use Desired::*;
        use Reported as R;
        for (desired, reported, expect) in [
            (Running, R::Creating, ("Creating", "starting")),
            (Running, R::Running, ("Succeeded", "running")),
            (Running, R::Failed, ("Failed", "stopped")),
            (Stopped, R::Running, ("Updating", "stopping")),
            (Stopped, R::Stopped, ("Succeeded", "stopped")),
            (Running, R::Stopped, ("Updating", "starting")),
        ] {
            assert_eq!(
                fold_report(desired, reported),
                expect,
                "{desired:?} {reported:?}"
            );
        }
    }

    #[test]
    fn console_tail_keeps_the_end() {
        let long = "é".repeat(CONSOLE_TAIL_MAX);
        let tail = console_tail(&long);
        assert!(tail.len() <= CONSOLE_TAIL_MAX && tail.chars().all(|c| c == 'é'));
        assert_eq!(console_tail("short"), "short");
    }
}
