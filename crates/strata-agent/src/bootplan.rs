//! A small, self-contained description of a measured UEFI boot for the boot simulator.
//!
//! [`BootPlan`] lists events (PCR, event type, event data, and the bytes whose hash is
//! extended) and renders them as a TCG crypto-agile event log with SHA-1 and SHA-256
//! digests, written by `strata_attest::eventlog::LogBuilder` (the same implementation the
//! verifier parses with). [`BootPlan::uefi`] builds a realistic boot: CRTM version and
//! firmware blob, Secure Boot variables (SecureBoot, PK, KEK, db, dbx), separators on PCRs
//! 0–7, shim / grub / kernel applications on PCR 4, and the kernel command line on PCR 8 the
//! way GRUB records it (`EV_IPL`, data `kernel_cmdline: …\0`, digest of the bare command
//! line). Change one [`BootImages`] field to make a tampered host.
//!
//! The agent's own measurements (hypervisor and agent binaries) are not part of the boot
//! plan: the agent reports them beside the quote (`strata_attest::AgentMeasurement`).

use std::collections::BTreeMap;

use strata_attest::HashAlg;
use strata_attest::eventlog::{
    EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE, FirmwareBlob, ImageLoadEvent,
    KERNEL_CMDLINE_PREFIX, LogBuilder, UefiVariable, utf16z,
};
pub use strata_attest::eventlog::{
    EV_EFI_BOOT_SERVICES_APPLICATION, EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_IPL, EV_NO_ACTION, EV_S_CRTM_VERSION, EV_SEPARATOR,
};

use crate::testhost::BootEvents;
use crate::tpm::{BankDigests, PcrBank};

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
            FirmwareBlob {
                description: Vec::new(),
                base: 0xffc0_0000,
                length: images.firmware.len() as u64,
            }
            .encode(),
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
            let var = UefiVariable {
                guid,
                name: name.to_owned(),
                data: value.clone(),
            };
            plan.push(7, EV_EFI_VARIABLE_DRIVER_CONFIG, var.encode());
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
                ImageLoadEvent::with_file_path(path, image.len() as u64).encode(),
                image,
            );
        }
        // GRUB: the bare command line is measured, the prefixed string is logged.
        let mut cmd = format!("{KERNEL_CMDLINE_PREFIX}{}", images.cmdline).into_bytes();
        cmd.push(0);
        plan.push_measuring(8, EV_IPL, cmd, images.cmdline.as_bytes());
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

    /// The crypto-agile event log (SHA-1 and SHA-256 banks).
    pub fn to_log(&self) -> Vec<u8> {
        let mut log = LogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256]);
        for e in &self.events {
            log.measure(e.pcr, e.event_type, e.data.clone(), &e.measured);
        }
        log.build()
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
    fn the_verifier_replays_the_log_to_the_expected_pcrs() {
        use strata_attest::eventlog::{EventLog, replay};
        let plan = BootPlan::uefi(&BootImages::default());
        let log = EventLog::parse(&plan.to_log()).unwrap();
        assert_eq!(log.events.len(), plan.events.len());
        for (bank, alg) in [
            (PcrBank::Sha1, HashAlg::Sha1),
            (PcrBank::Sha256, HashAlg::Sha256),
        ] {
            assert_eq!(
                replay(&log, alg).unwrap(),
                plan.expected_pcrs(bank),
                "{bank:?}"
            );
        }
        let cmdline = log.events.last().unwrap();
        assert_eq!(
            cmdline.kernel_cmdline().as_deref(),
            Some(BootImages::default().cmdline.as_str())
        );
        assert!(cmdline.data_is_bound(HashAlg::Sha256));
    }

    #[test]
    fn log_starts_with_spec_id_event() {
        let log = BootPlan::uefi(&BootImages::default()).to_log();
        assert_eq!(&log[32..48], b"Spec ID Event03\0");
    }
}
