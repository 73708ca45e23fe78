//! Action patterns: ASCII-case-insensitive globs where `*` matches any run of characters,
//! including `/` (so `*/read` matches `Strata.Compute/virtualMachines/read`).

/// Does `pattern` match `action`? `*` matches any run of characters (including none and
/// including `/`); every other character matches itself, ignoring ASCII case.
///
/// ```
/// use strata_authz::action_matches;
/// assert!(action_matches("*/read", "Strata.Compute/virtualMachines/read"));
/// assert!(action_matches("strata.authorization/*/write", "Strata.Authorization/roleAssignments/write"));
/// assert!(!action_matches("Strata.Compute/*", "Strata.Network/virtualNetworks/read"));
/// ```
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let Some((prefix, rest)) = pattern.split_once('*') else {
        return pattern.eq_ignore_ascii_case(action);
    };
    let (middle, suffix) = rest.rsplit_once('*').unwrap_or(("", rest));
    glob(
        prefix.as_bytes(),
        middle.split('*').map(str::as_bytes),
        suffix.as_bytes(),
        action.as_bytes(),
    )
}

/// Matches `text` against `prefix * m1 * m2 * ... * suffix` (at least one `*`).
///
/// Greedy leftmost matching of the middle parts is exact for `*`-only globs: taking the earliest
/// occurrence of each part leaves the most room for the rest.
fn glob<'p>(
    prefix: &[u8],
    middles: impl Iterator<Item = &'p [u8]>,
    suffix: &[u8],
    text: &[u8],
) -> bool {
    if text.len() < prefix.len() + suffix.len() {
        return false;
    }
    let (head, tail) = text.split_at(prefix.len());
    if !head.eq_ignore_ascii_case(prefix) {
        return false;
    }
    let (mut rest, end) = tail.split_at(tail.len() - suffix.len());
    if !end.eq_ignore_ascii_case(suffix) {
        return false;
    }
    for part in middles {
        if part.is_empty() {
            continue;
        }
        match find_ignore_case(rest, part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    (0..=haystack.len() - needle.len())
        .find(|&at| haystack[at..at + needle.len()].eq_ignore_ascii_case(needle))
}

/// A pattern compiled once at engine build time: lowercased and split on `*`.
#[derive(Clone, Debug)]
pub(crate) enum Pattern {
    /// Only stars: matches everything.
    Any,
    /// No stars.
    Exact(Box<str>),
    Glob {
        prefix: Box<str>,
        middles: Box<[Box<str>]>,
        suffix: Box<str>,
    },
}

impl Pattern {
    pub(crate) fn compile(pattern: &str) -> Pattern {
        let lower = pattern.to_ascii_lowercase();
        let mut parts: Vec<&str> = lower.split('*').collect();
        if parts.len() == 1 {
            return Pattern::Exact(lower.into_boxed_str());
        }
        if parts.iter().all(|p| p.is_empty()) {
            return Pattern::Any;
        }
        let suffix = parts.pop().unwrap_or_default().into();
        let prefix = if parts.is_empty() {
            Box::from("")
        } else {
            parts.remove(0).into()
        };
        let middles = parts
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(Box::from)
            .collect();
        Pattern::Glob {
            prefix,
            middles,
            suffix,
        }
    }

    /// Matches an action that the caller has already ASCII-lowercased (patterns are lowercased
    /// at compile time), so every comparison is a plain byte compare.
    pub(crate) fn matches_lower(&self, action: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(exact) => **exact == *action,
            Pattern::Glob {
                prefix,
                middles,
                suffix,
            } => {
                if action.len() < prefix.len() + suffix.len()
                    || !action.starts_with(&**prefix)
                    || !action.ends_with(&**suffix)
                {
                    return false;
                }
                let Some(mut rest) = action.get(prefix.len()..action.len() - suffix.len()) else {
                    return false;
                };
                for part in middles {
                    match rest.find(&**part) {
                        Some(at) => rest = &rest[at + part.len()..],
                        None => return false,
                    }
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        let cases = [
            ("*", "", true),
            ("*", "a/b/c", true),
            ("**", "x", true),
            ("", "", true),
            ("", "a", false),
            ("a*", "a", true),
            ("*a", "ba", true),
            ("*a", "ab", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("*/read", "Strata.Compute/virtualMachines/read", true),
            ("*/read", "Strata.Compute/virtualMachines/readx", false),
            (
                "Strata.Authorization/*/write",
                "strata.authorization/roleassignments/WRITE",
                true,
            ),
            (
                "Strata.Authorization/*/write",
                "Strata.Authorization/write",
                false,
            ),
            ("Strata.Compute/*", "Strata.Compute/disks/read", true),
            ("Strata.Compute/*", "Strata.ComputeX/disks/read", false),
        ];
        for (pattern, action, want) in cases {
            assert_eq!(
                action_matches(pattern, action),
                want,
                "{pattern} vs {action}"
            );
            assert_eq!(
                Pattern::compile(pattern).matches_lower(&action.to_ascii_lowercase()),
                want,
                "compiled {pattern} vs {action}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn compiled_agrees_with_action_matches(pattern in "[abAB/*é]{0,8}", action in "[abAB/é]{0,10}") {
            proptest::prop_assert_eq!(
                Pattern::compile(&pattern).matches_lower(&action.to_ascii_lowercase()),
                action_matches(&pattern, &action)
            );
        }
    }
}
