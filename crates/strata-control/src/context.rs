//! The request context: created once per request by the dispatcher, it carries who is calling
//! and what was decided, and it is the only way a handler can write — [`Ctx::commit`] puts the
//! request's audit entry into the same transaction as the write.

use crate::app::{App, Caller};
use serde_json::Value;
use strata_audit::AuditEntry;
use strata_store::{Committed, Op};
use strata_types::ApiError;

pub struct Ctx<'a> {
    pub app: &'a App,
    pub caller: Caller,
    pub request_id: String,
    pub client_ip: String,
    /// The RBAC action this request was authorized for.
    pub action: String,
    /// The scope (resource id) it was authorized at.
    pub scope: String,
    /// Why it was allowed (for the audit entry).
    pub reason: String,
    /// Set once the request's audit entry has been written.
    pub audited: std::cell::Cell<bool>,
}

impl Ctx<'_> {
    pub fn now(&self) -> i64 {
        strata_types::time::now_unix()
    }

    /// An audit entry for this request; `seq` is assigned by the store.
    pub fn entry(&self, category: &str, outcome: &str, status: u16, details: Value) -> AuditEntry {
        AuditEntry {
            seq: 0,
            time: strata_types::time::now_rfc3339(),
            request_id: self.request_id.clone(),
            principal_id: Some(self.caller.principal_id.clone()),
            principal_name: Some(self.caller.name.clone()),
            client_ip: Some(self.client_ip.clone()),
            category: category.to_string(),
            action: self.action.clone(),
            scope: self.scope.clone(),
            outcome: outcome.to_string(),
            status,
            reason: self.reason.clone(),
            details,
        }
    }

    /// Commits `ops` together with this request's audit entry, atomically.
    pub fn commit(
        &self,
        ops: Vec<Op>,
        status: u16,
        details: Value,
        touches_directory: bool,
    ) -> Result<Committed, ApiError> {
        let entry = self.entry("write", "success", status, details);
        let out = self.app.commit(
            strata_store::Batch {
                ops,
                audit: vec![entry],
            },
            touches_directory,
        )?;
        self.audited.set(true);
        Ok(out)
    }
}
