//! Test helpers: software attestation keys, a UEFI boot log like the boot simulator's, and
//! evidence signed the way a TPM would sign it, so every check can be driven in-process.

use ring::rand::SystemRandom;
use ring::signature::{self as rs, EcdsaKeyPair, KeyPair as _, RsaKeyPair};

use crate::appraise::{AgentMeasurement, Evidence};
use crate::eventlog::{
    EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE, EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_EFI_VARIABLE_DRIVER_CONFIG, EV_S_CRTM_VERSION, EV_SEPARATOR,
    EventLog, FirmwareBlob, ImageLoadEvent, LogBuilder, UefiVariable, initial_pcr_value, replay,
    utf16z,
};
use crate::hash::HashAlg;
use crate::policy::ReferencePolicy;
use crate::tpm::{
    AsymScheme, Attest, ClockInfo, EccCurve, EccPublic, PcrSelection, Public, PublicKey, QuoteInfo,
    RsaPublic, Signature, TPM_GENERATED_VALUE, attr,
};

pub const QUOTED: [u32; 5] = [0, 4, 7, 8, 14];
pub const AK_ATTRIBUTES: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::USER_WITH_AUTH
    | attr::RESTRICTED
    | attr::SIGN_ENCRYPT;

/// A software stand-in for a TPM attestation key.
pub enum SoftKey {
    Ecc(EcdsaKeyPair),
    Rsa { pair: RsaKeyPair, pss: bool },
}

