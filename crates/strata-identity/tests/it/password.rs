//! Password hashing and policy.

use strata_identity::password::{self, PasswordError};

#[test]
fn hash_verify_round_trip_and_wrong_password() {
    let phc = password::hash("correct horse Battery 9").unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert!(password::verify("correct horse Battery 9", &phc));
    assert!(!password::verify("correct horse Battery 8", &phc));
    assert!(!password::verify("", &phc));
    // A second hash of the same password uses a fresh salt.
    let again = password::hash("correct horse Battery 9").unwrap();
    assert_ne!(phc, again);
    // Tampering with the stored hash fails closed.
    let mut tampered = phc.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(!password::verify("correct horse Battery 9", &tampered));
}

#[test]
fn garbage_phc_is_false() {
    for phc in [
        "",
        "not a hash",
        "$argon2id$",
        "$argon2id$v=19$m=19456,t=2,p=1$$",
        "$2b$12$abcdefghijklmnopqrstuv",
        "$argon2id$v=16$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
    ] {
        assert!(!password::verify("whatever password", phc), "{phc}");
    }
}

#[test]
fn overlong_password_rejected() {
    let long = "aA1".repeat(100);
    assert_eq!(password::hash(&long), Err(PasswordError::TooLong));
}

#[test]
fn policy_cases() {
    assert_eq!(
        password::check_policy("Short1!"),
        Err(PasswordError::TooShort)
    );
    assert_eq!(password::check_policy(""), Err(PasswordError::TooShort));
    assert_eq!(
        password::check_policy("alllowercaseletters"),
        Err(PasswordError::TooSimple)
    );
    assert_eq!(
        password::check_policy("ALLUPPERCASELETTERS"),
        Err(PasswordError::TooSimple)
    );
    assert_eq!(
        password::check_policy("123456789012"),
        Err(PasswordError::TooSimple)
    );
    assert_eq!(
        password::check_policy("!!!!!!!!!!!!!!"),
        Err(PasswordError::TooSimple)
    );
    assert_eq!(
        password::check_policy(&"aB".repeat(129)),
        Err(PasswordError::TooLong)
    );
    assert_eq!(password::check_policy("lowercase and spaces"), Ok(()));
    assert_eq!(password::check_policy("Twelve chars"), Ok(()));
    assert_eq!(password::check_policy("correcthorse9"), Ok(()));
    // Length counts characters, not bytes: 11 two-byte characters is too short.
    assert_eq!(
        password::check_policy(&"é".repeat(11)),
        Err(PasswordError::TooShort)
    );
    assert_eq!(password::check_policy(&"aB".repeat(128)), Ok(()));
}

#[test]
fn errors_never_contain_the_password() {
    let pw = "Sup3rSecretPw";
    for e in [
        password::check_policy("sup3r").unwrap_err(),
        password::check_policy(&pw.repeat(30)).unwrap_err(),
    ] {
        assert!(!e.to_string().contains("sup3r") && !format!("{e:?}").contains("sup3r"));
        assert_eq!(e.to_string(), e.to_string().to_lowercase());
    }
}
