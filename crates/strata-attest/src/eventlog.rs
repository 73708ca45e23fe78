//! The TCG PC Client crypto-agile event log (TCG PC Client Platform Firmware Profile,
//! section 10): what the firmware and boot loaders measured, in order.
//!
//! ```text
//! TCG_PCClientPCREvent  pcr=0 EV_NO_ACTION sha1-digest=0…0 "Spec ID Event03\0" + digest sizes
//! TCG_PCR_EVENT2        pcr, type, TPML_DIGEST_VALUES {alg, digest}×n, size, data
//! TCG_PCR_EVENT2        …
//! ```
//!
//! All integers are little-endian. The header (event #0) lists every bank's algorithm and
//! digest size; each following event must carry exactly one digest per listed bank (this is
//! how the parser knows where a digest ends, so an event that disagrees is malformed, not
//! guessed at). Events are numbered from 1 in the order they appear after the header.
//!
//! [`replay`] recomputes the PCRs of one bank: every event except `EV_NO_ACTION` extends
//! its PCR (`PCR = H(PCR ‖ digest)`), starting from the TPM's reset value
//! ([`initial_pcr_value`]: zeros, all-ones for the DRTM PCRs 17–22). The one `EV_NO_ACTION`
//! event that changes the result is `StartupLocality` (TPM2_Startup from locality 3, or an
//! H-CRTM at locality 4), which starts PCR 0 at `0…03` / `0…04`; other `EV_NO_ACTION` events
//! (SP 800-155 reference manifests, firmware vendor notes) are skipped.
//!
//! [`LogView`] is the same parser without copying: events borrow their digests and data from
//! the log bytes, and [`EventView`] has every accessor of [`Event`]. The appraisal reads the
//! log this way and replays only the quoted PCRs ([`replay_selected`]); [`EventLog`] (owned,
//! encodable) is built from a [`LogView`], so both accept and refuse the same bytes.
//!
//! [`LogBuilder`] writes logs in the same format (the boot simulator and the tests use it),
//! and the typed accessors decode the UEFI event data this crate appraises:
//! `UEFI_VARIABLE_DATA` ([`UefiVariable`]), `UEFI_IMAGE_LOAD_EVENT` ([`ImageLoadEvent`]),
//! `UEFI_PLATFORM_FIRMWARE_BLOB` ([`FirmwareBlob`]) and boot loader strings.
//!
//! Event data is only ever *descriptive* unless its digest binds it: [`Event::data_is_bound`]
//! says whether the recorded digest is the hash of the recorded data (or, for a GRUB kernel
//! command line, of the command line itself), which the appraisal requires before it trusts
//! a variable's value or a command line.

use std::collections::BTreeMap;
use std::fmt;

use crate::hash::{HashAlg, InlineDigest};
use crate::wire::{Reader, WireError, len_u32};

/// `EV_PREBOOT_CERT`.
pub const EV_PREBOOT_CERT: u32 = 0x0000_0000;
/// `EV_POST_CODE`.
pub const EV_POST_CODE: u32 = 0x0000_0001;
/// `EV_UNUSED`.
pub const EV_UNUSED: u32 = 0x0000_0002;
/// `EV_NO_ACTION`: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_SEPARATOR`.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// `EV_ACTION`.
pub const EV_ACTION: u32 = 0x0000_0005;
/// `EV_EVENT_TAG`.
pub const EV_EVENT_TAG: u32 = 0x0000_0006;
/// `EV_S_CRTM_CONTENTS`.
pub const EV_S_CRTM_CONTENTS: u32 = 0x0000_0007;
/// `EV_S_CRTM_VERSION`.
pub const EV_S_CRTM_VERSION: u32 = 0x0000_0008;
/// `EV_CPU_MICROCODE`.
pub const EV_CPU_MICROCODE: u32 = 0x0000_0009;
/// `EV_PLATFORM_CONFIG_FLAGS`.
pub const EV_PLATFORM_CONFIG_FLAGS: u32 = 0x0000_000a;
/// `EV_TABLE_OF_DEVICES`.
pub const EV_TABLE_OF_DEVICES: u32 = 0x0000_000b;
/// `EV_COMPACT_HASH`.
pub const EV_COMPACT_HASH: u32 = 0x0000_000c;
/// `EV_IPL`: boot loader measurements (GRUB commands and kernel command line).
pub const EV_IPL: u32 = 0x0000_000d;
/// `EV_IPL_PARTITION_DATA`.
pub const EV_IPL_PARTITION_DATA: u32 = 0x0000_000e;
/// `EV_NONHOST_CODE`.
pub const EV_NONHOST_CODE: u32 = 0x0000_000f;
/// `EV_NONHOST_CONFIG`.
pub const EV_NONHOST_CONFIG: u32 = 0x0000_0010;
/// `EV_NONHOST_INFO`.
pub const EV_NONHOST_INFO: u32 = 0x0000_0011;
/// `EV_OMIT_BOOT_DEVICE_EVENTS`.
pub const EV_OMIT_BOOT_DEVICE_EVENTS: u32 = 0x0000_0012;
/// `EV_POST_CODE2`.
pub const EV_POST_CODE2: u32 = 0x0000_0013;
/// `EV_EFI_VARIABLE_DRIVER_CONFIG`: Secure Boot configuration (PCR 7), digest of the
/// whole `UEFI_VARIABLE_DATA`.
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
/// `EV_EFI_VARIABLE_BOOT`: `Boot####` / `BootOrder` (PCR 1).
pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
/// `EV_EFI_BOOT_SERVICES_APPLICATION`: a loaded UEFI application (PCR 4), digest = PE
/// Authenticode hash of the image.
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// `EV_EFI_BOOT_SERVICES_DRIVER`.
pub const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
/// `EV_EFI_RUNTIME_SERVICES_DRIVER`.
pub const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;
/// `EV_EFI_GPT_EVENT`.
pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
/// `EV_EFI_ACTION`.
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
/// `EV_EFI_PLATFORM_FIRMWARE_BLOB`: a firmware volume (PCR 0).
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
/// `EV_EFI_HANDOFF_TABLES`.
pub const EV_EFI_HANDOFF_TABLES: u32 = 0x8000_0009;
/// `EV_EFI_PLATFORM_FIRMWARE_BLOB2` (with a description).
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000a;
/// `EV_EFI_HANDOFF_TABLES2`.
pub const EV_EFI_HANDOFF_TABLES2: u32 = 0x8000_000b;
/// `EV_EFI_VARIABLE_BOOT2`.
pub const EV_EFI_VARIABLE_BOOT2: u32 = 0x8000_000c;
/// `EV_EFI_GPT_EVENT2`.
pub const EV_EFI_GPT_EVENT2: u32 = 0x8000_000d;
/// `EV_EFI_HCRTM_EVENT`.
pub const EV_EFI_HCRTM_EVENT: u32 = 0x8000_0010;
/// `EV_EFI_VARIABLE_AUTHORITY`: the `db` entry that authorized an image (PCR 7).
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00e0;
/// `EV_EFI_SPDM_FIRMWARE_BLOB`.
pub const EV_EFI_SPDM_FIRMWARE_BLOB: u32 = 0x8000_00e1;
/// `EV_EFI_SPDM_FIRMWARE_CONFIG`.
pub const EV_EFI_SPDM_FIRMWARE_CONFIG: u32 = 0x8000_00e2;