impl SoftKey {
    pub fn ecc() -> SoftKey {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&rs::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        SoftKey::Ecc(
            EcdsaKeyPair::from_pkcs8(&rs::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    pub fn rsa(pss: bool) -> SoftKey {
        let pair = RsaKeyPair::from_der(include_bytes!("testdata/rsa2048.der")).unwrap();
        SoftKey::Rsa { pair, pss }
    }

    pub fn public(&self) -> Public {
        let key = match self {
            SoftKey::Ecc(pair) => {
                let p = pair.public_key().as_ref();
                PublicKey::Ecc(EccPublic {
                    symmetric: None,
                    scheme: AsymScheme::Ecdsa(HashAlg::Sha256),
                    curve: EccCurve::NistP256,
                    kdf: None,
                    x: p[1..33].to_vec(),
                    y: p[33..65].to_vec(),
                })
            }
            SoftKey::Rsa { pair, pss } => {
                let c = rs::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                PublicKey::Rsa(RsaPublic {
                    symmetric: None,
                    scheme: if *pss {
                        AsymScheme::RsaPss(HashAlg::Sha256)
                    } else {
                        AsymScheme::RsaSsa(HashAlg::Sha256)
                    },
                    key_bits: 2048,
                    exponent: 0,
                    modulus: c.n,
                })
            }
        };
        Public {
            name_alg: HashAlg::Sha256,
            attributes: AK_ATTRIBUTES,
            auth_policy: Vec::new(),
            key,
        }
    }

    pub fn sign(&self, msg: &[u8]) -> Signature {
        let rng = SystemRandom::new();
        match self {
            SoftKey::Ecc(pair) => {
                let sig = pair.sign(&rng, msg).unwrap();
                let sig = sig.as_ref();
                Signature::Ecdsa {
                    hash: HashAlg::Sha256,
                    r: sig[..32].to_vec(),
                    s: sig[32..].to_vec(),
                }
            }
            SoftKey::Rsa { pair, pss } => {
                let mut out = vec![0u8; pair.public().modulus_len()];
                let padding: &dyn rs::RsaEncoding = if *pss {
                    &rs::RSA_PSS_SHA256
                } else {
                    &rs::RSA_PKCS1_SHA256
                };
                pair.sign(padding, &rng, msg, &mut out).unwrap();
                if *pss {
                    Signature::RsaPss {
                        hash: HashAlg::Sha256,
                        sig: out,
                    }
                } else {
                    Signature::RsaSsa {
                        hash: HashAlg::Sha256,
                        sig: out,
                    }
                }
            }
        }
    }
}

/// What the test boot measures.
#[derive(Clone)]
pub struct Images {
    pub firmware: Vec<u8>,
    pub secure_boot: bool,
    pub pk: Vec<u8>,
    pub kek: Vec<u8>,
    pub db: Vec<u8>,
    pub dbx: Vec<u8>,
    pub shim: Vec<u8>,
    pub grub: Vec<u8>,
    pub kernel: Vec<u8>,
    pub cmdline: String,
}

impl Default for Images {
    fn default() -> Images {
        Images {
            firmware: b"firmware volume".to_vec(),
            secure_boot: true,
            pk: b"pk".to_vec(),
            kek: b"kek".to_vec(),
            db: b"db".to_vec(),
            dbx: b"dbx".to_vec(),
            shim: b"shim".to_vec(),
            grub: b"grub".to_vec(),
            kernel: b"kernel".to_vec(),
            cmdline: "root=/dev/vda1 ro".to_owned(),
        }
    }
}

/// A UEFI Secure Boot log in both banks (event numbers: 1 CRTM, 2 firmware, 3–7 variables
/// SecureBoot/PK/KEK/db/dbx, 8–15 separators 0–7, 16 shim, 17 grub, 18 kernel, 19 cmdline).
pub fn uefi_log(images: &Images) -> LogBuilder {
    let mut b = LogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256]);
    b.event(0, EV_S_CRTM_VERSION, utf16z("1.0"));
    b.measure(
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
    for (guid, name, data) in [
        (
            EFI_GLOBAL_VARIABLE,
            "SecureBoot",
            vec![u8::from(images.secure_boot)],
        ),
        (EFI_GLOBAL_VARIABLE, "PK", images.pk.clone()),
        (EFI_GLOBAL_VARIABLE, "KEK", images.kek.clone()),
        (EFI_IMAGE_SECURITY_DATABASE, "db", images.db.clone()),
        (EFI_IMAGE_SECURITY_DATABASE, "dbx", images.dbx.clone()),
    ] {
        b.event(
            7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            UefiVariable {
                guid,
                name: name.to_owned(),
                data,
            }
            .encode(),
        );
    }
    for pcr in 0..8 {
        b.event(pcr, EV_SEPARATOR, vec![0; 4]);
    }
    for (path, image) in [
        ("\\EFI\\BOOT\\BOOTX64.EFI", &images.shim),
        ("\\EFI\\debian\\grubx64.efi", &images.grub),
        ("\\vmlinuz", &images.kernel),
    ] {
        b.measure(
            4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            ImageLoadEvent::with_file_path(path, image.len() as u64).encode(),
            image,
        );
    }
    b.kernel_cmdline(&images.cmdline);
    b
}

pub fn agent_measurements() -> Vec<AgentMeasurement> {
    vec![
        AgentMeasurement {
            name: "qemu".to_owned(),
            sha256: crate::hex(&HashAlg::Sha256.hash(b"qemu")),
        },
        AgentMeasurement {
            name: "strata-agent".to_owned(),
            sha256: crate::hex(&HashAlg::Sha256.hash(b"agent")),
        },
    ]
}

/// The golden policy for `Images::default()` quoting `QUOTED`.
pub fn policy() -> ReferencePolicy {
    let log = uefi_log(&Images::default()).into_log();
    ReferencePolicy::golden(&log, HashAlg::Sha256, &QUOTED, &agent_measurements())
}

pub const CLOCK: ClockInfo = ClockInfo {
    clock: 100_000,
    reset_count: 3,
    restart_count: 0,
    safe: true,
};

/// The PCR values a TPM that measured `log` holds for `pcrs`.
pub fn pcr_values(log: &EventLog, pcrs: &[u32]) -> std::collections::BTreeMap<u32, Vec<u8>> {
    let replayed = replay(log, HashAlg::Sha256).unwrap();
    pcrs.iter()
        .map(|p| {
            (
                *p,
                replayed
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| initial_pcr_value(*p, HashAlg::Sha256)),
            )
        })
        .collect()
}

/// A quote over `pcrs` with these values.
pub fn attest(
    values: &std::collections::BTreeMap<u32, Vec<u8>>,
    pcrs: &[u32],
    nonce: &[u8],
    clock: ClockInfo,
) -> Attest {
    let concat: Vec<u8> = pcrs.iter().flat_map(|p| values[p].clone()).collect();
    Attest {
        magic: TPM_GENERATED_VALUE,
        qualified_signer: [vec![0, 0x0b], vec![0x5a; 32]].concat(),
        extra_data: nonce.to_vec(),
        clock_info: clock,
        firmware_version: 0x2023_0112_0000_0000,
        quote: QuoteInfo {
            pcr_select: vec![PcrSelection::new(HashAlg::Sha256, pcrs)],
            pcr_digest: HashAlg::Sha256.hash(&concat),
        },
    }
}

/// Evidence from a host that booted `log`, signed by `key`.
pub fn evidence(key: &SoftKey, log: &LogBuilder, nonce: &[u8], clock: ClockInfo) -> Evidence {
    let values = pcr_values(log.log(), &QUOTED);
    let attest = attest(&values, &QUOTED, nonce, clock).encode();
    Evidence {
        signature: key.sign(&attest).encode(),
        attest,
        pcrs: values,
        event_log: log.build(),
        agent_measurements: agent_measurements(),
    }
}

/// Re-signs `e.attest` after a test changed it.
pub fn resign(key: &SoftKey, e: &mut Evidence) {
    e.signature = key.sign(&e.attest).encode();
}
