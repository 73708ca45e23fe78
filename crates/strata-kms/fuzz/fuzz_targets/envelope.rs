//! The envelope parser on arbitrary bytes, in both storage forms: never panics; what parses is
//! canonical (re-encodes to the same bytes) and survives the base64/JSON round trip; and
//! nothing random opens under a fixed platform key.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_kms::{Envelope, PlatformKey, RootKey, RootSecret};

fn pmk() -> &'static PlatformKey {
    static PMK: OnceLock<PlatformKey> = OnceLock::new();
    PMK.get_or_init(|| {
        let root = RootKey::from_secret(&RootSecret::from_bytes(&[7; 32]).unwrap()).unwrap();
        root.create_platform_key("/subscriptions/fuzz", 1).unwrap().0
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::from_bytes(data) {
        assert_eq!(env.to_bytes(), data);
        let text = env.encode();
        assert_eq!(Envelope::decode(&text).unwrap(), env);
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), env);
        assert!(pmk().unwrap_data_key("/disk", &env).is_err());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Envelope::decode(text);
        let _ = serde_json::from_str::<Envelope>(text);
    }
});
