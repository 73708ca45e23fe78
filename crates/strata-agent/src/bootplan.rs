//! A small, self-contained description of a measured UEFI boot for the boot simulator.
//!
//! [`BootPlan`] lists events (PCR, event type, event data, and the bytes whose hash is
//! extended) and renders them as a TCG crypto-agile event log (TCG PC Client Platform
//! Firmware Profile: a SHA-1-format `Spec ID Event03` header followed by `TCG_PCR_EVENT2`
//! records with SHA-1 and SHA-256 digests). [`BootPlan::uefi`] builds a realistic boot:
//! CRTM version and firmware blob, Secure Boot variables (SecureBoot, PK, KEK, db, dbx),
//! separators on PCRs 0–7, shim / grub / kernel applications on PCR 4, and the kernel
//! command line on PCR 8. Change one [`BootImages`] field to make a tampered host.

use std::collections::BTreeMap;

use crate::testhost::BootEvents;
use crate::tpm::{BankDigests, PcrBank};

/// `EV_NO_ACTION`.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_SEPARATOR`.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// `EV_S_CRTM_VERSION`.
pub const EV_S_CRTM_VERSION: u32 = 0x0000_0008;
/// `EV_IPL`.
pub const EV_IPL: u32 = 0x0000_000d;
/// `EV_EFI_VARIABLE_DRIVER_CONFIG`.
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
/// `EV_EFI_BOOT_SERVICES_APPLICATION`.
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// `EV_EFI_PLATFORM_FIRMWARE_BLOB`.
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;

/// EFI_GLOBAL_VARIABLE {8BE4DF61-93CA-11D2-AA0D-00E098032B8C}, in its on-disk byte order.
const EFI_GLOBAL_VARIABLE: [u8; 16] = [
    0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
];
/// EFI_IMAGE_SECURITY_DATABASE_GUID {D719B2CB-3D3A-4596-A3BC-DAD00E67656F}.
const EFI_IMAGE_SECURITY_DATABASE: [u8; 16] = [
    0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f,
];

/// One planned event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    /// PCR index.
    pub pcr: u32,
    /// TCG event type.
    pub event_type: u32,
    /// The event data recorded in the log.
    pub data: Vec<u8>,
    /// The bytes whose SHA-1 / SHA-256 are extended (the image for applications, the event
    /// data for most other events).
    pub measured: Vec<u8>,
}

impl PlannedEvent {
    /// The digest extended into `bank`.
    pub fn digest(&self, bank: PcrBank) -> Vec<u8> {
        bank.hash(&self.measured)
    }
}

/// The measured contents of a boot; change one to make a tampered host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootImages {
    /// Firmware volume contents.
    pub firmware: Vec<u8>,
    /// Secure Boot enabled (the `SecureBoot` variable is 1).
    pub secure_boot: bool,
    /// Platform key, key exchange key, db and dbx variable contents.
    pub pk: Vec<u8>,
    pub kek: Vec<u8>,
    pub db: Vec<u8>,
    pub dbx: Vec<u8>,
    /// shim, grub and kernel images.
    pub shim: Vec<u8>,
    pub grub: Vec<u8>,
    pub kernel: Vec<u8>,
    /// Kernel command line.
    pub cmdline: String,
}

impl Default for BootImages {
    fn default() -> Self {
        BootImages {
            firmware: b"strata test firmware volume v1".to_vec(),
            secure_boot: true,
            pk: b"strata test PK".to_vec(),
            kek: b"strata test KEK".to_vec(),
            db: b"strata test db".to_vec(),
            dbx: b"strata test dbx".to_vec(),
            shim: b"shimx64.efi 15.8".to_vec(),
            grub: b"grubx64.efi 2.12".to_vec(),
            kernel: b"vmlinuz-6.12.0-strata".to_vec(),
            cmdline: "BOOT_IMAGE=/vmlinuz-6.12.0-strata root=/dev/vda1 ro lockdown=integrity"
                .to_owned(),
        }
    }
}

