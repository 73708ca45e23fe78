//! ARM-style resource paths, parsed once into typed values.
//!
//! Grammar (segments separated by `/`, comparisons of keywords case-insensitive):
//! ```text
//! id        := "" | "/subscriptions/{sub}" ["/resourceGroups/{rg}"] { "/providers/{ns}/{type}/{name}" { "/{type}/{name}" } }
//! collection:= "/subscriptions" | "/subscriptions/{sub}/resourceGroups"
//!            | "/subscriptions/{sub}/resourceGroups/{rg}/resources"
//!            | id "/providers/{ns}/{type}" | id-ending-in-a-provider-resource "/{type}"
//! ```
//! Every name is validated here, so nothing downstream sees `..`, `%`, empty or oversized
//! segments. IDs keep the caller's spelling for display and compare through a lowercase `key`.

use std::fmt;

/// Longest accepted path, in bytes.
pub const MAX_PATH_LEN: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("the path has an empty segment at position {0}; remove the doubled or trailing '/'")]
    EmptySegment(usize),
    #[error(
        "invalid name '{0}': use 1-80 characters from letters, digits, '.', '_', '-', '(' and ')', starting with a letter, digit or '_' and not ending with '.'"
    )]
    BadName(String),
    #[error(
        "invalid resource provider namespace '{0}': expected dotted words such as 'Strata.Compute'"
    )]
    BadNamespace(String),
    #[error("invalid resource type '{0}': expected letters and digits, such as 'virtualMachines'")]
    BadType(String),
    #[error("unexpected segment '{found}' at position {pos}; expected '{expected}'")]
    Unexpected {
        pos: usize,
        found: String,
        expected: &'static str,
    },
    #[error("the path ends after the provider namespace '{0}'; add a resource type")]
    MissingType(String),
}

/// One step of a resource id.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Subscription(String),
    ResourceGroup(String),
    Provider {
        namespace: String,
        rtype: String,
        name: String,
        /// True when this level was introduced by `/providers/{ns}` (a top-level or extension
        /// resource); false for a nested child such as `virtualNetworks/v1/subnets/s1`.
        starts_provider: bool,
    },
}

/// A fully qualified resource (or scope) identifier. The empty path is the tenant root `/`.
#[derive(Clone, Debug)]
pub struct ResourceId {
    levels: Vec<Level>,
    text: String,
    key: String,
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for ResourceId {}

impl std::hash::Hash for ResourceId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A resource type such as `Strata.Compute/virtualMachines`, compared case-insensitively.
#[derive(Clone, Debug)]
pub struct ResourceTypeName {
    text: String,
    key: String,
}

impl ResourceTypeName {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let key = text.to_ascii_lowercase();
        Self { text, key }
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
    /// Lowercase form used for storage and comparison.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The RBAC action for a verb on this type, e.g. `Strata.Compute/virtualMachines/read`.
    pub fn action(&self, verb: &str) -> String {
        format!("{}/{}", self.text, verb)
    }
}

impl PartialEq for ResourceTypeName {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for ResourceTypeName {}

impl fmt::Display for ResourceTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where a resource lives, coarsely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    Subscription,
    ResourceGroup,
    Resource,
}

pub const SUBSCRIPTIONS_TYPE: &str = "Strata.Resources/subscriptions";
pub const RESOURCE_GROUPS_TYPE: &str = "Strata.Resources/subscriptions/resourceGroups";

impl ResourceId {
    /// The tenant root, `/`.
    pub fn tenant() -> Self {
        Self::from_levels(Vec::new())
    }

    fn from_levels(levels: Vec<Level>) -> Self {
        let mut text = String::new();
        for level in &levels {
            match level {
                Level::Subscription(s) => {
                    text.push_str("/subscriptions/");
                    text.push_str(s);
                }
                Level::ResourceGroup(rg) => {
                    text.push_str("/resourceGroups/");
                    text.push_str(rg);
                }
                Level::Provider {
                    namespace,
                    rtype,
                    name,
                    starts_provider,
                } => {
                    if *starts_provider {
                        text.push_str("/providers/");
                        text.push_str(namespace);
                    }
                    text.push('/');
                    text.push_str(rtype);
                    text.push('/');
                    text.push_str(name);
                }
            }
        }
        if text.is_empty() {
            text.push('/');
        }
        let key = text.to_ascii_lowercase();
        Self { levels, text, key }
    }

