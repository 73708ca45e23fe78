//! The control plane's root key sealed to a TPM (swtpm here): the blob is useless without
//! that TPM, another TPM refuses it, a PCR-bound blob opens only while the PCRs hold, and
//! `prepare` picks, migrates and refuses as documented in `strata_agent::rootseal`.

use std::os::unix::fs::PermissionsExt as _;

use base64::Engine as _;
use strata_agent::rootseal::{
    self, RootKeyMode, RootKeyOptions, RootSealError, SealedBlob, TpmSealer,
};
use strata_kms::{RootKeySealer, RootSecret};

use crate::support;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

#[test]
fn a_sealed_root_key_opens_only_with_its_tpm() {
    let (_ca, hosts) = support::hosts(2);
    let sealer = TpmSealer::new(hosts[0].tcti(), &[]).unwrap();
    sealer.probe().unwrap();
    let secret = RootSecret::generate().unwrap();
    let blob = sealer.seal(&secret).unwrap();

    // Nothing in the blob is the secret, in any encoding the blob uses.
    let parsed = SealedBlob::parse(&blob).unwrap();
    assert_eq!(parsed.format, rootseal::FORMAT);
    assert!(parsed.pcrs.is_empty());
    let private = base64::engine::general_purpose::STANDARD
        .decode(&parsed.private)
        .unwrap();
    for bytes in [&blob[..], &private[..]] {
        assert!(!contains(bytes, secret.expose_secret()));
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret.expose_secret());
    assert!(!contains(&blob, b64.as_bytes()));

    // Its TPM unseals it, again and again (the storage primary is re-derived each time).
    for _ in 0..2 {
        assert_eq!(
            sealer.unseal(&blob).unwrap().expose_secret(),
            secret.expose_secret()
        );
    }
    // Sealing again gives another blob for the same secret.
    let again = sealer.seal(&secret).unwrap();
    assert_ne!(again, blob);
    assert_eq!(
        sealer.unseal(&again).unwrap().expose_secret(),
        secret.expose_secret()
    );

    // Another TPM refuses it, and says what that probably means.
    let other = TpmSealer::new(hosts[1].tcti(), &[]).unwrap();
    let err = chain(&*other.unseal(&blob).unwrap_err());
    assert!(err.contains("sealed by another tpm"), "{err}");

    // A tampered private part is refused by the TPM's integrity check.
    let mut tampered = parsed.clone();
    let mut bytes = private.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    tampered.private = base64::engine::general_purpose::STANDARD.encode(&bytes);
    assert!(
        sealer
            .unseal(&serde_json::to_vec(&tampered).unwrap())
            .is_err()
    );
    assert!(sealer.unseal(b"not a blob").is_err());

    // Nothing is left loaded in the TPM (swtpm has no resource manager).
    assert_eq!(
        hosts[0].open().unwrap().loaded_handles().unwrap(),
        Vec::<u32>::new()
    );
}

#[test]
fn a_pcr_bound_root_key_opens_only_while_the_pcrs_hold() {
    let (_ca, hosts) = support::hosts(1);
    let sealer = TpmSealer::new(hosts[0].tcti(), &[16, 16]).unwrap();
    assert_eq!(sealer.pcrs(), &[16]);
    assert!(sealer.describe().contains("pcrs [16]"));
    let secret = RootSecret::generate().unwrap();
    let blob = sealer.seal(&secret).unwrap();
    assert_eq!(SealedBlob::parse(&blob).unwrap().pcrs, vec![16]);
    // Unsealing follows the blob, whatever PCRs the unsealing sealer would seal to.
    let unbound = TpmSealer::new(hosts[0].tcti(), &[]).unwrap();
    assert_eq!(
        unbound.unseal(&blob).unwrap().expose_secret(),
        secret.expose_secret()
    );
    // Claiming the blob has no PCR policy does not get around it.
    let mut forged = SealedBlob::parse(&blob).unwrap();
    forged.pcrs.clear();
    assert!(
        unbound
            .unseal(&serde_json::to_vec(&forged).unwrap())
            .is_err()
    );

    // The boot changes (something is measured into PCR 16): refused.
    hosts[0]
        .open()
        .unwrap()
        .pcr_event(16, b"another kernel")
        .unwrap();
    let err = chain(&*sealer.unseal(&blob).unwrap_err());
    assert!(err.contains("pcr policy"), "{err}");
    assert!(TpmSealer::new(hosts[0].tcti(), &[24]).is_err());
    assert_eq!(
        hosts[0].open().unwrap().loaded_handles().unwrap(),
        Vec::<u32>::new()
    );
}

fn options(mode: RootKeyMode, tcti: &str) -> RootKeyOptions {
    RootKeyOptions {
        mode,
        tcti: tcti.to_owned(),
        pcrs: Vec::new(),
    }
}

fn load(prepared: &rootseal::PreparedRootKey) -> RootSecret {
    prepared.provider.load_or_create().unwrap().secret
}

