//! Reference policies: what a trusted host's measured boot looks like.
//!
//! A [`ReferencePolicy`] names the PCR bank and the PCRs a quote must cover, and one
//! allow-list per class of measured component. Every allow-list is an [`AllowList`]:
//!
//! | JSON | meaning |
//! |---|---|
//! | `"any"` | the class is not appraised (an explicit, visible decision) |
//! | `["…", …]` | every event of the class must match an entry, **and** at least one must be present |
//! | `[]` | no event of the class may appear at all |
//!
//! There is no implicit "anything": every list field is required, so a policy that forgets
//! a class does not deserialize, and `null` is refused. An empty list denies.
//!
//! | field | events appraised (only in PCRs the quote verified) | entries |
//! |---|---|---|
//! | `requireSecureBoot` (default `true`) | PCR 7 `EV_EFI_VARIABLE_DRIVER_CONFIG` `SecureBoot` | value must be `01` |
//! | `pk`, `kek`, `db`, `dbx` | PCR 7 `EV_EFI_VARIABLE_DRIVER_CONFIG` of that variable | event digest in `bank` (hex) |
//! | `firmwareBlobs` | PCR 0 `EV_EFI_PLATFORM_FIRMWARE_BLOB(2)` | event digest in `bank` |
//! | `bootApplications` | PCR 4 `EV_EFI_BOOT_SERVICES_APPLICATION` (shim, GRUB, kernel) | PE Authenticode digest as recorded in the event, in `bank` |
//! | `kernelCmdlines` | PCR 8 `EV_IPL` `kernel_cmdline: …` (GRUB) | the exact command line |
//! | `agentMeasurements` | [`AgentMeasurement`]s sent beside the quote | `{name, sha256}` |
//!
//! Digests are those the event extends into `bank` (what `tpm2_eventlog` prints), so a
//! policy can be captured from a known-good host ([`ReferencePolicy::golden`]) and reviewed.
//! A variable's event digest covers the whole `UEFI_VARIABLE_DATA` (GUID, name and value).
//!
//! **Agent measurements** (hypervisor and agent binaries) are *not* in the TPM log: the agent
//! hashes the files and sends `{name, sha256}` beside the quote (the boot simulator's
//! `BootPlan` does not extend them either). They detect drift and misconfiguration, but they
//! are only as trustworthy as the running agent, whose own integrity rests on the measured
//! kernel and command line above. Every configured name must be reported with an allowed
//! digest, and a reported name the policy does not list is a failure too.
//!
//! [`AgentMeasurement`]: crate::AgentMeasurement

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;

use crate::appraise::AgentMeasurement;
use crate::eventlog::{
    EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE, EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_EFI_PLATFORM_FIRMWARE_BLOB2, EV_EFI_VARIABLE_DRIVER_CONFIG,
    Event, EventLog, EventView, Guid,
};
use crate::hash::{Digest, HashAlg};

/// Either "not appraised" or an explicit list (see the module docs for the semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowList<T> {
    /// `"any"`: the class is not appraised.
    Any,
    /// Only these (an empty list denies every occurrence).
    Only(Vec<T>),
}

impl<T: PartialEq> AllowList<T> {
    /// Whether `item` is allowed.
    pub fn allows(&self, item: &T) -> bool {
        match self {
            AllowList::Any => true,
            AllowList::Only(list) => list.contains(item),
        }
    }

    /// The list, or `None` for `"any"`.
    pub fn entries(&self) -> Option<&[T]> {
        match self {
            AllowList::Any => None,
            AllowList::Only(list) => Some(list),
        }
    }

    /// Whether at least one event of the class must be present.
    pub fn requires_presence(&self) -> bool {
        matches!(self, AllowList::Only(list) if !list.is_empty())
    }
}

impl AllowList<Digest> {
    /// Whether the digest `bytes` is allowed (without making a [`Digest`] of it).
    pub fn allows_bytes(&self, bytes: &[u8]) -> bool {
        match self {
            AllowList::Any => true,
            AllowList::Only(list) => list.iter().any(|d| d.0 == bytes),
        }
    }
}

impl AllowList<String> {
    /// Whether `s` is allowed (without making a `String` of it).
    pub fn allows_str(&self, s: &str) -> bool {
        match self {
            AllowList::Any => true,
            AllowList::Only(list) => list.iter().any(|e| e == s),
        }
    }
}

impl<T: serde::Serialize> serde::Serialize for AllowList<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AllowList::Any => s.serialize_str("any"),
            AllowList::Only(list) => list.serialize(s),
        }
    }
}