    /// Parses a path that must name one resource (or scope), not a collection.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        match ArmPath::parse(path)? {
            ArmPath::Item(id) => Ok(id),
            ArmPath::Collection { rtype, .. } => Err(PathError::Unexpected {
                pos: 0,
                found: rtype.to_string(),
                expected: "a resource name after the resource type",
            }),
            ArmPath::GroupResources(_) => Err(PathError::Unexpected {
                pos: 0,
                found: "resources".to_string(),
                expected: "a resource id",
            }),
        }
    }

    /// A subscription id.
    pub fn subscription(sub: &str) -> Result<Self, PathError> {
        validate_name(sub)?;
        Ok(Self::from_levels(vec![Level::Subscription(
            sub.to_string(),
        )]))
    }

    /// A resource group id.
    pub fn resource_group(sub: &str, rg: &str) -> Result<Self, PathError> {
        validate_name(sub)?;
        validate_name(rg)?;
        Ok(Self::from_levels(vec![
            Level::Subscription(sub.to_string()),
            Level::ResourceGroup(rg.to_string()),
        ]))
    }

    /// A top-level (or extension) resource of `namespace/rtype` named `name` under this scope.
    pub fn child_provider(
        &self,
        namespace: &str,
        rtype: &str,
        name: &str,
    ) -> Result<Self, PathError> {
        validate_namespace(namespace)?;
        validate_type(rtype)?;
        validate_name(name)?;
        let mut levels = self.levels.clone();
        levels.push(Level::Provider {
            namespace: namespace.to_string(),
            rtype: rtype.to_string(),
            name: name.to_string(),
            starts_provider: true,
        });
        Ok(Self::from_levels(levels))
    }

    /// A nested child (`…/virtualNetworks/v1/subnets/s1`) of this provider resource.
    pub fn nested(&self, rtype: &str, name: &str) -> Result<Self, PathError> {
        validate_type(rtype)?;
        validate_name(name)?;
        let namespace = match self.levels.last() {
            Some(Level::Provider { namespace, .. }) => namespace.clone(),
            _ => {
                return Err(PathError::Unexpected {
                    pos: self.levels.len(),
                    found: rtype.to_string(),
                    expected: "providers",
                });
            }
        };
        let mut levels = self.levels.clone();
        levels.push(Level::Provider {
            namespace,
            rtype: rtype.to_string(),
            name: name.to_string(),
            starts_provider: false,
        });
        Ok(Self::from_levels(levels))
    }

    /// The id as the caller spelled it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Lowercase form: the storage key and the RBAC scope.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn is_tenant(&self) -> bool {
        self.levels.is_empty()
    }

    pub fn scope(&self) -> Scope {
        match self.levels.last() {
            None => Scope::Tenant,
            Some(Level::Subscription(_)) => Scope::Subscription,
            Some(Level::ResourceGroup(_)) => Scope::ResourceGroup,
            Some(Level::Provider { .. }) => Scope::Resource,
        }
    }

    /// The enclosing id (`None` for the tenant root).
    pub fn parent(&self) -> Option<Self> {
        if self.levels.is_empty() {
            return None;
        }
        let mut levels = self.levels.clone();
        levels.pop();
        Some(Self::from_levels(levels))
    }

    /// Every enclosing id from the tenant root down to the parent, outermost first.
    pub fn ancestors(&self) -> Vec<Self> {
        (0..self.levels.len())
            .map(|n| Self::from_levels(self.levels[..n].to_vec()))
            .collect()
    }

    /// The last name segment (`None` for the tenant root).
    pub fn name(&self) -> Option<&str> {
        match self.levels.last()? {
            Level::Subscription(s) => Some(s),
            Level::ResourceGroup(rg) => Some(rg),
            Level::Provider { name, .. } => Some(name),
        }
    }

    pub fn subscription_id(&self) -> Option<&str> {
        self.levels.iter().find_map(|l| match l {
            Level::Subscription(s) => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn resource_group_name(&self) -> Option<&str> {
        self.levels.iter().find_map(|l| match l {
            Level::ResourceGroup(rg) => Some(rg.as_str()),
            _ => None,
        })
    }

    /// The resource type, e.g. `Strata.Network/virtualNetworks/subnets`. `None` for the root.
    pub fn resource_type(&self) -> Option<ResourceTypeName> {
        match self.levels.last()? {
            Level::Subscription(_) => Some(ResourceTypeName::new(SUBSCRIPTIONS_TYPE)),
            Level::ResourceGroup(_) => Some(ResourceTypeName::new(RESOURCE_GROUPS_TYPE)),
            Level::Provider { .. } => Some(ResourceTypeName::new(provider_type(&self.levels))),
        }
    }
}

/// The full type of the last (provider) level: its namespace plus every nested type name since
/// the level that opened the provider segment.
fn provider_type(levels: &[Level]) -> String {
    let mut types: Vec<&str> = Vec::new();
    let mut namespace = "";
    for level in levels.iter().rev() {
        if let Level::Provider {
            namespace: ns,
            rtype,
            starts_provider,
            ..
        } = level
        {
            types.push(rtype);
            if *starts_provider {
                namespace = ns;
                break;
            }
        } else {
            break;
        }
    }
    types.reverse();
    format!("{namespace}/{}", types.join("/"))
}

/// A parsed request path: one resource, or a collection to list / create in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArmPath {
    Item(ResourceId),
    /// Resources of `rtype` directly under `parent`. `last` is the final path segment (a type
    /// name, or for a POST, possibly an action name such as `enableMfa`).
    Collection {
        parent: ResourceId,
        rtype: ResourceTypeName,
        last: String,
    },
    /// `/subscriptions/{s}/resourceGroups/{rg}/resources`: everything in a resource group.
    GroupResources(ResourceId),
}

fn eq_kw(seg: &str, kw: &str) -> bool {
    seg.eq_ignore_ascii_case(kw)
}

impl ArmPath {
    pub fn parse(path: &str) -> Result<Self, PathError> {
        if path.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
        if rest.is_empty() {
            return Ok(ArmPath::Item(ResourceId::tenant()));
        }
        let segs: Vec<&str> = rest.split('/').collect();
        if let Some(pos) = segs.iter().position(|s| s.is_empty()) {
            return Err(PathError::EmptySegment(pos));
        }
        let n = segs.len();
        let mut i = 0;
        let mut levels: Vec<Level> = Vec::new();

        if eq_kw(segs[0], "subscriptions") {
            if n == 1 {
                return Ok(ArmPath::Collection {
                    parent: ResourceId::tenant(),
                    rtype: ResourceTypeName::new(SUBSCRIPTIONS_TYPE),
                    last: segs[0].to_string(),
                });
            }
            validate_name(segs[1])?;
            levels.push(Level::Subscription(segs[1].to_string()));
            i = 2;
            if i < n && eq_kw(segs[i], "resourceGroups") {
                if i + 1 == n {
                    return Ok(ArmPath::Collection {
                        parent: ResourceId::from_levels(levels),
                        rtype: ResourceTypeName::new(RESOURCE_GROUPS_TYPE),
                        last: segs[i].to_string(),
                    });
                }
                validate_name(segs[i + 1])?;
                levels.push(Level::ResourceGroup(segs[i + 1].to_string()));
                i += 2;
                if i + 1 == n && eq_kw(segs[i], "resources") {
                    return Ok(ArmPath::GroupResources(ResourceId::from_levels(levels)));
                }
            }
        }

        while i < n {
            if !eq_kw(segs[i], "providers") {
                return Err(PathError::Unexpected {
                    pos: i,
                    found: segs[i].to_string(),
                    expected: "providers",
                });
            }
            let Some(ns) = segs.get(i + 1) else {
                return Err(PathError::Unexpected {
                    pos: i + 1,
                    found: String::new(),
                    expected: "a resource provider namespace",
                });
            };
            validate_namespace(ns)?;
            i += 2;
            if i == n {
                return Err(PathError::MissingType(ns.to_string()));
            }
            let mut first = true;
            while i < n {
                let rtype = segs[i];
                if eq_kw(rtype, "providers") {
                    if first {
                        return Err(PathError::MissingType(ns.to_string()));
                    }
                    break;
                }
                validate_type(rtype)?;
                if i + 1 == n {
                    // A collection: the type without a name.
                    let parent = ResourceId::from_levels(levels.clone());
                    let mut probe = levels;
                    probe.push(Level::Provider {
                        namespace: ns.to_string(),
                        rtype: rtype.to_string(),
                        name: String::new(),
                        starts_provider: first,
                    });
                    return Ok(ArmPath::Collection {
                        parent,
                        rtype: ResourceTypeName::new(provider_type(&probe)),
                        last: rtype.to_string(),
                    });
                }
                let name = segs[i + 1];
                validate_name(name)?;
                levels.push(Level::Provider {
                    namespace: ns.to_string(),
                    rtype: rtype.to_string(),
                    name: name.to_string(),
                    starts_provider: first,
                });
                first = false;
                i += 2;
            }
        }
        Ok(ArmPath::Item(ResourceId::from_levels(levels)))
    }
}

/// Validates a resource, group or subscription name.
pub fn validate_name(name: &str) -> Result<(), PathError> {
    let ok = !name.is_empty()
        && name.len() <= 80
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'(' | b')'))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(PathError::BadName(truncate_for_message(name)))
    }
}