const NAMES: &[(u32, &str)] = &[
    (EV_PREBOOT_CERT, "EV_PREBOOT_CERT"),
    (EV_POST_CODE, "EV_POST_CODE"),
    (EV_UNUSED, "EV_UNUSED"),
    (EV_NO_ACTION, "EV_NO_ACTION"),
    (EV_SEPARATOR, "EV_SEPARATOR"),
    (EV_ACTION, "EV_ACTION"),
    (EV_EVENT_TAG, "EV_EVENT_TAG"),
    (EV_S_CRTM_CONTENTS, "EV_S_CRTM_CONTENTS"),
    (EV_S_CRTM_VERSION, "EV_S_CRTM_VERSION"),
    (EV_CPU_MICROCODE, "EV_CPU_MICROCODE"),
    (EV_PLATFORM_CONFIG_FLAGS, "EV_PLATFORM_CONFIG_FLAGS"),
    (EV_TABLE_OF_DEVICES, "EV_TABLE_OF_DEVICES"),
    (EV_COMPACT_HASH, "EV_COMPACT_HASH"),
    (EV_IPL, "EV_IPL"),
    (EV_IPL_PARTITION_DATA, "EV_IPL_PARTITION_DATA"),
    (EV_NONHOST_CODE, "EV_NONHOST_CODE"),
    (EV_NONHOST_CONFIG, "EV_NONHOST_CONFIG"),
    (EV_NONHOST_INFO, "EV_NONHOST_INFO"),
    (EV_OMIT_BOOT_DEVICE_EVENTS, "EV_OMIT_BOOT_DEVICE_EVENTS"),
    (EV_POST_CODE2, "EV_POST_CODE2"),
    (
        EV_EFI_VARIABLE_DRIVER_CONFIG,
        "EV_EFI_VARIABLE_DRIVER_CONFIG",
    ),
    (EV_EFI_VARIABLE_BOOT, "EV_EFI_VARIABLE_BOOT"),
    (
        EV_EFI_BOOT_SERVICES_APPLICATION,
        "EV_EFI_BOOT_SERVICES_APPLICATION",
    ),
    (EV_EFI_BOOT_SERVICES_DRIVER, "EV_EFI_BOOT_SERVICES_DRIVER"),
    (
        EV_EFI_RUNTIME_SERVICES_DRIVER,
        "EV_EFI_RUNTIME_SERVICES_DRIVER",
    ),
    (EV_EFI_GPT_EVENT, "EV_EFI_GPT_EVENT"),
    (EV_EFI_ACTION, "EV_EFI_ACTION"),
    (
        EV_EFI_PLATFORM_FIRMWARE_BLOB,
        "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    ),
    (EV_EFI_HANDOFF_TABLES, "EV_EFI_HANDOFF_TABLES"),
    (
        EV_EFI_PLATFORM_FIRMWARE_BLOB2,
        "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    ),
    (EV_EFI_HANDOFF_TABLES2, "EV_EFI_HANDOFF_TABLES2"),
    (EV_EFI_VARIABLE_BOOT2, "EV_EFI_VARIABLE_BOOT2"),
    (EV_EFI_GPT_EVENT2, "EV_EFI_GPT_EVENT2"),
    (EV_EFI_HCRTM_EVENT, "EV_EFI_HCRTM_EVENT"),
    (EV_EFI_VARIABLE_AUTHORITY, "EV_EFI_VARIABLE_AUTHORITY"),
    (EV_EFI_SPDM_FIRMWARE_BLOB, "EV_EFI_SPDM_FIRMWARE_BLOB"),
    (EV_EFI_SPDM_FIRMWARE_CONFIG, "EV_EFI_SPDM_FIRMWARE_CONFIG"),
];

/// The spec name of an event type (`EV_IPL`), or `None` for unknown types.
pub fn event_type_name(event_type: u32) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, n)| *n)
}

/// An event type for messages: its spec name, or its hex value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventType(pub u32);

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match event_type_name(self.0) {
            Some(n) => f.write_str(n),
            None => write!(f, "event type {:#010x}", self.0),
        }
    }
}

impl serde::Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// The Spec ID header's signature.
pub const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// The `StartupLocality` `EV_NO_ACTION` event's signature.
pub const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
/// The prefix GRUB gives the kernel command line in its PCR 8 `EV_IPL` event.
pub const KERNEL_CMDLINE_PREFIX: &str = "kernel_cmdline: ";

/// Most banks a Spec ID event may list.
const MAX_ALGORITHMS: u32 = 16;
/// Largest digest size a Spec ID event may declare.
const MAX_DIGEST_SIZE: u16 = 64;

/// Why bytes are not a crypto-agile event log (or event data is not what its type says).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The log ended inside a structure.
    #[error("event #{index}: {source}")]
    Wire {
        /// The event (0 = the Spec ID header).
        index: usize,
        /// What was cut.
        #[source]
        source: WireError,
    },
    /// The first event is not a Spec ID Event03 header (a SHA-1-only legacy log, or junk).
    #[error("not a crypto-agile event log: {reason}")]
    NotCryptoAgile {
        /// What was wrong with the header.
        reason: String,
    },
    /// The Spec ID header's algorithm list is unusable.
    #[error("invalid spec id event: {reason}")]
    SpecId {
        /// Why.
        reason: String,
    },
    /// An event's digests do not match the banks the header declares.
    #[error("event #{index}: {reason}")]
    Digests {
        /// The event.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The log has no digests for the bank asked for.
    #[error("the event log has no {bank} bank (it records {recorded})")]
    BankNotInLog {
        /// The bank asked for.
        bank: HashAlg,
        /// The banks it has.
        recorded: String,
    },
    /// Event data does not decode as the structure its type promises.
    #[error("{what}: {reason}")]
    EventData {
        /// The structure.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

fn wire(index: usize) -> impl Fn(WireError) -> LogError {
    move |source| LogError::Wire { index, source }
}

/// One `digestSizes` entry of the Spec ID header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgorithmSize {
    /// TPM_ALG_ID.
    pub alg_id: u16,
    /// Digest size in bytes.
    pub digest_size: u16,
}

/// `TCG_EfiSpecIDEvent`: the header of a crypto-agile log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    /// 0 = client, 1 = server.
    pub platform_class: u32,
    /// specVersionMinor.
    pub spec_version_minor: u8,
    /// specVersionMajor.
    pub spec_version_major: u8,
    /// specErrata.
    pub spec_errata: u8,
    /// 1 = 32-bit UINTN, 2 = 64-bit.
    pub uintn_size: u8,
    /// The banks every event records, in order.
    pub algorithms: Vec<AlgorithmSize>,
    /// Vendor data.
    pub vendor_info: Vec<u8>,
}

impl SpecId {
    fn parse(data: &[u8]) -> Result<SpecId, LogError> {
        let mut r = Reader::new(data);
        let w = wire(0);
        let sig = r.take(16, "TCG_EfiSpecIDEvent.signature").map_err(&w)?;
        if sig != SPEC_ID_SIGNATURE {
            return Err(LogError::NotCryptoAgile {
                reason: format!(
                    "the header signature is {:?}, not \"Spec ID Event03\"",
                    String::from_utf8_lossy(sig).trim_end_matches('\0')
                ),
            });
        }
        let platform_class = r.u32_le("TCG_EfiSpecIDEvent.platformClass").map_err(&w)?;
        let spec_version_minor = r.u8("TCG_EfiSpecIDEvent.specVersionMinor").map_err(&w)?;
        let spec_version_major = r.u8("TCG_EfiSpecIDEvent.specVersionMajor").map_err(&w)?;
        let spec_errata = r.u8("TCG_EfiSpecIDEvent.specErrata").map_err(&w)?;
        let uintn_size = r.u8("TCG_EfiSpecIDEvent.uintnSize").map_err(&w)?;
        let n = r
            .u32_le("TCG_EfiSpecIDEvent.numberOfAlgorithms")
            .map_err(&w)?;
        if n == 0 || n > MAX_ALGORITHMS {
            return Err(LogError::SpecId {
                reason: format!("{n} algorithms (1 to {MAX_ALGORITHMS} are allowed)"),
            });
        }
        let mut algorithms: Vec<AlgorithmSize> = Vec::new();
        for _ in 0..n {
            let alg_id = r
                .u16_le("TCG_EfiSpecIdEventAlgorithmSize.algorithmId")
                .map_err(&w)?;
            let digest_size = r
                .u16_le("TCG_EfiSpecIdEventAlgorithmSize.digestSize")
                .map_err(&w)?;
            if algorithms.iter().any(|a| a.alg_id == alg_id) {
                return Err(LogError::SpecId {
                    reason: format!("algorithm {alg_id:#06x} is listed twice"),
                });
            }
            let expected = HashAlg::from_alg_id(alg_id).map(HashAlg::digest_len);
            if digest_size == 0
                || digest_size > MAX_DIGEST_SIZE
                || expected.is_some_and(|e| e != usize::from(digest_size))
            {
                return Err(LogError::SpecId {
                    reason: format!("algorithm {alg_id:#06x} has digest size {digest_size}"),
                });
            }
            algorithms.push(AlgorithmSize {
                alg_id,
                digest_size,
            });
        }
        let vendor_len = r.u8("TCG_EfiSpecIDEvent.vendorInfoSize").map_err(&w)?;
        let vendor_info = r
            .take(usize::from(vendor_len), "TCG_EfiSpecIDEvent.vendorInfo")
            .map_err(&w)?
            .to_vec();
        r.finish("TCG_EfiSpecIDEvent").map_err(&w)?;
        Ok(SpecId {
            platform_class,
            spec_version_minor,
            spec_version_major,
            spec_errata,
            uintn_size,
            algorithms,
            vendor_info,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = SPEC_ID_SIGNATURE.to_vec();
        v.extend_from_slice(&self.platform_class.to_le_bytes());
        v.extend_from_slice(&[
            self.spec_version_minor,
            self.spec_version_major,
            self.spec_errata,
            self.uintn_size,
        ]);
        v.extend_from_slice(&len_u32(self.algorithms.len()).to_le_bytes());
        for a in &self.algorithms {
            v.extend_from_slice(&a.alg_id.to_le_bytes());
            v.extend_from_slice(&a.digest_size.to_le_bytes());
        }
        let n = self.vendor_info.len().min(255);
        v.push(n as u8);
        v.extend_from_slice(&self.vendor_info[..n]);
        v
    }
}

/// One `TCG_PCR_EVENT2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// PCR index.
    pub pcr: u32,
    /// Event type (`EV_*`).
    pub event_type: u32,
    /// `(TPM_ALG_ID, digest)` for every bank, in log order.
    pub digests: Vec<(u16, Vec<u8>)>,
    /// Event data.
    pub data: Vec<u8>,
}

impl Event {
    /// The digest extended into `bank`.
    pub fn digest(&self, bank: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(id, _)| *id == bank.alg_id())
            .map(|(_, d)| d.as_slice())
    }