impl<'de, T: DeserializeOwned> serde::Deserialize<'de> for AllowList<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AllowList<T>, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) if s == "any" => Ok(AllowList::Any),
            v @ serde_json::Value::Array(_) => serde_json::from_value(v)
                .map(AllowList::Only)
                .map_err(D::Error::custom),
            other => Err(D::Error::custom(format!(
                "expected \"any\" or a list, found {other}"
            ))),
        }
    }
}

/// A binary the agent reports, as the policy allows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentReference {
    /// The name the agent reports (`qemu-system-x86_64`, `strata-agent`).
    pub name: String,
    /// SHA-256 of the file.
    pub sha256: Digest,
}

/// The classes of measured components a policy appraises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EventClass {
    /// The `SecureBoot` variable.
    SecureBoot,
    /// The platform key.
    Pk,
    /// Key exchange keys.
    Kek,
    /// The signature database.
    Db,
    /// The forbidden-signature database.
    Dbx,
    /// Firmware volumes.
    FirmwareBlob,
    /// UEFI applications (shim, GRUB, kernel).
    BootApplication,
    /// The kernel command line.
    KernelCmdline,
}

impl EventClass {
    /// The PCR the class is measured into.
    pub fn pcr(self) -> u32 {
        match self {
            EventClass::SecureBoot
            | EventClass::Pk
            | EventClass::Kek
            | EventClass::Db
            | EventClass::Dbx => 7,
            EventClass::FirmwareBlob => 0,
            EventClass::BootApplication => 4,
            EventClass::KernelCmdline => 8,
        }
    }

    /// For the Secure Boot variables: their GUID and name.
    pub fn variable(self) -> Option<(Guid, &'static str)> {
        match self {
            EventClass::SecureBoot => Some((EFI_GLOBAL_VARIABLE, "SecureBoot")),
            EventClass::Pk => Some((EFI_GLOBAL_VARIABLE, "PK")),
            EventClass::Kek => Some((EFI_GLOBAL_VARIABLE, "KEK")),
            EventClass::Db => Some((EFI_IMAGE_SECURITY_DATABASE, "db")),
            EventClass::Dbx => Some((EFI_IMAGE_SECURITY_DATABASE, "dbx")),
            _ => None,
        }
    }

    /// The class of `e`, if it is one the policy appraises.
    pub fn of(e: &Event) -> Option<EventClass> {
        EventClass::of_view(&e.view(HashAlg::Sha256))
    }

    /// The class of `e`, if it is one the policy appraises (reads the data in place).
    pub fn of_view(e: &EventView<'_>) -> Option<EventClass> {
        match (e.pcr, e.event_type) {
            (7, EV_EFI_VARIABLE_DRIVER_CONFIG) => {
                let v = e.variable_ref()?;
                [
                    EventClass::SecureBoot,
                    EventClass::Pk,
                    EventClass::Kek,
                    EventClass::Db,
                    EventClass::Dbx,
                ]
                .into_iter()
                .find(|c| {
                    c.variable()
                        .is_some_and(|(g, n)| g == v.guid && v.name_is(n))
                })
            }
            (0, EV_EFI_PLATFORM_FIRMWARE_BLOB | EV_EFI_PLATFORM_FIRMWARE_BLOB2) => {
                Some(EventClass::FirmwareBlob)
            }
            (4, EV_EFI_BOOT_SERVICES_APPLICATION) => Some(EventClass::BootApplication),
            _ if e.kernel_cmdline().is_some() => Some(EventClass::KernelCmdline),
            _ => None,
        }
    }

    /// Human name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::SecureBoot => "secure boot state",
            EventClass::Pk => "platform key (PK)",
            EventClass::Kek => "key exchange keys (KEK)",
            EventClass::Db => "signature database (db)",
            EventClass::Dbx => "forbidden signature database (dbx)",
            EventClass::FirmwareBlob => "firmware blob",
            EventClass::BootApplication => "boot application",
            EventClass::KernelCmdline => "kernel command line",
        }
    }
}

impl std::fmt::Display for EventClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_bank() -> HashAlg {
    HashAlg::Sha256
}

fn yes() -> bool {
    true
}