#[test]
fn prepare_picks_the_tpm_migrates_a_file_key_and_never_falls_back() {
    let (_ca, hosts) = support::hosts(2);
    let tcti = hosts[0].tcti();
    let no_tpm = "device:/nonexistent/tpmrm0";

    // No TPM: a file key, with the provider's warning and a note saying why.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let p = rootseal::prepare(data, &options(RootKeyMode::Auto, no_tpm)).unwrap();
    assert!(!p.sealed);
    assert!(p.notes[0].contains("no usable TPM"), "{:?}", p.notes);
    let loaded = p.provider.load_or_create().unwrap();
    assert_eq!(loaded.warning.unwrap().code, "RootKeyInFile");
    let secret = loaded.secret;
    assert_eq!(rootseal::status(data, no_tpm).unwrap().protection, "file");

    // With a usable TPM, auto keeps an existing file key (migration is an explicit decision)
    // and says how to seal it.
    let p = rootseal::prepare(data, &options(RootKeyMode::Auto, &tcti)).unwrap();
    assert!(!p.sealed);
    assert!(p.notes[0].contains("--root-key tpm"), "{:?}", p.notes);

    // --root-key tpm migrates: same key, sealed; the plain file is gone.
    let p = rootseal::prepare(data, &options(RootKeyMode::Tpm, &tcti)).unwrap();
    assert!(p.sealed);
    assert!(
        p.notes[0].contains("removed the plain copy"),
        "{:?}",
        p.notes
    );
    assert!(!data.join("root.key").exists());
    let sealed = data.join("root.key.sealed");
    assert_eq!(
        std::fs::metadata(&sealed).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let loaded = p.provider.load_or_create().unwrap();
    assert!(loaded.warning.is_none() && !loaded.created);
    assert_eq!(loaded.secret.expose_secret(), secret.expose_secret());
    let st = rootseal::status(data, &tcti).unwrap();
    assert_eq!(
        (st.protection, st.tpm_usable, st.plain_copy_present),
        ("tpm-sealed", true, false)
    );

    // From now on auto uses the TPM; without it, it refuses rather than make a new key.
    let p = rootseal::prepare(data, &options(RootKeyMode::Auto, &tcti)).unwrap();
    assert!(p.sealed && p.notes.is_empty(), "{:?}", p.notes);
    assert_eq!(load(&p).expose_secret(), secret.expose_secret());
    let err = rootseal::prepare(data, &options(RootKeyMode::Auto, no_tpm)).unwrap_err();
    assert!(matches!(err, RootSealError::Tpm { .. }), "{err}");
    let err = rootseal::prepare(data, &options(RootKeyMode::File, &tcti)).unwrap_err();
    assert!(chain(&err).contains("sealed to a TPM"), "{err}");
    // Another TPM cannot open it.
    let other = hosts[1].tcti();
    let p = rootseal::prepare(data, &options(RootKeyMode::Auto, &other)).unwrap();
    assert!(p.provider.load_or_create().is_err());
    assert!(!data.join("root.key").exists(), "no new key was made");

    // The recovery copy: 0600, the same 32 bytes, never over an existing file.
    let escrow = dir.path().join("escrow.key");
    rootseal::export(data, &tcti, &escrow).unwrap();
    assert_eq!(std::fs::read(&escrow).unwrap(), secret.expose_secret());
    assert_eq!(
        std::fs::metadata(&escrow).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(rootseal::export(data, &tcti, &escrow).is_err());

    // An interrupted migration (a plain copy beside the sealed key) is finished by the next
    // start; a plain copy holding another key is refused.
    std::fs::copy(&escrow, data.join("root.key")).unwrap();
    assert!(rootseal::status(data, &tcti).unwrap().plain_copy_present);
    let p = rootseal::prepare(data, &options(RootKeyMode::Auto, &tcti)).unwrap();
    assert!(p.notes[0].contains("finished sealing"), "{:?}", p.notes);
    assert!(!data.join("root.key").exists());
    let stranger = dir.path().join("stranger.key");
    std::fs::write(&stranger, RootSecret::generate().unwrap().expose_secret()).unwrap();
    std::fs::set_permissions(&stranger, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::copy(&stranger, data.join("root.key")).unwrap();
    let err = rootseal::prepare(data, &options(RootKeyMode::Tpm, &tcti)).unwrap_err();
    assert!(chain(&err).contains("hold different root keys"), "{err}");
    std::fs::remove_file(data.join("root.key")).unwrap();

    // Recovery onto a new TPM: the escrow copy back as root.key, the dead blob moved away.
    std::fs::rename(&sealed, dir.path().join("dead.sealed")).unwrap();
    std::fs::copy(&escrow, data.join("root.key")).unwrap();
    let p = rootseal::prepare(data, &options(RootKeyMode::Tpm, &other)).unwrap();
    assert_eq!(load(&p).expose_secret(), secret.expose_secret());
    assert!(!data.join("root.key").exists());

    // A fresh data directory on a host with a TPM gets a sealed key and a reminder to make
    // a recovery copy.
    let fresh = tempfile::tempdir().unwrap();
    let p = rootseal::prepare(fresh.path(), &options(RootKeyMode::Auto, &tcti)).unwrap();
    assert!(p.sealed);
    assert!(
        p.notes.iter().any(|n| n.contains("strata root-key export")),
        "{:?}",
        p.notes
    );
    let created = p.provider.load_or_create().unwrap();
    assert!(created.created && created.warning.is_none());
    assert!(!fresh.path().join("root.key").exists());
    assert_eq!(
        hosts[0].open().unwrap().loaded_handles().unwrap(),
        Vec::<u32>::new()
    );
}