/// A measured boot: events in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootPlan {
    /// The events, in log order.
    pub events: Vec<PlannedEvent>,
}

impl BootPlan {
    /// An empty plan.
    pub fn new() -> BootPlan {
        BootPlan::default()
    }

    /// Adds an event whose digest is the hash of its data.
    pub fn push(&mut self, pcr: u32, event_type: u32, data: Vec<u8>) -> &mut Self {
        self.events.push(PlannedEvent {
            pcr,
            event_type,
            measured: data.clone(),
            data,
        });
        self
    }

    /// Adds an event whose digest is the hash of `measured` (not of the data).
    pub fn push_measuring(
        &mut self,
        pcr: u32,
        event_type: u32,
        data: Vec<u8>,
        measured: &[u8],
    ) -> &mut Self {
        self.events.push(PlannedEvent {
            pcr,
            event_type,
            data,
            measured: measured.to_vec(),
        });
        self
    }

    /// A realistic UEFI Secure Boot sequence measuring `images`.
    pub fn uefi(images: &BootImages) -> BootPlan {
        let mut plan = BootPlan::new();
        plan.push(0, EV_S_CRTM_VERSION, utf16z("1.0"));
        plan.push_measuring(
            0,
            EV_EFI_PLATFORM_FIRMWARE_BLOB,
            firmware_blob(0xffc0_0000, images.firmware.len()),
            &images.firmware,
        );
        let sb = vec![u8::from(images.secure_boot)];
        for (name, guid, value) in [
            ("SecureBoot", EFI_GLOBAL_VARIABLE, &sb),
            ("PK", EFI_GLOBAL_VARIABLE, &images.pk),
            ("KEK", EFI_GLOBAL_VARIABLE, &images.kek),
            ("db", EFI_IMAGE_SECURITY_DATABASE, &images.db),
            ("dbx", EFI_IMAGE_SECURITY_DATABASE, &images.dbx),
        ] {
            plan.push(
                7,
                EV_EFI_VARIABLE_DRIVER_CONFIG,
                variable(guid, name, value),
            );
        }
        for pcr in 0..8 {
            plan.push(pcr, EV_SEPARATOR, vec![0; 4]);
        }
        for (path, image) in [
            ("\\EFI\\BOOT\\BOOTX64.EFI", &images.shim),
            ("\\EFI\\debian\\grubx64.efi", &images.grub),
            ("\\vmlinuz-6.12.0-strata", &images.kernel),
        ] {
            plan.push_measuring(
                4,
                EV_EFI_BOOT_SERVICES_APPLICATION,
                image_load_event(path, image.len()),
                image,
            );
        }
        let mut cmd = format!("kernel_cmdline: {}", images.cmdline).into_bytes();
        cmd.push(0);
        plan.push(8, EV_IPL, cmd);
        plan
    }

    /// The PCR values this plan leaves in `bank` starting from all-zero PCRs, for every PCR
    /// it touches.
    pub fn expected_pcrs(&self, bank: PcrBank) -> BTreeMap<u32, Vec<u8>> {
        let mut pcrs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for e in &self.events {
            let cur = pcrs
                .entry(e.pcr)
                .or_insert_with(|| vec![0; bank.digest_len()]);
            let mut buf = cur.clone();
            buf.extend_from_slice(&e.digest(bank));
            *cur = bank.hash(&buf);
        }
        pcrs
    }