/// What a trusted host's boot looks like (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferencePolicy {
    /// The PCR bank quoted and replayed (default `sha256`).
    #[serde(default = "default_bank")]
    pub bank: HashAlg,
    /// PCRs the quote must cover; every quoted PCR must also replay from the log.
    pub pcrs: BTreeSet<u32>,
    /// Secure Boot must be measured as enabled (default `true`).
    #[serde(default = "yes")]
    pub require_secure_boot: bool,
    /// Allowed PK event digests.
    pub pk: AllowList<Digest>,
    /// Allowed KEK event digests.
    pub kek: AllowList<Digest>,
    /// Allowed db event digests.
    pub db: AllowList<Digest>,
    /// Allowed dbx event digests.
    pub dbx: AllowList<Digest>,
    /// Allowed firmware blob digests.
    pub firmware_blobs: AllowList<Digest>,
    /// Allowed boot application (shim, GRUB, kernel) Authenticode digests.
    pub boot_applications: AllowList<Digest>,
    /// Allowed kernel command lines (exact).
    pub kernel_cmdlines: AllowList<String>,
    /// Allowed agent-reported binaries.
    pub agent_measurements: AllowList<AgentReference>,
}

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// No PCR would be quoted.
    #[error("the policy quotes no pcrs; list at least the pcrs its checks read")]
    NoPcrs,
    /// A PCR index beyond 23.
    #[error("pcr {0} does not exist (pc client tpms have pcrs 0-23)")]
    PcrRange(u32),
    /// A check reads a PCR the quote does not cover, so it could never pass.
    #[error(
        "{class} is appraised from pcr {pcr}, which the policy does not quote; add {pcr} to pcrs or set the list to \"any\""
    )]
    PcrNotQuoted {
        /// The class.
        class: EventClass,
        /// Its PCR.
        pcr: u32,
    },
    /// A digest of the wrong length for the bank.
    #[error("{field} entry {digest} is {len} bytes; {bank} digests are {expected}")]
    DigestLength {
        /// The list.
        field: &'static str,
        /// The entry.
        digest: Digest,
        /// Its length.
        len: usize,
        /// The bank.
        bank: HashAlg,
        /// The bank's digest length.
        expected: usize,
    },
}

impl ReferencePolicy {
    /// The digest allow-list for a class (`None` for the secure boot state and command lines).
    pub fn digests_for(&self, class: EventClass) -> Option<&AllowList<Digest>> {
        match class {
            EventClass::Pk => Some(&self.pk),
            EventClass::Kek => Some(&self.kek),
            EventClass::Db => Some(&self.db),
            EventClass::Dbx => Some(&self.dbx),
            EventClass::FirmwareBlob => Some(&self.firmware_blobs),
            EventClass::BootApplication => Some(&self.boot_applications),
            EventClass::SecureBoot | EventClass::KernelCmdline => None,
        }
    }

    /// Whether the class is appraised at all.
    pub fn checks(&self, class: EventClass) -> bool {
        match class {
            EventClass::SecureBoot => self.require_secure_boot,
            EventClass::KernelCmdline => !matches!(self.kernel_cmdlines, AllowList::Any),
            c => self
                .digests_for(c)
                .is_some_and(|l| !matches!(l, AllowList::Any)),
        }
    }