    /// This event seen through `bank` (its digest there, and borrowed data).
    pub fn view(&self, bank: HashAlg) -> EventView<'_> {
        EventView {
            pcr: self.pcr,
            event_type: self.event_type,
            bank,
            digest: self.digest(bank),
            data: &self.data,
        }
    }

    /// A view for the accessors that read only the PCR, type and data.
    fn body(&self) -> EventView<'_> {
        EventView {
            pcr: self.pcr,
            event_type: self.event_type,
            bank: HashAlg::Sha256,
            digest: None,
            data: &self.data,
        }
    }

    /// The event type, printable.
    pub fn kind(&self) -> EventType {
        EventType(self.event_type)
    }

    /// `UEFI_VARIABLE_DATA` of a variable event (`EV_EFI_VARIABLE_*`).
    pub fn variable(&self) -> Option<Result<UefiVariable, LogError>> {
        self.body().variable()
    }

    /// `UEFI_IMAGE_LOAD_EVENT` of an image event (applications and drivers).
    pub fn image_load(&self) -> Option<Result<ImageLoadEvent, LogError>> {
        self.body().image_load()
    }

    /// `UEFI_PLATFORM_FIRMWARE_BLOB(2)` of a firmware blob event.
    pub fn firmware_blob(&self) -> Option<Result<FirmwareBlob, LogError>> {
        self.body().firmware_blob()
    }

    /// The event data as text, for the types whose data is a string: `EV_IPL`,
    /// `EV_EFI_ACTION`, `EV_ACTION`, `EV_POST_CODE` (ASCII/UTF-8) and `EV_S_CRTM_VERSION`
    /// (UTF-16LE). Trailing NULs are dropped. `None` when the data is not valid text.
    pub fn text(&self) -> Option<String> {
        self.body().text()
    }

    /// The kernel command line of a GRUB `EV_IPL` event in PCR 8
    /// (`kernel_cmdline: …`), without the prefix.
    pub fn kernel_cmdline(&self) -> Option<String> {
        self.body().kernel_cmdline().map(str::to_owned)
    }

    /// Whether the digest in `bank` is the hash of what the data claims was measured: the
    /// whole event data, or for a GRUB kernel command line the command line itself (GRUB
    /// measures the bare string and logs it with its prefix). An event whose data is not
    /// bound this way tells nothing about what was measured.
    pub fn data_is_bound(&self, bank: HashAlg) -> bool {
        self.view(bank).data_is_bound()
    }

    /// A short human description: the variable name, image path, blob address or text.
    pub fn description(&self) -> Option<String> {
        self.body().description()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pcr.to_le_bytes());
        out.extend_from_slice(&self.event_type.to_le_bytes());
        out.extend_from_slice(&len_u32(self.digests.len()).to_le_bytes());
        for (alg, d) in &self.digests {
            out.extend_from_slice(&alg.to_le_bytes());
            out.extend_from_slice(d);
        }
        out.extend_from_slice(&len_u32(self.data.len()).to_le_bytes());
        out.extend_from_slice(&self.data);
    }
}

/// One event as the appraisal reads it: borrowed from the log (or an [`Event`]), seen through
/// one bank. Every accessor of [`Event`] is here, without copying the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventView<'a> {
    /// PCR index.
    pub pcr: u32,
    /// Event type (`EV_*`).
    pub event_type: u32,
    /// The bank [`EventView::digest`] is from.
    pub bank: HashAlg,
    /// The digest extended into `bank`, if the event has one.
    pub digest: Option<&'a [u8]>,
    /// Event data.
    pub data: &'a [u8],
}

impl<'a> EventView<'a> {
    /// The event type, printable.
    pub fn kind(&self) -> EventType {
        EventType(self.event_type)
    }

    fn is_variable(&self) -> bool {
        matches!(
            self.event_type,
            EV_EFI_VARIABLE_DRIVER_CONFIG
                | EV_EFI_VARIABLE_BOOT
                | EV_EFI_VARIABLE_BOOT2
                | EV_EFI_VARIABLE_AUTHORITY
        )
    }

    /// `UEFI_VARIABLE_DATA` of a variable event (`EV_EFI_VARIABLE_*`).
    pub fn variable(&self) -> Option<Result<UefiVariable, LogError>> {
        self.is_variable().then(|| UefiVariable::parse(self.data))
    }

    /// `UEFI_VARIABLE_DATA` of a variable event, read in place; `None` when this is not a
    /// variable event or the structure is malformed. Its name is not decoded: a name that is
    /// not UTF-16 matches no [`VariableRef::name_is`] (where [`EventView::variable`] fails).
    pub fn variable_ref(&self) -> Option<VariableRef<'a>> {
        if !self.is_variable() {
            return None;
        }
        VariableRef::parse(self.data)
    }

    /// `UEFI_IMAGE_LOAD_EVENT` of an image event (applications and drivers).
    pub fn image_load(&self) -> Option<Result<ImageLoadEvent, LogError>> {
        matches!(
            self.event_type,
            EV_EFI_BOOT_SERVICES_APPLICATION
                | EV_EFI_BOOT_SERVICES_DRIVER
                | EV_EFI_RUNTIME_SERVICES_DRIVER
        )
        .then(|| ImageLoadEvent::parse(self.data))
    }

    /// `UEFI_PLATFORM_FIRMWARE_BLOB(2)` of a firmware blob event.
    pub fn firmware_blob(&self) -> Option<Result<FirmwareBlob, LogError>> {
        match self.event_type {
            EV_EFI_PLATFORM_FIRMWARE_BLOB => Some(FirmwareBlob::parse(self.data)),
            EV_EFI_PLATFORM_FIRMWARE_BLOB2 => Some(FirmwareBlob::parse2(self.data)),
            _ => None,
        }
    }

    /// The data of the UTF-8 text types, without trailing NULs (see [`Event::text`]).
    fn utf8_text(&self) -> Option<&'a str> {
        match self.event_type {
            EV_IPL | EV_EFI_ACTION | EV_ACTION | EV_POST_CODE => std::str::from_utf8(self.data)
                .ok()
                .map(|s| s.trim_end_matches('\0')),
            _ => None,
        }
    }

    /// The event data as text (see [`Event::text`]).
    pub fn text(&self) -> Option<String> {
        match self.event_type {
            EV_S_CRTM_VERSION => utf16_to_string(self.data)
                .ok()
                .map(|s| s.trim_end_matches('\0').to_owned()),
            _ => self.utf8_text().map(str::to_owned),
        }
    }

    /// The kernel command line of a GRUB `EV_IPL` event in PCR 8 (`kernel_cmdline: …`),
    /// without the prefix, borrowed from the data.
    pub fn kernel_cmdline(&self) -> Option<&'a str> {
        // The prefix has no NUL, so testing the raw bytes first gives the same answer as
        // testing the text, and skips UTF-8 validation of every other GRUB event.
        if self.pcr != 8
            || self.event_type != EV_IPL
            || !self.data.starts_with(KERNEL_CMDLINE_PREFIX.as_bytes())
        {
            return None;
        }
        self.utf8_text()?.strip_prefix(KERNEL_CMDLINE_PREFIX)
    }

    /// Whether the digest is the hash of what the data claims was measured (see
    /// [`Event::data_is_bound`]).
    pub fn data_is_bound(&self) -> bool {
        let Some(digest) = self.digest else {
            return false;
        };
        // A command line is bound through its bare text (what GRUB measures), anything else
        // through the whole data; either binding is accepted, so the usual one is tried first.
        if let Some(c) = self.kernel_cmdline()
            && self.bank.hash_inline(c.as_bytes()) == *digest
        {
            return true;
        }
        self.bank.hash_inline(self.data) == *digest
    }

    /// A short human description: the variable name, image path, blob address or text.
    pub fn description(&self) -> Option<String> {
        if let Some(Ok(v)) = self.variable() {
            return Some(format!("{} {}", v.guid, v.name));
        }
        if let Some(Ok(i)) = self.image_load() {
            return i.file_path();
        }
        if let Some(Ok(b)) = self.firmware_blob() {
            return Some(format!("{:#x}+{:#x}", b.base, b.length));
        }
        self.text()
    }

    /// The `StartupLocality` of an `EV_NO_ACTION` event in PCR 0.
    fn startup_locality(&self) -> Option<u8> {
        if self.event_type != EV_NO_ACTION || self.pcr != 0 {
            return None;
        }
        match self.data {
            [sig @ .., locality] if sig == STARTUP_LOCALITY_SIGNATURE => Some(*locality),
            _ => None,
        }
    }
}

/// An event as parsed, borrowing from the log bytes: `digests` is the `TPMT_HA` list as it
/// appears (already checked against the header).
#[derive(Debug, Clone, Copy)]
struct RawEvent<'a> {
    pcr: u32,
    event_type: u32,
    digests: &'a [u8],
    data: &'a [u8],
}

