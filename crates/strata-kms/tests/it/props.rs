//! Property tests: envelopes round-trip through their storage form and open; any single-bit
//! flip is rejected; the parser never panics and is canonical.

use proptest::prelude::*;
use strata_kms::{DataKey, Envelope};

use crate::common::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn envelopes_round_trip_and_reject_any_bit_flip(
        key in prop::array::uniform32(any::<u8>()),
        resource in "[a-z0-9/._-]{0,80}",
        flip in any::<prop::sample::Index>(),
    ) {
        let root = root();
        let pmk = pmk(&root);
        let dek = DataKey::from_bytes(&key).unwrap();
        let env = pmk.wrap_data_key(&resource, &dek).unwrap();

        let stored = env.encode();
        let back: Envelope = stored.parse().unwrap();
        prop_assert_eq!(&back, &env);
        let opened = pmk.unwrap_data_key(&resource, &back).unwrap();
        prop_assert_eq!(opened.expose_secret(), &key);

        let mut bytes = env.to_bytes();
        let bit = flip.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        if let Ok(tampered) = Envelope::from_bytes(&bytes) {
            prop_assert!(pmk.unwrap_data_key(&resource, &tampered).is_err(), "bit {} flipped and it opened", bit);
        }
    }

    #[test]
    fn parser_never_panics_and_is_canonical(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(env) = Envelope::from_bytes(&bytes) {
            prop_assert_eq!(env.to_bytes(), bytes);
            prop_assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
        }
    }

    #[test]
    fn near_valid_envelopes_parse_canonically(
        id in "[a-zA-Z0-9/]{1,40}",
        version in 1u32..,
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(&(id.len() as u16).to_be_bytes());
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(&version.to_be_bytes());
        bytes.extend_from_slice(&[0; 12]);
        bytes.extend_from_slice(&body);
        match Envelope::from_bytes(&bytes) {
            Ok(env) => {
                prop_assert!(body.len() >= 16);
                prop_assert_eq!(&env.key().id, &id);
                prop_assert_eq!(env.key().version, version);
                prop_assert_eq!(env.to_bytes(), bytes);
            }
            Err(_) => prop_assert!(body.len() < 16),
        }
    }
}
