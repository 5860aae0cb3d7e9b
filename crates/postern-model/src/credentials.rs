//! The credential issuer's kinds: `CredentialRole` (short-lived roles made from SQL
//! templates) and `StaticRole` (an existing upstream user whose password Postern rotates),
//! plus the template and duration syntax they share. Parsing and validation only; the
//! issuer renders and runs them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::name::validate_name;
use crate::resource::ValidationError;

/// Placeholders statement templates may use.
pub const STATEMENT_PLACEHOLDERS: &[&str] = &["name", "password", "expiration"];
/// Placeholders a username template may use (`random` takes a length).
pub const USERNAME_PLACEHOLDERS: &[&str] =
    &["identity", "role", "namespace", "random", "unix_time"];
/// Vault's default shape: who, which role, randomness, when.
pub const DEFAULT_USERNAME_TEMPLATE: &str = "v-{{identity}}-{{role}}-{{random 8}}-{{unix_time}}";

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `{{name}}` or `{{random 8}}`: the placeholder and its optional argument.
    Placeholder {
        name: String,
        argument: Option<u32>,
    },
}

/// A parsed `{{placeholder}}` template. A placeholder written inside quotes (`"{{name}}"`,
/// `'{{password}}'`, as Vault's examples do) loses those quotes: the issuer quotes every
/// value itself, so the template's own quotes would only nest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(text: &str, allowed: &[&str]) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                format!("unclosed {{{{ at byte {}", text.len() - rest.len() + start)
            })?;
            let inner = after[..end].trim();
            let mut words = inner.split_whitespace();
            let name = words.next().unwrap_or_default().to_owned();
            if !allowed.contains(&name.as_str()) {
                return Err(format!(
                    "unknown placeholder {{{{{inner}}}}} (known: {})",
                    allowed
                        .iter()
                        .map(|p| format!("{{{{{p}}}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let argument = match (name.as_str(), words.next()) {
                ("random", Some(n)) => Some(
                    n.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=63).contains(n))
                        .ok_or_else(|| format!("{{{{random {n}}}}}: the length must be 1 to 63"))?,
                ),
                ("random", None) => return Err("{{random}} needs a length: {{random 8}}".into()),
                (_, Some(extra)) => {
                    return Err(format!("{{{{{name}}}}} takes no argument, got {extra:?}"))
                }
                (_, None) => None,
            };
            if words.next().is_some() {
                return Err(format!("{{{{{inner}}}}}: too many words"));
            }
            pieces.push(Piece::Text(rest[..start].to_owned()));
            pieces.push(Piece::Placeholder { name, argument });
            rest = &after[end + 2..];
        }
        pieces.push(Piece::Text(rest.to_owned()));
        // Drop quotes written around a placeholder: `"{{name}}"` → `{{name}}`.
        for index in (1..pieces.len().saturating_sub(1)).step_by(2) {
            let (before, after) = pieces.split_at_mut(index + 1);
            let (Some(Piece::Text(left)), Some(Piece::Text(right))) =
                (before.get_mut(index - 1), after.first_mut())
            else {
                continue;
            };
            for quote in ['"', '\''] {
                if left.ends_with(quote) && right.starts_with(quote) {
                    left.pop();
                    right.remove(0);
                    break;
                }
            }
        }
        pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
        Ok(Template { pieces })
    }

    /// Whether the template uses `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Placeholder { name: n, .. } if n == name))
    }
}