impl<'a> RawEvent<'a> {
    fn parse(r: &mut Reader<'a>, index: usize, spec: &SpecId) -> Result<RawEvent<'a>, LogError> {
        let w = wire(index);
        let pcr = r.u32_le("TCG_PCR_EVENT2.pcrIndex").map_err(&w)?;
        let event_type = r.u32_le("TCG_PCR_EVENT2.eventType").map_err(&w)?;
        let count = r.u32_le("TPML_DIGEST_VALUES.count").map_err(&w)?;
        if usize::try_from(count).ok() != Some(spec.algorithms.len()) {
            return Err(LogError::Digests {
                index,
                reason: format!(
                    "{count} digests; the header declares {} banks",
                    spec.algorithms.len()
                ),
            });
        }
        let start = r.rest();
        // INVARIANT: the header lists at most MAX_ALGORITHMS (16) banks, one bit each.
        let mut seen: u32 = 0;
        for _ in 0..count {
            let alg = r.u16_le("TPMT_HA.hashAlg").map_err(&w)?;
            let Some((position, size)) = spec
                .algorithms
                .iter()
                .enumerate()
                .find(|(_, a)| a.alg_id == alg)
                .map(|(i, a)| (i, a.digest_size))
            else {
                return Err(LogError::Digests {
                    index,
                    reason: format!("digest algorithm {alg:#06x} is not declared in the header"),
                });
            };
            let bit = 1u32 << (position % 32);
            if seen & bit != 0 {
                return Err(LogError::Digests {
                    index,
                    reason: format!("digest algorithm {alg:#06x} appears twice"),
                });
            }
            seen |= bit;
            r.take(usize::from(size), "TPMT_HA.digest").map_err(&w)?;
        }
        let digests = &start[..start.len() - r.rest().len()];
        let size = r.u32_le("TCG_PCR_EVENT2.eventSize").map_err(&w)?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let data = r.take(size, "TCG_PCR_EVENT2.event").map_err(&w)?;
        Ok(RawEvent {
            pcr,
            event_type,
            digests,
            data,
        })
    }

    /// `(TPM_ALG_ID, digest)` pairs in log order (the parser checked their shape).
    fn digests<'s>(&self, spec: &'s SpecId) -> impl Iterator<Item = (u16, &'a [u8])> + use<'a, 's> {
        let mut r = Reader::new(self.digests);
        std::iter::from_fn(move || {
            let alg = r.u16_le("TPMT_HA.hashAlg").ok()?;
            let size = spec
                .algorithms
                .iter()
                .find(|a| a.alg_id == alg)?
                .digest_size;
            Some((alg, r.take(usize::from(size), "TPMT_HA.digest").ok()?))
        })
    }

    /// Seen through `bank`.
    fn view(&self, spec: &SpecId, bank: HashAlg) -> EventView<'a> {
        EventView {
            pcr: self.pcr,
            event_type: self.event_type,
            bank,
            digest: self.digest(spec, bank.alg_id()),
            data: self.data,
        }
    }

    fn digest(&self, spec: &SpecId, alg: u16) -> Option<&'a [u8]> {
        // Fast path: digests in the header's order, as firmware writes them. Every entry is
        // checked from the start, so each offset is a real entry boundary.
        let mut offset = 0;
        for a in &spec.algorithms {
            let size = usize::from(a.digest_size);
            if self.digests.get(offset..offset + 2) != Some(&a.alg_id.to_le_bytes()[..]) {
                break;
            }
            if a.alg_id == alg {
                return self.digests.get(offset + 2..offset + 2 + size);
            }
            offset += 2 + size;
        }
        self.digests(spec)
            .find(|(id, _)| *id == alg)
            .map(|(_, d)| d)
    }
}

/// A crypto-agile event log parsed in place: the same strict parser as [`EventLog::parse`],
/// but every event borrows its digests and data from the log bytes (one allocation for the
/// event list instead of several per event). What [`appraise`](crate::appraise()) reads.
#[derive(Debug, Clone)]
pub struct LogView<'a> {
    spec_id: SpecId,
    events: Vec<RawEvent<'a>>,
}