    /// Checks the policy can be appraised at all: PCRs exist, every appraised class's PCR is
    /// quoted, digests have the bank's length. Run it before accepting a policy.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.pcrs.is_empty() {
            return Err(PolicyError::NoPcrs);
        }
        if let Some(p) = self.pcrs.iter().find(|p| **p > 23) {
            return Err(PolicyError::PcrRange(*p));
        }
        for class in [
            EventClass::SecureBoot,
            EventClass::Pk,
            EventClass::Kek,
            EventClass::Db,
            EventClass::Dbx,
            EventClass::FirmwareBlob,
            EventClass::BootApplication,
            EventClass::KernelCmdline,
        ] {
            if self.checks(class) && !self.pcrs.contains(&class.pcr()) {
                return Err(PolicyError::PcrNotQuoted {
                    class,
                    pcr: class.pcr(),
                });
            }
        }
        let lists: [(&'static str, &AllowList<Digest>, usize); 6] = [
            ("pk", &self.pk, self.bank.digest_len()),
            ("kek", &self.kek, self.bank.digest_len()),
            ("db", &self.db, self.bank.digest_len()),
            ("dbx", &self.dbx, self.bank.digest_len()),
            (
                "firmwareBlobs",
                &self.firmware_blobs,
                self.bank.digest_len(),
            ),
            (
                "bootApplications",
                &self.boot_applications,
                self.bank.digest_len(),
            ),
        ];
        for (field, list, expected) in lists {
            for d in list.entries().unwrap_or(&[]) {
                if d.0.len() != expected {
                    return Err(PolicyError::DigestLength {
                        field,
                        digest: d.clone(),
                        len: d.0.len(),
                        bank: self.bank,
                        expected,
                    });
                }
            }
        }
        for a in self.agent_measurements.entries().unwrap_or(&[]) {
            if a.sha256.0.len() != 32 {
                return Err(PolicyError::DigestLength {
                    field: "agentMeasurements",
                    digest: a.sha256.clone(),
                    len: a.sha256.0.len(),
                    bank: HashAlg::Sha256,
                    expected: 32,
                });
            }
        }
        Ok(())
    }

    /// A policy that pins everything `log` measured in `bank` (and the agent's reported
    /// binaries), quoting `pcrs`: how a reference is captured from a known-good host. A
    /// class the log does not contain gets an empty list (it must not appear later).
    /// Secure Boot is required only if the log shows it enabled. Review before signing.
    pub fn golden(
        log: &EventLog,
        bank: HashAlg,
        pcrs: &[u32],
        agent: &[AgentMeasurement],
    ) -> ReferencePolicy {
        let mut digests: std::collections::BTreeMap<EventClass, Vec<Digest>> = Default::default();
        let mut cmdlines = Vec::new();
        let mut secure_boot = false;
        for e in &log.events {
            let Some(class) = EventClass::of(e) else {
                continue;
            };
            match class {
                EventClass::SecureBoot => {
                    secure_boot = matches!(e.variable(), Some(Ok(v)) if v.data == [1]);
                }
                EventClass::KernelCmdline => {
                    if let Some(c) = e.kernel_cmdline()
                        && !cmdlines.contains(&c)
                    {
                        cmdlines.push(c);
                    }
                }
                c => {
                    if let Some(d) = e.digest(bank) {
                        let list = digests.entry(c).or_default();
                        let d = Digest(d.to_vec());
                        if !list.contains(&d) {
                            list.push(d);
                        }
                    }
                }
            }
        }
        let mut take = |c| AllowList::Only(digests.remove(&c).unwrap_or_default());
        ReferencePolicy {
            bank,
            pcrs: pcrs.iter().copied().collect(),
            require_secure_boot: secure_boot,
            pk: take(EventClass::Pk),
            kek: take(EventClass::Kek),
            db: take(EventClass::Db),
            dbx: take(EventClass::Dbx),
            firmware_blobs: take(EventClass::FirmwareBlob),
            boot_applications: take(EventClass::BootApplication),
            kernel_cmdlines: AllowList::Only(cmdlines),
            agent_measurements: AllowList::Only(
                agent
                    .iter()
                    .filter_map(|m| {
                        Some(AgentReference {
                            name: m.name.clone(),
                            sha256: Digest::from_hex(&m.sha256)?,
                        })
                    })
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn json() -> serde_json::Value {
        serde_json::to_value(testkit::policy()).unwrap()
    }

    #[test]
    fn policies_serialize_as_documented_and_round_trip() {
        let p = testkit::policy();
        let v = json();
        assert_eq!(v["bank"], "sha256");
        assert_eq!(v["pcrs"], serde_json::json!([0, 4, 7, 8, 14]));
        assert_eq!(v["requireSecureBoot"], true);
        assert_eq!(
            v["kernelCmdlines"],
            serde_json::json!(["root=/dev/vda1 ro"])
        );
        assert_eq!(v["bootApplications"].as_array().map(Vec::len), Some(3));
        assert_eq!(v["agentMeasurements"][0]["name"], "qemu");
        assert_eq!(serde_json::from_value::<ReferencePolicy>(v).ok(), Some(p));
        let mut any = json();
        any["pk"] = serde_json::json!("any");
        let back: ReferencePolicy = serde_json::from_value(any).unwrap();
        assert_eq!(back.pk, AllowList::Any);
        assert_eq!(serde_json::to_value(&back).unwrap()["pk"], "any");
    }

    #[test]
    fn there_is_no_implicit_anything() {
        for field in [
            "pk",
            "kek",
            "db",
            "dbx",
            "firmwareBlobs",
            "bootApplications",
            "kernelCmdlines",
            "agentMeasurements",
        ] {
            let mut v = json();
            v.as_object_mut().unwrap().remove(field);
            let err = serde_json::from_value::<ReferencePolicy>(v)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("missing field `{field}`")), "{err}");
            let mut v = json();
            v[field] = serde_json::Value::Null;
            let err = serde_json::from_value::<ReferencePolicy>(v)
                .unwrap_err()
                .to_string();
            assert!(err.contains("expected \"any\" or a list"), "{err}");
        }
        let mut v = json();
        v["bootApplications"] = serde_json::json!("anything");
        assert!(serde_json::from_value::<ReferencePolicy>(v).is_err());
        let mut v = json();
        v["bootApplications"] = serde_json::json!(["zz"]);
        assert!(
            serde_json::from_value::<ReferencePolicy>(v).is_err(),
            "not hex"
        );
        let mut v = json();
        v["surprise"] = serde_json::json!(1);
        assert!(
            serde_json::from_value::<ReferencePolicy>(v).is_err(),
            "unknown field"
        );
        // Defaults: sha256 bank, secure boot required.
        let mut v = json();
        let o = v.as_object_mut().unwrap();
        o.remove("bank");
        o.remove("requireSecureBoot");
        let p: ReferencePolicy = serde_json::from_value(v).unwrap();
        assert_eq!((p.bank, p.require_secure_boot), (HashAlg::Sha256, true));
    }

    #[test]
    fn validate_refuses_policies_that_could_never_be_checked() {
        assert_eq!(testkit::policy().validate(), Ok(()));
        let mut p = testkit::policy();
        p.pcrs.remove(&4);
        assert_eq!(
            p.validate(),
            Err(PolicyError::PcrNotQuoted {
                class: EventClass::BootApplication,
                pcr: 4
            })
        );
        p.boot_applications = AllowList::Any;
        assert_eq!(p.validate(), Ok(()), "an unchecked class needs no pcr");
        p.pcrs.insert(24);
        assert_eq!(p.validate(), Err(PolicyError::PcrRange(24)));
        let mut p = testkit::policy();
        p.db = AllowList::Only(vec![Digest(vec![0; 20])]);
        assert!(matches!(
            p.validate(),
            Err(PolicyError::DigestLength {
                field: "db",
                len: 20,
                expected: 32,
                ..
            })
        ));
        let mut p = testkit::policy();
        p.agent_measurements = AllowList::Only(vec![AgentReference {
            name: "qemu".into(),
            sha256: Digest(vec![1; 20]),
        }]);
        assert!(matches!(
            p.validate(),
            Err(PolicyError::DigestLength {
                field: "agentMeasurements",
                ..
            })
        ));
    }

    #[test]
    fn golden_pins_every_class_from_the_log() {
        let log = testkit::uefi_log(&testkit::Images::default()).into_log();
        let p = ReferencePolicy::golden(&log, HashAlg::Sha256, &[0, 4, 7, 8], &[]);
        let digest = |i: usize| {
            Digest(
                log.events[i]
                    .digest(HashAlg::Sha256)
                    .unwrap_or_default()
                    .to_vec(),
            )
        };
        assert_eq!(p.pk, AllowList::Only(vec![digest(3)]));
        assert_eq!(p.dbx, AllowList::Only(vec![digest(6)]));
        assert_eq!(p.firmware_blobs, AllowList::Only(vec![digest(1)]));
        assert_eq!(
            p.boot_applications,
            AllowList::Only(vec![digest(15), digest(16), digest(17)])
        );
        assert!(p.require_secure_boot);
        assert_eq!(p.agent_measurements, AllowList::Only(vec![]));
        // A log without secure boot does not require it.
        let off = testkit::uefi_log(&testkit::Images {
            secure_boot: false,
            ..Default::default()
        })
        .into_log();
        assert!(!ReferencePolicy::golden(&off, HashAlg::Sha256, &[7], &[]).require_secure_boot);
    }

    #[test]
    fn event_classes_know_their_pcr_and_variable() {
        let log = testkit::uefi_log(&testkit::Images::default()).into_log();
        let classes: Vec<Option<EventClass>> = log.events.iter().map(EventClass::of).collect();
        assert_eq!(classes[1], Some(EventClass::FirmwareBlob));
        assert_eq!(classes[2], Some(EventClass::SecureBoot));
        assert_eq!(classes[6], Some(EventClass::Dbx));
        assert_eq!(classes[7], None, "separators are not appraised");
        assert_eq!(classes[17], Some(EventClass::BootApplication));
        assert_eq!(classes[18], Some(EventClass::KernelCmdline));
        for c in classes.into_iter().flatten() {
            assert!([0, 4, 7, 8].contains(&c.pcr()));
        }
    }
}