/// Parses `90s`, `15m`, `1h`, `1h30m`, `7d` or plain seconds (`3600`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => {
                return Err(format!(
                    "invalid duration {text:?} (use e.g. 90s, 15m, 1h, 7d)"
                ))
            }
        };
        let value: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?} (a number must precede {c:?})"))?;
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {text:?} is too long"))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!(
            "invalid duration {text:?} (a unit must follow {number})"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// `1h30m`-style text for a duration, the inverse of [`parse_duration`].
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Which characters generated passwords draw from; each class enabled contributes at least
/// one character.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordPolicy {
    #[serde(default = "PasswordPolicy::default_length")]
    pub length: u32,
    #[serde(default = "yes")]
    pub lowercase: bool,
    #[serde(default = "yes")]
    pub uppercase: bool,
    #[serde(default = "yes")]
    pub digits: bool,
    /// Off by default: symbols in a password break too many connection strings.
    #[serde(default)]
    pub symbols: bool,
}

fn yes() -> bool {
    true
}

impl PasswordPolicy {
    fn default_length() -> u32 {
        32
    }

    pub fn is_default(&self) -> bool {
        *self == PasswordPolicy::default()
    }

    /// The character classes in use.
    pub fn classes(&self) -> Vec<&'static str> {
        [
            (self.lowercase, "abcdefghijklmnopqrstuvwxyz"),
            (self.uppercase, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
            (self.digits, "0123456789"),
            (self.symbols, "-_.~!#%^*+="),
        ]
        .into_iter()
        .filter_map(|(on, chars)| on.then_some(chars))
        .collect()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        let classes = self.classes().len();
        if classes == 0 {
            return Err(ValidationError::new(
                "spec.passwordPolicy",
                "enables no character class",
            ));
        }
        if !(16..=128).contains(&self.length) {
            return Err(ValidationError::new(
                "spec.passwordPolicy.length",
                "must be 16 to 128",
            ));
        }
        Ok(())
    }
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            length: PasswordPolicy::default_length(),
            lowercase: true,
            uppercase: true,
            digits: true,
            symbols: false,
        }
    }
}

/// A recipe for short-lived upstream roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialRoleSpec {
    pub target: String,
    /// Where the statements run.
    pub database: String,
    /// Run in one transaction to create the role; `{{name}}` and `{{password}}` at least.
    pub creation_statements: Vec<String>,
    /// Empty: end the role's sessions, hand its objects to the admin, drop it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocation_statements: Vec<String>,
    /// Empty: `ALTER ROLE {{name}} VALID UNTIL {{expiration}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renew_statements: Vec<String>,
    /// Undo a creation that may have half happened; empty: the revocation statements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback_statements: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_template: Option<String>,
    #[serde(default, skip_serializing_if = "PasswordPolicy::is_default")]
    pub password_policy: PasswordPolicy,
    #[serde(default = "CredentialRoleSpec::default_default_ttl")]
    pub default_ttl: String,
    #[serde(default = "CredentialRoleSpec::default_max_ttl")]
    pub max_ttl: String,
}

/// The statement lists of a CredentialRole, for messages that name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementList {
    Creation,
    Revocation,
    Renew,
    Rollback,
}

impl fmt::Display for StatementList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatementList::Creation => "creationStatements",
            StatementList::Revocation => "revocationStatements",
            StatementList::Renew => "renewStatements",
            StatementList::Rollback => "rollbackStatements",
        })
    }
}

impl CredentialRoleSpec {
    fn default_default_ttl() -> String {
        "1h".into()
    }
    fn default_max_ttl() -> String {
        "24h".into()
    }

    pub fn default_ttl(&self) -> Duration {
        parse_duration(&self.default_ttl).unwrap_or(Duration::from_secs(3600))
    }

    pub fn max_ttl(&self) -> Duration {
        parse_duration(&self.max_ttl).unwrap_or(Duration::from_secs(86_400))
    }

    pub fn username_template(&self) -> Template {
        let text = self
            .username_template
            .as_deref()
            .unwrap_or(DEFAULT_USERNAME_TEMPLATE);
        Template::parse(text, USERNAME_PLACEHOLDERS).unwrap_or(Template { pieces: vec![] })
    }