impl<'a> LogView<'a> {
    /// Parses a whole log; accepts and refuses exactly what [`EventLog::parse`] does, with
    /// the same errors.
    pub fn parse(bytes: &'a [u8]) -> Result<LogView<'a>, LogError> {
        let mut r = Reader::new(bytes);
        let w = wire(0);
        let pcr = r.u32_le("TCG_PCClientPCREvent.pcrIndex").map_err(&w)?;
        let event_type = r.u32_le("TCG_PCClientPCREvent.eventType").map_err(&w)?;
        let digest = r.take(20, "TCG_PCClientPCREvent.digest").map_err(&w)?;
        let size = r.u32_le("TCG_PCClientPCREvent.eventDataSize").map_err(&w)?;
        if pcr != 0 || event_type != EV_NO_ACTION || digest.iter().any(|b| *b != 0) {
            return Err(LogError::NotCryptoAgile {
                reason: format!(
                    "the first event is pcr {pcr} {} with a non-zero digest or a type other than EV_NO_ACTION",
                    EventType(event_type)
                ),
            });
        }
        let data = r
            .take(
                usize::try_from(size).unwrap_or(usize::MAX),
                "TCG_PCClientPCREvent.event",
            )
            .map_err(&w)?;
        let spec_id = SpecId::parse(data)?;
        // Real events are rarely under 100 bytes; a guess that saves most regrowth.
        let mut events = Vec::with_capacity(r.remaining() / 128);
        while !r.is_empty() {
            let index = events.len() + 1;
            events.push(RawEvent::parse(&mut r, index, &spec_id)?);
        }
        Ok(LogView { spec_id, events })
    }

    /// The header.
    pub fn spec_id(&self) -> &SpecId {
        &self.spec_id
    }

    /// Events after the header.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the log has no event after the header.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Whether the header declares `bank`.
    pub fn has_bank(&self, bank: HashAlg) -> bool {
        self.spec_id.has_bank(bank)
    }

    /// `(event number, event)` pairs seen through `bank`; numbers start at 1 (the header is
    /// #0).
    pub fn numbered(&self, bank: HashAlg) -> impl Iterator<Item = (usize, EventView<'a>)> + '_ {
        self.events
            .iter()
            .enumerate()
            .map(move |(i, e)| (i + 1, e.view(&self.spec_id, bank)))
    }

    /// The owned log.
    pub fn to_log(&self) -> EventLog {
        EventLog {
            spec_id: self.spec_id.clone(),
            events: self
                .events
                .iter()
                .map(|e| Event {
                    pcr: e.pcr,
                    event_type: e.event_type,
                    digests: e
                        .digests(&self.spec_id)
                        .map(|(alg, d)| (alg, d.to_vec()))
                        .collect(),
                    data: e.data.to_vec(),
                })
                .collect(),
        }
    }
}

impl SpecId {
    fn has_bank(&self, bank: HashAlg) -> bool {
        self.algorithms.iter().any(|a| a.alg_id == bank.alg_id())
    }

    fn bank_not_in_log(&self, bank: HashAlg) -> LogError {
        LogError::BankNotInLog {
            bank,
            recorded: self
                .algorithms
                .iter()
                .map(|a| {
                    HashAlg::from_alg_id(a.alg_id)
                        .map_or_else(|| format!("{:#06x}", a.alg_id), |h| h.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// A parsed crypto-agile event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// The header.
    pub spec_id: SpecId,
    /// The events after the header; `events[i]` is event #`i + 1`.
    pub events: Vec<Event>,
}

impl EventLog {
    /// Parses a whole log (e.g. `binary_bios_measurements`). Strict: the header must be a
    /// Spec ID Event03, every event must carry one digest per declared bank, and the log
    /// must end exactly after its last event.
    pub fn parse(bytes: &[u8]) -> Result<EventLog, LogError> {
        LogView::parse(bytes).map(|v| v.to_log())
    }

    /// Writes the log in the same format.
    pub fn encode(&self) -> Vec<u8> {
        let spec = self.spec_id.encode();
        let mut out = Vec::with_capacity(64 + self.events.len() * 128);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0u8; 20]);
        out.extend_from_slice(&len_u32(spec.len()).to_le_bytes());
        out.extend_from_slice(&spec);
        for e in &self.events {
            e.encode(&mut out);
        }
        out
    }

    /// The banks the header declares that this crate can replay.
    pub fn banks(&self) -> Vec<HashAlg> {
        self.spec_id
            .algorithms
            .iter()
            .filter_map(|a| HashAlg::from_alg_id(a.alg_id))
            .collect()
    }

    /// `(event number, event)` pairs; numbers start at 1 (the header is #0).
    pub fn numbered(&self) -> impl Iterator<Item = (usize, &Event)> {
        self.events.iter().enumerate().map(|(i, e)| (i + 1, e))
    }

    /// The locality TPM2_Startup ran from, if the log records a `StartupLocality` event.
    pub fn startup_locality(&self) -> Option<u8> {
        self.events.iter().find_map(|e| e.body().startup_locality())
    }
}

/// The value PCR `pcr` of `bank` holds after TPM2_Startup (PC Client profile): all ones for
/// the DRTM PCRs 17–22, zeros otherwise.
pub fn initial_pcr_value(pcr: u32, bank: HashAlg) -> Vec<u8> {
    initial_pcr_inline(pcr, bank).as_bytes().to_vec()
}

fn initial_pcr_inline(pcr: u32, bank: HashAlg) -> InlineDigest {
    let fill = if (17..=22).contains(&pcr) { 0xff } else { 0x00 };
    InlineDigest::filled(fill, bank.digest_len())
}

/// Where a replay keeps the running values of the PCRs it computes.
trait PcrStore {
    /// Whether `pcr` has been extended or started since reset.
    fn touched(&self, pcr: u32) -> bool;
    /// The running value of `pcr` (started at its reset value on first use), or `None` when
    /// this store does not compute `pcr`.
    fn value(&mut self, pcr: u32, bank: HashAlg) -> Option<&mut InlineDigest>;
}

/// The replay proper, shared by [`replay`] and [`replay_selected`]: every event except
/// `EV_NO_ACTION` extends its PCR; a `StartupLocality` event before anything touched PCR 0
/// starts it at `0…0 locality`.
fn replay_into<'e>(
    events: impl Iterator<Item = (usize, EventView<'e>)>,
    bank: HashAlg,
    pcrs: &mut impl PcrStore,
) -> Result<(), LogError> {
    for (index, e) in events {
        if e.event_type == EV_NO_ACTION {
            if let Some(locality) = e.startup_locality()
                && !pcrs.touched(0)
                && let Some(v) = pcrs.value(0, bank)
                && let Some(last) = v.as_bytes_mut().last_mut()
            {
                *last = locality;
            }
            continue;
        }
        let digest = e.digest.ok_or_else(|| LogError::Digests {
            index,
            reason: format!("no {bank} digest"),
        })?;
        if let Some(cur) = pcrs.value(e.pcr, bank) {
            bank.extend_inline(cur, digest);
        }
    }
    Ok(())
}

impl PcrStore for BTreeMap<u32, InlineDigest> {
    fn touched(&self, pcr: u32) -> bool {
        self.contains_key(&pcr)
    }

    fn value(&mut self, pcr: u32, bank: HashAlg) -> Option<&mut InlineDigest> {
        Some(
            self.entry(pcr)
                .or_insert_with(|| initial_pcr_inline(pcr, bank)),
        )
    }
}

/// Replays `log` in `bank`: the value of every PCR the log extends (and PCR 0 when a
/// `StartupLocality` event sets its starting value). PCRs the log does not touch are
/// absent; their value should be [`initial_pcr_value`].
pub fn replay(log: &EventLog, bank: HashAlg) -> Result<BTreeMap<u32, Vec<u8>>, LogError> {
    if !log.spec_id.has_bank(bank) {
        return Err(log.spec_id.bank_not_in_log(bank));
    }
    let mut pcrs: BTreeMap<u32, InlineDigest> = BTreeMap::new();
    replay_into(
        log.numbered().map(|(i, e)| (i, e.view(bank))),
        bank,
        &mut pcrs,
    )?;
    Ok(pcrs
        .into_iter()
        .map(|(pcr, v)| (pcr, v.as_bytes().to_vec()))
        .collect())
}

/// The running values of the selected PCRs, in a slot each: found through a table for the
/// PCRs a TPM selection can name (0–255), by a scan otherwise.
struct Selected {
    table: [u32; 256],
    values: Vec<(u32, InlineDigest, bool)>,
}

impl Selected {
    fn new(pcrs: &[u32], bank: HashAlg) -> Selected {
        let mut s = Selected {
            table: [0; 256],
            values: Vec::with_capacity(pcrs.len()),
        };
        for &pcr in pcrs {
            if s.index(pcr).is_some() {
                continue;
            }
            s.values.push((pcr, initial_pcr_inline(pcr, bank), false));
            if let Some(entry) = usize::try_from(pcr).ok().and_then(|p| s.table.get_mut(p)) {
                *entry = u32::try_from(s.values.len()).unwrap_or(0);
            }
        }
        s
    }

    fn index(&self, pcr: u32) -> Option<usize> {
        match usize::try_from(pcr).ok().and_then(|p| self.table.get(p)) {
            Some(0) => None,
            Some(n) => usize::try_from(*n - 1).ok(),
            None => self.values.iter().position(|(p, _, _)| *p == pcr),
        }
    }
}

impl PcrStore for Selected {
    fn touched(&self, pcr: u32) -> bool {
        self.index(pcr)
            .and_then(|i| self.values.get(i))
            .is_some_and(|(_, _, touched)| *touched)
    }

    fn value(&mut self, pcr: u32, _bank: HashAlg) -> Option<&mut InlineDigest> {
        let i = self.index(pcr)?;
        let (_, v, touched) = self.values.get_mut(i)?;
        *touched = true;
        Some(v)
    }
}

/// Replays `log` in `bank` for the PCRs in `pcrs` only, and returns their values in the
/// same order (the reset value for a PCR the log never extends): what [`replay`] gives for
/// them, without hashing the other PCRs' events. Every event is still checked to have a
/// digest in `bank`, as [`replay`] does.
pub fn replay_selected(
    log: &LogView<'_>,
    bank: HashAlg,
    pcrs: &[u32],
) -> Result<Vec<InlineDigest>, LogError> {
    if !log.has_bank(bank) {
        return Err(log.spec_id.bank_not_in_log(bank));
    }
    let mut store = Selected::new(pcrs, bank);
    replay_into(log.numbered(bank), bank, &mut store)?;
    Ok(pcrs
        .iter()
        .map(|pcr| {
            store
                .index(*pcr)
                .and_then(|i| store.values.get(i))
                .map_or_else(|| initial_pcr_inline(*pcr, bank), |(_, v, _)| *v)
        })
        .collect())
}

/// Writes crypto-agile event logs: the boot simulator's and the tests' log writer.
///
/// ```
/// use strata_attest::HashAlg;
/// use strata_attest::eventlog::{EV_SEPARATOR, EventLog, LogBuilder, replay};
///
/// let mut b = LogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256]);
/// b.event(7, EV_SEPARATOR, vec![0; 4]);
/// let log = EventLog::parse(&b.build()).unwrap();
/// let pcrs = replay(&log, HashAlg::Sha256).unwrap();
/// assert_eq!(pcrs[&7], HashAlg::Sha256.extend(&[0; 32], &HashAlg::Sha256.hash(&[0; 4])));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBuilder {
    log: EventLog,
    banks: Vec<HashAlg>,
}

impl LogBuilder {
    /// An empty log recording `banks` (duplicates dropped; at least SHA-256 if empty), with
    /// a PC Client Spec ID header (spec 2.0, errata 0, 64-bit UINTN).
    pub fn new(banks: &[HashAlg]) -> LogBuilder {
        let mut list: Vec<HashAlg> = Vec::new();
        for b in banks {
            if !list.contains(b) {
                list.push(*b);
            }
        }
        if list.is_empty() {
            list.push(HashAlg::Sha256);
        }
        let algorithms = list
            .iter()
            .map(|b| AlgorithmSize {
                alg_id: b.alg_id(),
                digest_size: u16::try_from(b.digest_len()).unwrap_or(u16::MAX),
            })
            .collect();
        LogBuilder {
            log: EventLog {
                spec_id: SpecId {
                    platform_class: 0,
                    spec_version_minor: 0,
                    spec_version_major: 2,
                    spec_errata: 0,
                    uintn_size: 2,
                    algorithms,
                    vendor_info: Vec::new(),
                },
                events: Vec::new(),
            },
            banks: list,
        }
    }

    /// The banks every event records.
    pub fn banks(&self) -> &[HashAlg] {
        &self.banks
    }

    /// Adds an event whose digests are computed by `digest` for each bank.
    pub fn push_with(
        &mut self,
        pcr: u32,
        event_type: u32,
        data: impl Into<Vec<u8>>,
        digest: impl Fn(HashAlg) -> Vec<u8>,
    ) -> &mut Self {
        let digests = self
            .banks
            .iter()
            .map(|b| (b.alg_id(), digest(*b)))
            .collect();
        self.log.events.push(Event {
            pcr,
            event_type,
            digests,
            data: data.into(),
        });
        self
    }

    /// Adds an event measuring its own data (digest = `H(data)`).
    pub fn event(&mut self, pcr: u32, event_type: u32, data: impl Into<Vec<u8>>) -> &mut Self {
        let data = data.into();
        let measured = data.clone();
        self.push_with(pcr, event_type, data, |b| b.hash(&measured))
    }

    /// Adds an event that measures `measured` (an image, a firmware volume) and records `data`.
    pub fn measure(
        &mut self,
        pcr: u32,
        event_type: u32,
        data: impl Into<Vec<u8>>,
        measured: &[u8],
    ) -> &mut Self {
        self.push_with(pcr, event_type, data, |b| b.hash(measured))
    }

    /// Adds an `EV_NO_ACTION` event (zero digests, never extended).
    pub fn no_action(&mut self, pcr: u32, data: impl Into<Vec<u8>>) -> &mut Self {
        self.push_with(pcr, EV_NO_ACTION, data, |b| vec![0; b.digest_len()])
    }

    /// Adds the `StartupLocality` event (PCR 0 then starts at `0…0 locality`).
    pub fn startup_locality(&mut self, locality: u8) -> &mut Self {
        let mut data = STARTUP_LOCALITY_SIGNATURE.to_vec();
        data.push(locality);
        self.no_action(0, data)
    }

    /// Adds the GRUB kernel command line event: PCR 8 `EV_IPL`, data
    /// `kernel_cmdline: <cmdline>\0`, digest `H(cmdline)` (what GRUB extends).
    pub fn kernel_cmdline(&mut self, cmdline: &str) -> &mut Self {
        let mut data = format!("{KERNEL_CMDLINE_PREFIX}{cmdline}").into_bytes();
        data.push(0);
        self.measure(8, EV_IPL, data, cmdline.as_bytes())
    }

    /// The events so far.
    pub fn events(&self) -> &[Event] {
        &self.log.events
    }

    /// The log so far.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The log bytes.
    pub fn build(&self) -> Vec<u8> {
        self.log.encode()
    }

    /// The log.
    pub fn into_log(self) -> EventLog {
        self.log
    }
}

/// An EFI GUID in its on-disk byte order (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

/// `EFI_GLOBAL_VARIABLE` {8BE4DF61-93CA-11D2-AA0D-00E098032B8C}: SecureBoot, PK, KEK.
pub const EFI_GLOBAL_VARIABLE: Guid = Guid([
    0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
]);
/// `EFI_IMAGE_SECURITY_DATABASE_GUID` {D719B2CB-3D3A-4596-A3BC-DAD00E67656F}: db, dbx.
pub const EFI_IMAGE_SECURITY_DATABASE: Guid = Guid([
    0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f,
]);

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            g[8],
            g[9],
            g[10],
            g[11],
            g[12],
            g[13],
            g[14],
            g[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

fn event_data(what: &'static str) -> impl Fn(WireError) -> LogError {
    move |e| LogError::EventData {
        what,
        reason: e.to_string(),
    }
}

fn utf16_to_string(bytes: &[u8]) -> Result<String, LogError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(LogError::EventData {
            what: "UTF-16 string",
            reason: "odd length".to_owned(),
        });
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|e| LogError::EventData {
        what: "UTF-16 string",
        reason: e.to_string(),
    })
}

/// A string as NUL-terminated UTF-16LE (UEFI `CHAR16*`).
pub fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// `UEFI_VARIABLE_DATA`: a measured UEFI variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiVariable {
    /// Vendor GUID.
    pub guid: Guid,
    /// Variable name (`SecureBoot`, `PK`, `db`, `Boot0001`…).
    pub name: String,
    /// Variable contents.
    pub data: Vec<u8>,
}

impl UefiVariable {
    /// Decodes `UEFI_VARIABLE_DATA` (the structure must fill the event data exactly).
    pub fn parse(bytes: &[u8]) -> Result<UefiVariable, LogError> {
        const WHAT: &str = "UEFI_VARIABLE_DATA";
        let w = event_data(WHAT);
        let mut r = Reader::new(bytes);
        let mut guid = [0u8; 16];
        guid.copy_from_slice(r.take(16, "UEFI_VARIABLE_DATA.VariableName").map_err(&w)?);
        let name_len = r
            .u64_le("UEFI_VARIABLE_DATA.UnicodeNameLength")
            .map_err(&w)?;
        let data_len = r
            .u64_le("UEFI_VARIABLE_DATA.VariableDataLength")
            .map_err(&w)?;
        let too_long = |what: &str| LogError::EventData {
            what: WHAT,
            reason: format!("{what} is longer than the event"),
        };
        let name_bytes = usize::try_from(name_len)
            .ok()
            .and_then(|n| n.checked_mul(2))
            .ok_or_else(|| too_long("UnicodeName"))?;
        let data_len = usize::try_from(data_len).map_err(|_| too_long("VariableData"))?;
        let name = utf16_to_string(
            r.take(name_bytes, "UEFI_VARIABLE_DATA.UnicodeName")
                .map_err(&w)?,
        )?;
        let data = r
            .take(data_len, "UEFI_VARIABLE_DATA.VariableData")
            .map_err(&w)?
            .to_vec();
        r.finish(WHAT).map_err(&w)?;
        Ok(UefiVariable {
            guid: Guid(guid),
            name,
            data,
        })
    }

    /// Encodes `UEFI_VARIABLE_DATA` (name without a terminating NUL, as firmware logs it).
    pub fn encode(&self) -> Vec<u8> {
        let name: Vec<u16> = self.name.encode_utf16().collect();
        let mut v = self.guid.0.to_vec();
        v.extend_from_slice(&(name.len() as u64).to_le_bytes());
        v.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        v.extend(name.iter().flat_map(|u| u.to_le_bytes()));
        v.extend_from_slice(&self.data);
        v
    }
}

/// `UEFI_VARIABLE_DATA` read in place (see [`EventView::variable_ref`]): the same structure
/// checks as [`UefiVariable::parse`], but the name is left as UTF-16LE and nothing is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VariableRef<'a> {
    /// Vendor GUID.
    pub guid: Guid,
    /// Variable name, UTF-16LE, as logged.
    pub name_utf16: &'a [u8],
    /// Variable contents.
    pub data: &'a [u8],
}

impl<'a> VariableRef<'a> {
    /// Reads `UEFI_VARIABLE_DATA`; `None` where [`UefiVariable::parse`] fails for the
    /// structure (a name that is not UTF-16 is not checked here).
    pub fn parse(bytes: &'a [u8]) -> Option<VariableRef<'a>> {
        let mut r = Reader::new(bytes);
        let mut guid = [0u8; 16];
        guid.copy_from_slice(r.take(16, "UEFI_VARIABLE_DATA.VariableName").ok()?);
        let name_len = r.u64_le("UEFI_VARIABLE_DATA.UnicodeNameLength").ok()?;
        let data_len = r.u64_le("UEFI_VARIABLE_DATA.VariableDataLength").ok()?;
        let name_bytes = usize::try_from(name_len).ok()?.checked_mul(2)?;
        let data_len = usize::try_from(data_len).ok()?;
        let name_utf16 = r.take(name_bytes, "UEFI_VARIABLE_DATA.UnicodeName").ok()?;
        let data = r.take(data_len, "UEFI_VARIABLE_DATA.VariableData").ok()?;
        r.finish("UEFI_VARIABLE_DATA").ok()?;
        Some(VariableRef {
            guid: Guid(guid),
            name_utf16,
            data,
        })
    }

    /// Whether the name is exactly `name` (so, when true, it is valid UTF-16).
    pub fn name_is(&self, name: &str) -> bool {
        let mut units = self
            .name_utf16
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        name.encode_utf16().all(|u| units.next() == Some(u)) && units.next().is_none()
    }
}

/// `UEFI_IMAGE_LOAD_EVENT`: where an image was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLoadEvent {
    /// ImageLocationInMemory.
    pub location: u64,
    /// ImageLengthInMemory.
    pub length: u64,
    /// ImageLinkTimeAddress.
    pub link_time_address: u64,
    /// The UEFI device path of the image.
    pub device_path: Vec<u8>,
}

impl ImageLoadEvent {
    /// An image loaded from file `path` (a media file-path device path node).
    pub fn with_file_path(path: &str, length: u64) -> ImageLoadEvent {
        let path16 = utf16z(path);
        let node_len = u16::try_from(4 + path16.len()).unwrap_or(u16::MAX);
        let mut dp = vec![4, 4];
        dp.extend_from_slice(&node_len.to_le_bytes());
        dp.extend_from_slice(&path16);
        dp.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        ImageLoadEvent {
            location: 0x7e00_0000,
            length,
            link_time_address: 0,
            device_path: dp,
        }
    }

