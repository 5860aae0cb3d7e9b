//! Resource names and the `name.namespace` form clients use in `user=` and `dbname=`.

use std::fmt;

/// Namespace of an unqualified name when nothing else says which.
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid name {name:?}: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

/// Names are DNS labels (lowercase letters, digits, `-`; at most 63), so the last `.` in
/// `orders.team-a` always separates name from namespace.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let fail = |reason| {
        Err(NameError {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("must not be empty");
    }
    if name.len() > 63 {
        return fail("must be at most 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return fail("may contain only lowercase letters, digits and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return fail("must start and end with a letter or digit");
    }
    Ok(())
}

/// A namespaced name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    pub namespace: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        QualifiedName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Splits `name.namespace`; without a dot the namespace is `default_namespace`.
    /// Neither part is validated: an invalid name simply matches no resource.
    pub fn parse(text: &str, default_namespace: &str) -> QualifiedName {
        match text.rsplit_once('.') {
            Some((name, namespace)) => QualifiedName::new(namespace, name),
            None => QualifiedName::new(default_namespace, text),
        }
    }

    /// Splits `name.namespace` where both parts must be there and be valid names; the
    /// error says what is wrong, for the caller to prefix with where it came from.
    pub fn from_dotted(text: &str) -> Result<QualifiedName, String> {
        let (name, namespace) = text
            .rsplit_once('.')
            .ok_or_else(|| format!("{text:?}: expected name.namespace"))?;
        for part in [name, namespace] {
            crate::validate_name(part).map_err(|e| format!("{text:?}: {e}"))?;
        }
        Ok(QualifiedName::new(namespace, name))
    }

    /// True when `text` names its namespace explicitly.
    pub fn is_qualified(text: &str) -> bool {
        text.contains('.')
    }

    /// `name.namespace`: how clients write it in `user` and `dbname`, and how the access
    /// log names services and targets.
    pub fn dotted(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert!(validate_name("team-a").is_ok());
        assert!(validate_name("a1").is_ok());
        for bad in ["", "Team", "a.b", "-a", "a-", "a_b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn qualified_names_split_at_the_last_dot() {
        assert_eq!(
            QualifiedName::parse("orders.team-a", "default"),
            QualifiedName::new("team-a", "orders")
        );
        assert_eq!(
            QualifiedName::parse("orders", "default"),
            QualifiedName::new("default", "orders")
        );
    }
}