    pub fn statements(&self, list: StatementList) -> &[String] {
        match list {
            StatementList::Creation => &self.creation_statements,
            StatementList::Revocation => &self.revocation_statements,
            StatementList::Renew => &self.renew_statements,
            StatementList::Rollback => &self.rollback_statements,
        }
    }

    /// Parsed templates of one list (validated at apply, so parsing cannot fail here).
    pub fn templates(&self, list: StatementList) -> Result<Vec<Template>, String> {
        self.statements(list)
            .iter()
            .enumerate()
            .map(|(index, text)| {
                Template::parse(text, STATEMENT_PLACEHOLDERS)
                    .map_err(|e| format!("spec.{list}[{index}]: {e}"))
            })
            .collect()
    }

    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.target).map_err(|e| ValidationError::new("spec.target", e))?;
        if self.database.trim().is_empty() {
            return Err(ValidationError::new("spec.database", "must not be empty"));
        }
        if self.creation_statements.is_empty() {
            return Err(ValidationError::new(
                "spec.creationStatements",
                "must hold at least one statement (e.g. CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}})",
            ));
        }
        for list in [
            StatementList::Creation,
            StatementList::Revocation,
            StatementList::Renew,
            StatementList::Rollback,
        ] {
            for (index, text) in self.statements(list).iter().enumerate() {
                let path = format!("spec.{list}[{index}]");
                if text.trim().is_empty() {
                    return Err(ValidationError::new(path, "must not be empty"));
                }
                Template::parse(text, STATEMENT_PLACEHOLDERS)
                    .map_err(|e| ValidationError::new(path, e))?;
            }
        }
        let creation = self
            .templates(StatementList::Creation)
            .map_err(|e| ValidationError::new("spec.creationStatements", e))?;
        for needed in ["name", "password"] {
            if !creation.iter().any(|t| t.uses(needed)) {
                return Err(ValidationError::new(
                    "spec.creationStatements",
                    format!("no statement uses {{{{{needed}}}}}"),
                ));
            }
        }
        if let Some(template) = &self.username_template {
            let parsed = Template::parse(template, USERNAME_PLACEHOLDERS)
                .map_err(|e| ValidationError::new("spec.usernameTemplate", e))?;
            if !parsed.uses("random") && !parsed.uses("unix_time") {
                return Err(ValidationError::new(
                    "spec.usernameTemplate",
                    "must contain {{random N}} or {{unix_time}}, or two leases would share a name",
                ));
            }
        }
        self.password_policy.validate()?;
        let default_ttl = parse_duration(&self.default_ttl)
            .map_err(|e| ValidationError::new("spec.defaultTtl", e))?;
        let max_ttl =
            parse_duration(&self.max_ttl).map_err(|e| ValidationError::new("spec.maxTtl", e))?;
        if default_ttl.is_zero() {
            return Err(ValidationError::new("spec.defaultTtl", "must be positive"));
        }
        if max_ttl < default_ttl {
            return Err(ValidationError::new(
                "spec.maxTtl",
                format!(
                    "{} is shorter than defaultTtl {}",
                    self.max_ttl, self.default_ttl
                ),
            ));
        }
        if max_ttl.as_secs() > 365 * 86_400 {
            return Err(ValidationError::new(
                "spec.maxTtl",
                "must be at most a year",
            ));
        }
        Ok(())
    }
}

/// An existing upstream user whose password Postern owns and rotates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticRoleSpec {
    pub target: String,
    /// The upstream role (it must exist; Postern never creates or drops it).
    pub username: String,
    #[serde(default = "StaticRoleSpec::default_rotation_period")]
    pub rotation_period: String,
    #[serde(default, skip_serializing_if = "PasswordPolicy::is_default")]
    pub password_policy: PasswordPolicy,
}

impl StaticRoleSpec {
    fn default_rotation_period() -> String {
        "24h".into()
    }