    /// Decodes `UEFI_IMAGE_LOAD_EVENT`.
    pub fn parse(bytes: &[u8]) -> Result<ImageLoadEvent, LogError> {
        const WHAT: &str = "UEFI_IMAGE_LOAD_EVENT";
        let w = event_data(WHAT);
        let mut r = Reader::new(bytes);
        let location = r
            .u64_le("UEFI_IMAGE_LOAD_EVENT.ImageLocationInMemory")
            .map_err(&w)?;
        let length = r
            .u64_le("UEFI_IMAGE_LOAD_EVENT.ImageLengthInMemory")
            .map_err(&w)?;
        let link_time_address = r
            .u64_le("UEFI_IMAGE_LOAD_EVENT.ImageLinkTimeAddress")
            .map_err(&w)?;
        let dp_len = r
            .u64_le("UEFI_IMAGE_LOAD_EVENT.LengthOfDevicePath")
            .map_err(&w)?;
        let dp_len = usize::try_from(dp_len).unwrap_or(usize::MAX);
        let device_path = r
            .take(dp_len, "UEFI_IMAGE_LOAD_EVENT.DevicePath")
            .map_err(&w)?
            .to_vec();
        r.finish(WHAT).map_err(&w)?;
        Ok(ImageLoadEvent {
            location,
            length,
            link_time_address,
            device_path,
        })
    }