    /// The crypto-agile event log.
    pub fn to_log(&self) -> Vec<u8> {
        let mut log = Vec::new();
        // Spec ID event, in the legacy SHA-1 TCG_PCClientPCREvent format.
        let mut spec = Vec::new();
        spec.extend_from_slice(b"Spec ID Event03\0");
        spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
        spec.extend_from_slice(&[0, 2, 0, 2]); // version 2.0 errata 0, uintnSize 2 (64-bit)
        spec.extend_from_slice(&(PcrBank::ALL.len() as u32).to_le_bytes());
        for bank in PcrBank::ALL {
            spec.extend_from_slice(&bank.alg_id().to_le_bytes());
            spec.extend_from_slice(&(bank.digest_len() as u16).to_le_bytes());
        }
        spec.push(0); // vendorInfoSize
        log.extend_from_slice(&0u32.to_le_bytes());
        log.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        log.extend_from_slice(&[0; 20]);
        log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        log.extend_from_slice(&spec);
        for e in &self.events {
            log.extend_from_slice(&e.pcr.to_le_bytes());
            log.extend_from_slice(&e.event_type.to_le_bytes());
            log.extend_from_slice(&(PcrBank::ALL.len() as u32).to_le_bytes());
            for bank in PcrBank::ALL {
                log.extend_from_slice(&bank.alg_id().to_le_bytes());
                log.extend_from_slice(&e.digest(bank));
            }
            log.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            log.extend_from_slice(&e.data);
        }
        log
    }
}

impl BootEvents for BootPlan {
    fn measurements(&self) -> Vec<(u32, BankDigests)> {
        self.events
            .iter()
            .map(|e| {
                (
                    e.pcr,
                    PcrBank::ALL.iter().map(|b| (*b, e.digest(*b))).collect(),
                )
            })
            .collect()
    }

    fn log_bytes(&self) -> Vec<u8> {
        self.to_log()
    }
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// UEFI_PLATFORM_FIRMWARE_BLOB.
fn firmware_blob(base: u64, len: usize) -> Vec<u8> {
    let mut v = base.to_le_bytes().to_vec();
    v.extend_from_slice(&(len as u64).to_le_bytes());
    v
}

/// UEFI_VARIABLE_DATA.
fn variable(guid: [u8; 16], name: &str, value: &[u8]) -> Vec<u8> {
    let name16: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut v = guid.to_vec();
    v.extend_from_slice(&(name.encode_utf16().count() as u64).to_le_bytes());
    v.extend_from_slice(&(value.len() as u64).to_le_bytes());
    v.extend_from_slice(&name16);
    v.extend_from_slice(value);
    v
}

/// UEFI_IMAGE_LOAD_EVENT with a file-path device path.
fn image_load_event(path: &str, len: usize) -> Vec<u8> {
    // Media device path, file path node (type 4, subtype 4), then the end node.
    let path16 = utf16z(path);
    let mut dp = vec![4, 4];
    dp.extend_from_slice(&((4 + path16.len()) as u16).to_le_bytes());
    dp.extend_from_slice(&path16);
    dp.extend_from_slice(&[0x7f, 0xff, 4, 0]);
    let mut v = 0x7e00_0000u64.to_le_bytes().to_vec(); // ImageLocationInMemory
    v.extend_from_slice(&(len as u64).to_le_bytes()); // ImageLengthInMemory
    v.extend_from_slice(&0u64.to_le_bytes()); // ImageLinkTimeAddress
    v.extend_from_slice(&(dp.len() as u64).to_le_bytes());
    v.extend_from_slice(&dp);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampered_kernel_changes_only_pcr4() {
        let good = BootPlan::uefi(&BootImages::default());
        let bad = BootPlan::uefi(&BootImages {
            kernel: b"evil kernel".to_vec(),
            ..BootImages::default()
        });
        let (g, b) = (
            good.expected_pcrs(PcrBank::Sha256),
            bad.expected_pcrs(PcrBank::Sha256),
        );
        for pcr in g.keys() {
            assert_eq!(g[pcr] == b[pcr], *pcr != 4, "pcr {pcr}");
        }
    }

    #[test]
    fn log_starts_with_spec_id_event() {
        let log = BootPlan::uefi(&BootImages::default()).to_log();
        assert_eq!(&log[32..48], b"Spec ID Event03\0");
    }
}