    pub fn rotation_period(&self) -> Duration {
        parse_duration(&self.rotation_period).unwrap_or(Duration::from_secs(86_400))
    }

    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.target).map_err(|e| ValidationError::new("spec.target", e))?;
        if self.username.trim().is_empty() || self.username.len() > 63 {
            return Err(ValidationError::new(
                "spec.username",
                "must be a role name of 1 to 63 bytes",
            ));
        }
        let period = parse_duration(&self.rotation_period)
            .map_err(|e| ValidationError::new("spec.rotationPeriod", e))?;
        if period.as_secs() < 60 || period.as_secs() > 365 * 86_400 {
            return Err(ValidationError::new(
                "spec.rotationPeriod",
                "must be between 1m and a year",
            ));
        }
        self.password_policy.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholder(name: &str) -> Piece {
        Piece::Placeholder {
            name: name.into(),
            argument: None,
        }
    }

    #[test]
    fn templates_drop_quotes_around_placeholders() {
        let t = Template::parse(
            r#"CREATE ROLE "{{name}}" PASSWORD '{{password}}' VALID UNTIL {{ expiration }};"#,
            STATEMENT_PLACEHOLDERS,
        )
        .unwrap();
        assert_eq!(
            t.pieces,
            vec![
                Piece::Text("CREATE ROLE ".into()),
                placeholder("name"),
                Piece::Text(" PASSWORD ".into()),
                placeholder("password"),
                Piece::Text(" VALID UNTIL ".into()),
                placeholder("expiration"),
                Piece::Text(";".into()),
            ]
        );
    }

    #[test]
    fn templates_reject_unknown_and_malformed_placeholders() {
        let err = Template::parse("GRANT x TO {{user}}", STATEMENT_PLACEHOLDERS).unwrap_err();
        assert!(err.contains("unknown placeholder {{user}}"), "{err}");
        assert!(Template::parse("x {{name", STATEMENT_PLACEHOLDERS)
            .unwrap_err()
            .contains("unclosed"));
        assert!(Template::parse("{{random}}", USERNAME_PLACEHOLDERS).is_err());
        assert!(Template::parse("{{random 99}}", USERNAME_PLACEHOLDERS).is_err());
        let t = Template::parse("u-{{random 6}}", USERNAME_PLACEHOLDERS).unwrap();
        assert_eq!(
            t.pieces[1],
            Piece::Placeholder {
                name: "random".into(),
                argument: Some(6)
            }
        );
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("10").is_ok());
        assert!(parse_duration("5m3").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
    }

    fn role(creation: &[&str]) -> CredentialRoleSpec {
        CredentialRoleSpec {
            target: "pg".into(),
            database: "app".into(),
            creation_statements: creation.iter().map(|s| s.to_string()).collect(),
            revocation_statements: vec![],
            renew_statements: vec![],
            rollback_statements: vec![],
            username_template: None,
            password_policy: PasswordPolicy::default(),
            default_ttl: "1h".into(),
            max_ttl: "24h".into(),
        }
    }

    #[test]
    fn credential_roles_are_validated_with_paths() {
        role(&["CREATE ROLE {{name}} LOGIN PASSWORD {{password}}"])
            .validate()
            .unwrap();
        let err = role(&["CREATE ROLE {{name}} LOGIN", "GRANT x TO {{nme}}"])
            .validate()
            .unwrap_err();
        assert_eq!(err.path, "spec.creationStatements[1]");
        let err = role(&["CREATE ROLE {{name}} LOGIN"])
            .validate()
            .unwrap_err();
        assert!(err.message.contains("{{password}}"), "{err}");
        let mut r = role(&["CREATE ROLE {{name}} PASSWORD {{password}}"]);
        r.max_ttl = "30m".into();
        assert_eq!(r.validate().unwrap_err().path, "spec.maxTtl");
        r.max_ttl = "2h".into();
        r.username_template = Some("fixed-{{identity}}".into());
        assert_eq!(r.validate().unwrap_err().path, "spec.usernameTemplate");
    }
}