    /// Encodes `UEFI_IMAGE_LOAD_EVENT`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.location.to_le_bytes().to_vec();
        v.extend_from_slice(&self.length.to_le_bytes());
        v.extend_from_slice(&self.link_time_address.to_le_bytes());
        v.extend_from_slice(&(self.device_path.len() as u64).to_le_bytes());
        v.extend_from_slice(&self.device_path);
        v
    }

    /// The file path nodes of the device path joined (`\EFI\BOOT\BOOTX64.EFI`), if any.
    /// Descriptive only: the path is not part of the measurement.
    pub fn file_path(&self) -> Option<String> {
        let mut r = Reader::new(&self.device_path);
        let mut parts: Vec<String> = Vec::new();
        while r.remaining() >= 4 {
            let ty = r.u8("type").ok()?;
            let sub = r.u8("subtype").ok()?;
            let len = usize::from(r.u16_le("length").ok()?);
            if ty == 0x7f && sub == 0xff {
                break;
            }
            let body = r.take(len.checked_sub(4)?, "node").ok()?;
            if ty == 4 && sub == 4 {
                let s = utf16_to_string(body).ok()?;
                parts.push(s.trim_end_matches('\0').to_owned());
            }
        }
        (!parts.is_empty()).then(|| parts.join(""))
    }
}

/// `UEFI_PLATFORM_FIRMWARE_BLOB` / `…BLOB2`: a measured firmware region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareBlob {
    /// BLOB2 description (empty for the original format).
    pub description: Vec<u8>,
    /// Physical base address.
    pub base: u64,
    /// Length in bytes.
    pub length: u64,
}

impl FirmwareBlob {
    /// Decodes `UEFI_PLATFORM_FIRMWARE_BLOB`.
    pub fn parse(bytes: &[u8]) -> Result<FirmwareBlob, LogError> {
        let w = event_data("UEFI_PLATFORM_FIRMWARE_BLOB");
        let mut r = Reader::new(bytes);
        let base = r.u64_le("BlobBase").map_err(&w)?;
        let length = r.u64_le("BlobLength").map_err(&w)?;
        r.finish("UEFI_PLATFORM_FIRMWARE_BLOB").map_err(&w)?;
        Ok(FirmwareBlob {
            description: Vec::new(),
            base,
            length,
        })
    }

    /// Decodes `UEFI_PLATFORM_FIRMWARE_BLOB2`.
    pub fn parse2(bytes: &[u8]) -> Result<FirmwareBlob, LogError> {
        let w = event_data("UEFI_PLATFORM_FIRMWARE_BLOB2");
        let mut r = Reader::new(bytes);
        let n = r.u8("BlobDescriptionSize").map_err(&w)?;
        let description = r
            .take(usize::from(n), "BlobDescription")
            .map_err(&w)?
            .to_vec();
        let base = r.u64_le("BlobBase").map_err(&w)?;
        let length = r.u64_le("BlobLength").map_err(&w)?;
        r.finish("UEFI_PLATFORM_FIRMWARE_BLOB2").map_err(&w)?;
        Ok(FirmwareBlob {
            description,
            base,
            length,
        })
    }

    /// Encodes `UEFI_PLATFORM_FIRMWARE_BLOB`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.base.to_le_bytes().to_vec();
        v.extend_from_slice(&self.length.to_le_bytes());
        v
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testkit::{Images, uefi_log};

    fn sha256_replay_by_hand(events: &[(u32, Vec<u8>)]) -> BTreeMap<u32, Vec<u8>> {
        let mut pcrs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (pcr, digest) in events {
            let cur = pcrs.entry(*pcr).or_insert_with(|| vec![0; 32]);
            let mut buf = cur.clone();
            buf.extend_from_slice(digest);
            *cur = HashAlg::Sha256.hash(&buf);
        }
        pcrs
    }

