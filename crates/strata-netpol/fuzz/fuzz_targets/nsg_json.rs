//! The NSG / security rule JSON parser and validation on arbitrary bytes: never panic, and an
//! NSG that validates serializes back to JSON that parses to the same NSG and validates again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_netpol::{
    NetworkSecurityGroup, SecurityRule, validate_network_security_group, validate_security_rule,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(rule) = serde_json::from_slice::<SecurityRule>(data) {
        let _ = validate_security_rule(&rule).map_err(|e| e.code());
    }
    let Ok(nsg) = serde_json::from_slice::<NetworkSecurityGroup>(data) else {
        return;
    };
    if validate_network_security_group(&nsg).is_ok() {
        let json = serde_json::to_vec(&nsg).expect("a parsed nsg serializes");
        let again: NetworkSecurityGroup = serde_json::from_slice(&json).expect("round trip");
        assert_eq!(again, nsg);
        assert!(validate_network_security_group(&again).is_ok());
    }
});