fn validate_namespace(ns: &str) -> Result<(), PathError> {
    let ok = ns.len() <= 64
        && ns.contains('.')
        && ns.split('.').all(|w| {
            w.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && w.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(PathError::BadNamespace(truncate_for_message(ns)))
    }
}

fn validate_type(t: &str) -> Result<(), PathError> {
    let ok = t.len() <= 64
        && t.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && t.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(PathError::BadType(truncate_for_message(t)))
    }
}

/// Echoes at most 100 printable characters of bad input back in messages.
fn truncate_for_message(s: &str) -> String {
    s.chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(p: &str) -> ResourceId {
        match ArmPath::parse(p).unwrap() {
            ArmPath::Item(id) => id,
            other => panic!("expected item for {p}, got {other:?}"),
        }
    }

    #[test]
    fn parses_ids() {
        let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
            ("/", "/", None, None),
            (
                "/subscriptions/s1",
                "/subscriptions/s1",
                Some(SUBSCRIPTIONS_TYPE),
                Some("/"),
            ),
            (
                "/subscriptions/s1/resourcegroups/rg",
                "/subscriptions/s1/resourceGroups/rg",
                Some(RESOURCE_GROUPS_TYPE),
                Some("/subscriptions/s1"),
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/Strata.Compute/virtualMachines/vm1",
                "/subscriptions/s1/resourceGroups/rg/providers/Strata.Compute/virtualMachines/vm1",
                Some("Strata.Compute/virtualMachines"),
                Some("/subscriptions/s1/resourceGroups/rg"),
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/Strata.Network/virtualNetworks/v/subnets/a",
                "/subscriptions/s1/resourceGroups/rg/providers/Strata.Network/virtualNetworks/v/subnets/a",
                Some("Strata.Network/virtualNetworks/subnets"),
                Some(
                    "/subscriptions/s1/resourceGroups/rg/providers/Strata.Network/virtualNetworks/v",
                ),
            ),
            (
                "/subscriptions/s1/providers/Strata.Compute/virtualMachines/vm/providers/Strata.Authorization/roleAssignments/ra",
                "/subscriptions/s1/providers/Strata.Compute/virtualMachines/vm/providers/Strata.Authorization/roleAssignments/ra",
                Some("Strata.Authorization/roleAssignments"),
                Some("/subscriptions/s1/providers/Strata.Compute/virtualMachines/vm"),
            ),
            (
                "/providers/Strata.Identity/users/alice",
                "/providers/Strata.Identity/users/alice",
                Some("Strata.Identity/users"),
                Some("/"),
            ),
        ];
        for (input, text, rtype, parent) in cases {
            let id = item(input);
            assert_eq!(id.as_str(), *text, "{input}");
            assert_eq!(
                id.resource_type().map(|t| t.to_string()).as_deref(),
                *rtype,
                "{input}"
            );
            assert_eq!(
                id.parent().map(|p| p.to_string()).as_deref(),
                *parent,
                "{input}"
            );
        }
    }

    #[test]
    fn parses_collections() {
        let cases: &[(&str, &str, &str)] = &[
            ("/subscriptions", "/", SUBSCRIPTIONS_TYPE),
            (
                "/subscriptions/s/resourceGroups",
                "/subscriptions/s",
                RESOURCE_GROUPS_TYPE,
            ),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Strata.Compute/virtualMachines",
                "/subscriptions/s/resourceGroups/rg",
                "Strata.Compute/virtualMachines",
            ),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Strata.Network/virtualNetworks/v/subnets",
                "/subscriptions/s/resourceGroups/rg/providers/Strata.Network/virtualNetworks/v",
                "Strata.Network/virtualNetworks/subnets",
            ),
            (
                "/providers/Strata.Identity/users",
                "/",
                "Strata.Identity/users",
            ),
        ];
        for (input, parent, rtype) in cases {
            match ArmPath::parse(input).unwrap() {
                ArmPath::Collection {
                    parent: p,
                    rtype: t,
                    ..
                } => {
                    assert_eq!(p.as_str(), *parent, "{input}");
                    assert_eq!(t.as_str(), *rtype, "{input}");
                }
                other => panic!("{input}: {other:?}"),
            }
        }
        assert!(matches!(
            ArmPath::parse("/subscriptions/s/resourceGroups/rg/resources").unwrap(),
            ArmPath::GroupResources(_)
        ));
    }

    #[test]
    fn rejects_bad_paths() {
        let cases: &[&str] = &[
            "subscriptions/s",
            "/subscriptions//x",
            "/subscriptions/s/",
            "/subscriptions/..",
            "/subscriptions/a%2fb",
            "/subscriptions/s/resourceGroups/rg/foo/bar",
            "/subscriptions/s/resourceGroups/rg/providers/Strata.Compute",
            "/subscriptions/s/resourceGroups/rg/providers/nodots/x/y",
            "/subscriptions/s/resourceGroups/rg/providers/Strata.Compute/virtual-machines/x",
            "/providers/Strata.Identity/users/alice./x",
        ];
        for p in cases {
            assert!(ArmPath::parse(p).is_err(), "{p} should be rejected");
        }
        let long = format!("/subscriptions/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(ArmPath::parse(&long), Err(PathError::TooLong));
    }

    #[test]
    fn keys_are_case_insensitive() {
        let a = item("/subscriptions/S1/resourceGroups/RG");
        let b = item("/SUBSCRIPTIONS/s1/RESOURCEGROUPS/rg");
        assert_eq!(a, b);
        assert_eq!(a.key(), "/subscriptions/s1/resourcegroups/rg");
        assert_eq!(a.ancestors().len(), 2);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_roundtrips(s in "(/[A-Za-z0-9._()%-]{0,12}){0,10}") {
            if let Ok(ArmPath::Item(id)) = ArmPath::parse(&s) {
                let again = item(id.as_str());
                proptest::prop_assert_eq!(again.key(), id.key());
            }
        }
    }
}