    #[test]
    fn built_logs_parse_round_trip_and_replay() {
        let b = uefi_log(&Images::default());
        let bytes = b.build();
        assert_eq!(&bytes[32..48], SPEC_ID_SIGNATURE);
        let log = EventLog::parse(&bytes).unwrap();
        assert_eq!(&log, b.log());
        assert_eq!(log.encode(), bytes);
        assert_eq!(log.banks(), vec![HashAlg::Sha1, HashAlg::Sha256]);
        assert_eq!(log.events.len(), 19);
        let by_hand: Vec<(u32, Vec<u8>)> = log
            .events
            .iter()
            .map(|e| (e.pcr, e.digest(HashAlg::Sha256).unwrap().to_vec()))
            .collect();
        assert_eq!(
            replay(&log, HashAlg::Sha256).unwrap(),
            sha256_replay_by_hand(&by_hand)
        );
        let sha1 = replay(&log, HashAlg::Sha1).unwrap();
        assert_eq!(
            sha1.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert!(sha1.values().all(|v| v.len() == 20));
        assert_eq!(
            replay(&log, HashAlg::Sha384),
            Err(LogError::BankNotInLog {
                bank: HashAlg::Sha384,
                recorded: "sha1, sha256".to_owned()
            })
        );
    }

    #[test]
    fn startup_locality_sets_pcr0_and_other_no_action_events_are_skipped() {
        for locality in [3u8, 4] {
            let mut b = LogBuilder::new(&[HashAlg::Sha256]);
            b.startup_locality(locality);
            b.no_action(0, b"SP800-155 Event3\0".to_vec());
            b.event(0, EV_S_CRTM_VERSION, utf16z("1.0"));
            let log = EventLog::parse(&b.build()).unwrap();
            assert_eq!(log.startup_locality(), Some(locality));
            let mut start = vec![0u8; 32];
            start[31] = locality;
            let want = HashAlg::Sha256.extend(&start, &HashAlg::Sha256.hash(&utf16z("1.0")));
            assert_eq!(replay(&log, HashAlg::Sha256).unwrap()[&0], want);
        }
        // A StartupLocality event after PCR 0 was extended does not rewrite it.
        let mut b = LogBuilder::new(&[HashAlg::Sha256]);
        b.event(0, EV_SEPARATOR, vec![0; 4]);
        b.startup_locality(3);
        let log = EventLog::parse(&b.build()).unwrap();
        assert_eq!(
            replay(&log, HashAlg::Sha256).unwrap()[&0],
            HashAlg::Sha256.extend(&[0; 32], &HashAlg::Sha256.hash(&[0; 4]))
        );
        // EV_NO_ACTION alone touches nothing; DRTM PCRs start at all ones.
        let mut b = LogBuilder::new(&[HashAlg::Sha256]);
        b.no_action(5, b"vendor".to_vec());
        b.event(17, EV_SEPARATOR, vec![0; 4]);
        let replayed = replay(&EventLog::parse(&b.build()).unwrap(), HashAlg::Sha256).unwrap();
        assert_eq!(replayed.keys().copied().collect::<Vec<_>>(), vec![17]);
        assert_eq!(
            replayed[&17],
            HashAlg::Sha256.extend(&[0xff; 32], &HashAlg::Sha256.hash(&[0; 4]))
        );
    }

    #[test]
    fn malformed_logs_are_refused_with_the_event_named() {
        let bytes = uefi_log(&Images::default()).build();
        // A SHA-1-only legacy log has no Spec ID header.
        let mut legacy = bytes.clone();
        legacy[32..48].copy_from_slice(b"Spec ID Event02\0");
        assert!(matches!(
            EventLog::parse(&legacy),
            Err(LogError::NotCryptoAgile { .. })
        ));
        let mut first = bytes.clone();
        first[4] = 0x0d;
        assert!(matches!(
            EventLog::parse(&first),
            Err(LogError::NotCryptoAgile { .. })
        ));
        // Truncated anywhere inside the last event.
        let err = EventLog::parse(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(matches!(err, LogError::Wire { index: 19, .. }), "{err}");
        // Trailing junk is a truncated event 20.
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 5]);
        assert!(matches!(
            EventLog::parse(&long),
            Err(LogError::Wire { index: 20, .. })
        ));
        // An event with one digest too few.
        let mut b = LogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256]);
        b.event(0, EV_SEPARATOR, vec![0; 4]);
        let mut log = b.into_log();
        log.events[0].digests.pop();
        assert_eq!(
            EventLog::parse(&log.encode()),
            Err(LogError::Digests {
                index: 1,
                reason: "1 digests; the header declares 2 banks".to_owned()
            })
        );
        // A digest of a bank the header does not declare.
        log.events[0].digests = vec![(0x000b, vec![0; 32]), (0x000c, vec![0; 48])];
        assert!(matches!(
            EventLog::parse(&log.encode()),
            Err(LogError::Digests { index: 1, .. })
        ));
        // A header that lies about a known digest size.
        log.spec_id.algorithms[1].digest_size = 20;
        assert!(matches!(
            EventLog::parse(&log.encode()),
            Err(LogError::SpecId { .. })
        ));
    }

    #[test]
    fn uefi_event_data_decodes() {
        let log = uefi_log(&Images::default()).into_log();
        let e = &log.events[2];
        let v = e.variable().unwrap().unwrap();
        assert_eq!(v.guid, EFI_GLOBAL_VARIABLE);
        assert_eq!(v.guid.to_string(), "8be4df61-93ca-11d2-aa0d-00e098032b8c");
        assert_eq!(
            EFI_IMAGE_SECURITY_DATABASE.to_string(),
            "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
        );
        assert_eq!(
            (v.name.as_str(), v.data.as_slice()),
            ("SecureBoot", &[1u8][..])
        );
        assert_eq!(UefiVariable::parse(&v.encode()), Ok(v));
        assert!(e.data_is_bound(HashAlg::Sha256));
        assert_eq!(
            e.description().unwrap(),
            "8be4df61-93ca-11d2-aa0d-00e098032b8c SecureBoot"
        );

        let kernel = &log.events[17];
        assert_eq!(
            kernel.kind().to_string(),
            "EV_EFI_BOOT_SERVICES_APPLICATION"
        );
        let image = kernel.image_load().unwrap().unwrap();
        assert_eq!(image.file_path().as_deref(), Some("\\vmlinuz"));
        assert_eq!(ImageLoadEvent::parse(&image.encode()), Ok(image));
        assert!(
            !kernel.data_is_bound(HashAlg::Sha256),
            "images measure the file, not the data"
        );

        let blob = log.events[1].firmware_blob().unwrap().unwrap();
        assert_eq!((blob.base, blob.length), (0xffc0_0000, 15));
        assert_eq!(log.events[0].text().as_deref(), Some("1.0"));

        // GRUB: data "kernel_cmdline: …\0", digest of the bare command line.
        let cmd = &log.events[18];
        assert_eq!(cmd.kernel_cmdline().as_deref(), Some("root=/dev/vda1 ro"));
        assert_eq!(
            cmd.digest(HashAlg::Sha256).unwrap(),
            HashAlg::Sha256.hash(b"root=/dev/vda1 ro")
        );
        assert!(cmd.data_is_bound(HashAlg::Sha256));
        // A relabelled command line is not bound to what was measured.
        let mut lie = cmd.clone();
        lie.data = b"kernel_cmdline: root=/dev/vda1 ro init=/bin/sh\0".to_vec();
        assert!(!lie.data_is_bound(HashAlg::Sha256));
        // Another PCR or type is not a command line.
        let mut other = cmd.clone();
        other.pcr = 9;
        assert_eq!(other.kernel_cmdline(), None);

        assert_eq!(
            EventType(0x8000_00e0).to_string(),
            "EV_EFI_VARIABLE_AUTHORITY"
        );
        assert_eq!(EventType(0x1234).to_string(), "event type 0x00001234");
    }

    #[test]
    fn digests_out_of_the_header_order_are_found() {
        let mut b = LogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256]);
        b.event(7, EV_SEPARATOR, vec![0; 4]);
        b.event(8, EV_IPL, b"grub_cmd: boot".to_vec());
        let mut log = b.into_log();
        log.events[1].digests.reverse();
        let bytes = log.encode();
        let view = LogView::parse(&bytes).unwrap();
        for bank in [HashAlg::Sha1, HashAlg::Sha256] {
            for ((_, v), e) in view.numbered(bank).zip(&log.events) {
                assert_eq!(v.digest, e.digest(bank));
                assert!(v.digest.is_some());
            }
        }
    }

    #[test]
    fn variable_data_must_fill_the_event_exactly() {
        let v = UefiVariable {
            guid: EFI_GLOBAL_VARIABLE,
            name: "PK".to_owned(),
            data: vec![1, 2, 3],
        };
        let mut bytes = v.encode();
        bytes.push(0);
        assert!(UefiVariable::parse(&bytes).is_err());
        let mut huge = v.encode();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(UefiVariable::parse(&huge).is_err());
        assert!(FirmwareBlob::parse(&[0; 15]).is_err());
        let blob2 = [vec![3], b"abc".to_vec(), vec![0; 16]].concat();
        assert_eq!(
            FirmwareBlob::parse2(&blob2).map(|b| b.description),
            Ok(b"abc".to_vec())
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(log) = EventLog::parse(&bytes) {
                prop_assert_eq!(log.encode(), bytes);
            }
        }

        #[test]
        fn mutated_logs_never_panic_and_stay_canonical(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in 0usize..64,
        ) {
            let mut bytes = uefi_log(&Images::default()).build();
            for (at, v) in edits {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            bytes.truncate(bytes.len().saturating_sub(cut));
            if let Ok(log) = EventLog::parse(&bytes) {
                prop_assert_eq!(log.encode(), bytes);
                for bank in [HashAlg::Sha1, HashAlg::Sha256] {
                    let _ = replay(&log, bank);
                }
                for e in &log.events {
                    let _ = (e.variable(), e.image_load(), e.firmware_blob(), e.description());
                    let _ = e.data_is_bound(HashAlg::Sha256);
                    let _ = e.image_load().and_then(Result::ok).map(|i| i.file_path());
                }
            }
        }

        #[test]
        fn replay_matches_a_hand_replay(events in proptest::collection::vec((0u32..24, proptest::collection::vec(any::<u8>(), 0..8)), 0..20)) {
            let mut b = LogBuilder::new(&[HashAlg::Sha256]);
            for (pcr, data) in &events {
                b.event(*pcr, EV_IPL, data.clone());
            }
            let log = EventLog::parse(&b.build()).unwrap();
            let mut want = BTreeMap::new();
            for (pcr, data) in &events {
                let cur = want.entry(*pcr).or_insert_with(|| initial_pcr_value(*pcr, HashAlg::Sha256));
                *cur = HashAlg::Sha256.extend(cur, &HashAlg::Sha256.hash(data));
            }
            prop_assert_eq!(replay(&log, HashAlg::Sha256).unwrap(), want);
        }

        #[test]
        fn the_in_place_view_agrees_with_the_owned_log(
            events in proptest::collection::vec(
                (prop_oneof![0u32..24, Just(300u32)], 0u8..4, proptest::collection::vec(any::<u8>(), 0..24)),
                0..24,
            ),
            locality in proptest::option::of(0u8..5),
            selection in proptest::collection::vec(prop_oneof![0u32..24, Just(300u32), Just(255u32)], 0..8),
        ) {
            let mut b = LogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256]);
            if let Some(l) = locality {
                b.startup_locality(l);
            }
            for (pcr, kind, data) in &events {
                match kind {
                    0 => b.event(*pcr, EV_IPL, data.clone()),
                    1 => b.no_action(*pcr, data.clone()),
                    2 => b.kernel_cmdline(&String::from_utf8_lossy(data)),
                    _ => b.event(*pcr, EV_EFI_VARIABLE_DRIVER_CONFIG, UefiVariable {
                        guid: EFI_GLOBAL_VARIABLE,
                        name: "SecureBoot".to_owned(),
                        data: data.clone(),
                    }.encode()),
                };
            }
            let bytes = b.build();
            let view = LogView::parse(&bytes).unwrap();
            let log = EventLog::parse(&bytes).unwrap();
            prop_assert_eq!(&view.to_log(), &log);
            for bank in [HashAlg::Sha1, HashAlg::Sha256] {
                let all = replay(&log, bank).unwrap();
                let selected = replay_selected(&view, bank, &selection).unwrap();
                for (pcr, value) in selection.iter().zip(&selected) {
                    let want = all.get(pcr).cloned().unwrap_or_else(|| initial_pcr_value(*pcr, bank));
                    prop_assert_eq!(value.as_bytes(), want.as_slice());
                }
                for ((i, v), (j, e)) in view.numbered(bank).zip(log.numbered()) {
                    prop_assert_eq!(i, j);
                    prop_assert_eq!(v, e.view(bank));
                    prop_assert_eq!(v.data_is_bound(), e.data_is_bound(bank));
                    prop_assert_eq!(v.kernel_cmdline().map(str::to_owned), e.kernel_cmdline());
                    prop_assert_eq!(v.description(), e.description());
                    prop_assert_eq!(
                        v.variable_ref().is_some_and(|r| r.name_is("SecureBoot")),
                        matches!(e.variable(), Some(Ok(u)) if u.name == "SecureBoot")
                    );
                }
            }
            prop_assert_eq!(
                replay_selected(&view, HashAlg::Sha384, &selection).map(|v| v.len()),
                Err(LogError::BankNotInLog { bank: HashAlg::Sha384, recorded: "sha1, sha256".to_owned() })
            );
        }

        #[test]
        fn variable_names_match_only_exactly(name in proptest::collection::vec(any::<u16>(), 0..12)) {
            // Any UTF-16 units, including unpaired surrogates: a name matches "SecureBoot" in
            // place exactly when the decoded variable's name is "SecureBoot".
            let mut bytes = EFI_GLOBAL_VARIABLE.0.to_vec();
            bytes.extend_from_slice(&(name.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&1u64.to_le_bytes());
            bytes.extend(name.iter().flat_map(|u| u.to_le_bytes()));
            bytes.push(1);
            let owned = UefiVariable::parse(&bytes);
            let view = VariableRef::parse(&bytes);
            for n in ["SecureBoot", "PK", ""] {
                prop_assert_eq!(
                    view.is_some_and(|v| v.name_is(n)),
                    owned.as_ref().is_ok_and(|v| v.name == n)
                );
            }
        }
    }
}
