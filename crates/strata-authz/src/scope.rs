//! Scope strings and the "does an assignment here reach that scope?" rule.
//!
//! Scopes compare ASCII-case-insensitively and trailing slashes are ignored. An assignment at `S`
//! reaches `R` when `R == S` or `R` starts with `S + "/"`; the tenant root `/` reaches everything.

/// Drops trailing slashes; the root (`/`, `//`, or the empty string) becomes `""`.
pub(crate) fn trim_scope(scope: &str) -> &str {
    scope.trim_end_matches('/')
}

/// Coverage test on trimmed, ASCII-lowercased scopes: plain byte compares.
pub(crate) fn covers_lower(assigned: &str, requested: &str) -> bool {
    assigned.is_empty()
        || (requested.starts_with(assigned)
            && (requested.len() == assigned.len() || requested.as_bytes()[assigned.len()] == b'/'))
}

/// Coverage test on already-trimmed scopes (root is `""`).
pub(crate) fn covers_trimmed(assigned: &str, requested: &str) -> bool {
    let (a, r) = (assigned.as_bytes(), requested.as_bytes());
    if a.is_empty() {
        return true;
    }
    match r.len().cmp(&a.len()) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => r.eq_ignore_ascii_case(a),
        std::cmp::Ordering::Greater => r[a.len()] == b'/' && r[..a.len()].eq_ignore_ascii_case(a),
    }
}

/// True when a grant at scope `assigned` applies to a request at scope `requested`.
///
/// ```
/// use strata_authz::scope_covers;
/// assert!(scope_covers("/", "/subscriptions/s1"));
/// assert!(scope_covers("/subscriptions/S1/", "/subscriptions/s1/resourceGroups/rg"));
/// assert!(!scope_covers("/subscriptions/s1", "/subscriptions/s10"));
/// ```
pub fn scope_covers(assigned: &str, requested: &str) -> bool {
    covers_trimmed(trim_scope(assigned), trim_scope(requested))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_trailing_slashes() {
        assert!(scope_covers("/", "/"));
        assert!(scope_covers("", "/x"));
        assert!(scope_covers("/subscriptions/s1/", "/subscriptions/s1"));
        assert!(scope_covers("/subscriptions/s1", "/subscriptions/s1//"));
        assert!(!scope_covers("/subscriptions/s1", "/"));
        assert!(!scope_covers("/subscriptions/s1", "/subscriptions/s1x"));
        assert!(scope_covers(
            "/SUBSCRIPTIONS/s1",
            "/subscriptions/S1/resourceGroups/a"
        ));
    }
}
