//! The audit record and its canonical leaf encoding.

use serde::{Deserialize, Serialize};

use crate::merkle::{Hash, leaf_hash};

/// One audit record.
///
/// Its leaf bytes are `serde_json::to_vec(&entry)`, with the field order fixed by
/// this struct, so the leaf hash covers `seq` and moving an entry to another
/// position in the log is detectable. Verification always hashes the bytes as
/// stored, never a re-serialization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditEntry {
    /// 0-based position in the log.
    pub seq: u64,
    /// RFC 3339 UTC timestamp.
    pub time: String,
    pub request_id: String,
    pub principal_id: Option<String>,
    pub principal_name: Option<String>,
    pub client_ip: Option<String>,
    /// `"write"`, `"denial"`, `"signIn"`, `"token"`, `"read"` or `"system"`.
    pub category: String,
    /// e.g. `"Strata.Compute/virtualMachines/write"` or `"oauth2/token"`.
    pub action: String,
    /// Resource id, or `"/"`.
    pub scope: String,
    /// `"success"`, `"denied"` or `"failure"`.
    pub outcome: String,
    /// HTTP status.
    pub status: u16,
    /// Decision reason; never a secret.
    pub reason: String,
    #[serde(default)]
    pub details: serde_json::Value,
}

impl AuditEntry {
    /// The bytes that are stored and hashed as this entry's Merkle leaf.
    pub fn leaf_bytes(&self) -> Vec<u8> {
        // Serializing this struct cannot fail: every field is a string, integer,
        // option or `serde_json::Value` (whose maps have string keys).
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `leaf_hash(self.leaf_bytes())`.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.leaf_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuditEntry {
        AuditEntry {
            seq: 7,
            time: "2025-01-01T00:00:00Z".into(),
            request_id: "req-1".into(),
            principal_id: Some("p1".into()),
            principal_name: None,
            client_ip: Some("10.0.0.1".into()),
            category: "write".into(),
            action: "Strata.Compute/virtualMachines/write".into(),
            scope: "/subscriptions/s1".into(),
            outcome: "success".into(),
            status: 201,
            reason: "role assignment".into(),
            details: serde_json::json!({"b": 1, "a": [true]}),
        }
    }

    #[test]
    fn leaf_bytes_have_fixed_field_order_and_round_trip() {
        let e = sample();
        let bytes = e.leaf_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"seq":7,"time":"#), "{text}");
        let keys = [
            "\"seq\"",
            "\"time\"",
            "\"requestId\"",
            "\"principalId\"",
            "\"principalName\"",
            "\"clientIp\"",
            "\"category\"",
            "\"action\"",
            "\"scope\"",
            "\"outcome\"",
            "\"status\"",
            "\"reason\"",
            "\"details\"",
        ];
        let positions: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        let back: AuditEntry = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, e);
        assert_eq!(e.leaf_hash(), leaf_hash(&bytes));
    }

    #[test]
    fn seq_is_covered_by_the_hash() {
        let a = sample();
        let mut b = sample();
        b.seq = 8;
        assert_ne!(a.leaf_hash(), b.leaf_hash());
    }

    #[test]
    fn unknown_fields_are_rejected_and_details_default_to_null() {
        let mut v = serde_json::to_value(sample()).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("details");
        let parsed: AuditEntry = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(parsed.details, serde_json::Value::Null);
        v.as_object_mut().unwrap().insert("extra".into(), 1.into());
        assert!(serde_json::from_value::<AuditEntry>(v).is_err());
    }
}
