//! The apply planner: desired resources from files against what the store holds, giving
//! the changes to make. Pure, so `--dry-run` and the real apply see the same plan, and
//! referential checks run before anything is written (apply is all-or-nothing). Every
//! write path (apply, prune, the admin API, `--server`) checks through here.

use std::collections::{BTreeMap, BTreeSet};

use crate::document::LoadedResource;
use crate::name::DEFAULT_NAMESPACE;
use crate::policy::PolicyEngine;
use crate::resource::{Kind, Resource, Spec, StaticUpstream, UpstreamSpec};

/// One planned change, keyed by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create(Resource),
    Update {
        before: Box<Resource>,
        after: Resource,
    },
    Unchanged(Resource),
    Delete(Resource),
}

impl Change {
    pub fn resource(&self) -> &Resource {
        match self {
            Change::Create(r) | Change::Unchanged(r) | Change::Delete(r) => r,
            Change::Update { after, .. } => after,
        }
    }
}

/// Why a set of files cannot be applied; each entry is one line.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{}", .0.join("\n"))]
pub struct PlanError(pub Vec<String>);

type Key = (Kind, String, String);

fn key(r: &Resource) -> Key {
    (r.kind(), r.namespace().to_owned(), r.name().to_owned())
}

/// Checks the rules (CEL) of every Service in `desired` with `engine`; each problem is
/// one line naming the file and the rule's path.
pub fn check_rules(desired: &[LoadedResource], engine: &dyn PolicyEngine) -> Result<(), PlanError> {
    let problems: Vec<String> = desired
        .iter()
        .filter_map(|loaded| {
            let Spec::Service(service) = &loaded.resource.spec else {
                return None;
            };
            let routes = match &service.upstream {
                UpstreamSpec::DynamicConfig(dynamic) => dynamic.rules.as_slice(),
                _ => &[],
            };
            let error = engine.validate(&service.authorization, routes).err()?;
            Some(format!(
                "{}: ({}) {error}",
                loaded.origin,
                loaded.resource.describe()
            ))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PlanError(problems))
    }
}

/// Plans applying `desired` over `current` (each with whether `apply` created it). With
/// `prune`, resources that apply created and the files no longer declare are deleted;
/// resources made by other means, and the built-in `default` namespace, are never pruned.
pub fn plan_apply(
    desired: &[LoadedResource],
    current: &[(Resource, bool)],
    prune: bool,
) -> Result<Vec<Change>, PlanError> {
    let mut problems = Vec::new();
    let mut wanted: BTreeMap<Key, &LoadedResource> = BTreeMap::new();
    for loaded in desired {
        if let Some(first) = wanted.insert(key(&loaded.resource), loaded) {
            problems.push(format!(
                "{}: {} is declared twice (first in {})",
                loaded.origin,
                loaded.resource.describe(),
                first.origin
            ));
        }
    }
    let existing: BTreeMap<Key, &(Resource, bool)> =
        current.iter().map(|entry| (key(&entry.0), entry)).collect();

    let mut changes = Vec::new();
    for (k, loaded) in &wanted {
        let after = loaded.resource.clone();
        changes.push(match existing.get(k) {
            None => Change::Create(after),
            Some((before, _)) if *before == after => Change::Unchanged(after),
            Some((before, _)) => Change::Update {
                before: Box::new(before.clone()),
                after,
            },
        });
    }
    if prune {
        for (k, (resource, applied)) in &existing {
            let builtin =
                resource.kind() == Kind::Namespace && resource.name() == DEFAULT_NAMESPACE;
            if *applied && !builtin && !wanted.contains_key(k) {
                changes.push(Change::Delete(resource.clone()));
            }
        }
    }

    // The world after the change, to check references in it.
    let deleted: BTreeSet<Key> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Delete(r) => Some(key(r)),
            _ => None,
        })
        .collect();
    let mut after: BTreeMap<Key, (&Resource, Option<&str>)> = existing
        .iter()
        .filter(|(k, _)| !deleted.contains(*k))
        .map(|(k, (r, _))| (k.clone(), (r, None)))
        .collect();
    for (k, loaded) in &wanted {
        after.insert(k.clone(), (&loaded.resource, Some(loaded.origin.as_str())));
    }
    let exists = |kind: Kind, namespace: &str, name: &str| {
        (kind == Kind::Namespace && name == DEFAULT_NAMESPACE)
            || after.contains_key(&(kind, namespace.to_owned(), name.to_owned()))
    };
    for (resource, origin) in after.values() {
        let place = match origin {
            Some(origin) => format!("{origin}: ({})", resource.describe()),
            None => format!("{} (already applied)", resource.describe()),
        };
        let ns = resource.namespace();
        if resource.kind().is_namespaced() && !exists(Kind::Namespace, "", ns) {
            problems.push(format!(
                "{place} metadata.namespace: Namespace {ns} does not exist{}",
                if deleted.contains(&(Kind::Namespace, String::new(), ns.to_owned())) {
                    " after --prune"
                } else {
                    ""
                }
            ));
        }
        let mut references: Vec<(String, Kind, &str)> = Vec::new();
        match &resource.spec {
            Spec::Service(service) => {
                references.push(("spec.target".into(), Kind::Target, &service.target));
                match &service.upstream {
                    UpstreamSpec::Static(StaticUpstream {
                        static_role: Some(role),
                        ..
                    }) => {
                        references.push(("spec.upstream.staticRole".into(), Kind::StaticRole, role))
                    }
                    UpstreamSpec::Dynamic(dynamic) => references.push((
                        "spec.upstream.credentialRole".into(),
                        Kind::CredentialRole,
                        &dynamic.credential_role,
                    )),
                    UpstreamSpec::DynamicConfig(routes) => {
                        for (index, config) in routes.configs.iter().enumerate() {
                            if let Some(target) = &config.target {
                                references.push((
                                    format!("spec.upstream.configs[{index}].target"),
                                    Kind::Target,
                                    target,
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
            Spec::CredentialRole(role) => {
                references.push(("spec.target".into(), Kind::Target, &role.target))
            }
            Spec::StaticRole(role) => {
                references.push(("spec.target".into(), Kind::Target, &role.target))
            }
            _ => {}
        }
        for (path, kind, name) in references {
            if !exists(kind, ns, name) {
                problems.push(format!("{place} {path}: {kind} {ns}/{name} does not exist"));
            }
        }
    }

    if problems.is_empty() {
        changes.sort_by_key(|c| {
            let r = c.resource();
            // Deletes last, in reverse dependency order.
            let delete = matches!(c, Change::Delete(_));
            let order = Kind::ALL.iter().position(|k| *k == r.kind()).unwrap_or(0);
            (
                delete,
                if delete { usize::MAX - order } else { order },
                key(r),
            )
        });
        Ok(changes)
    } else {
        Err(PlanError(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{parse_documents, Format};

    fn load(text: &str) -> Vec<LoadedResource> {
        parse_documents("f.yaml", text, Format::Yaml).unwrap()
    }

    const BASE: &str = "kind: Namespace\nmetadata: {name: a}\n---\nkind: Target\nmetadata: {name: pg, namespace: a}\nspec: {address: 'h:5432'}\n---\nkind: Service\nmetadata: {name: s, namespace: a}\nspec: {target: pg, database: d, upstream: {mode: static, user: u, passwordSecret: p}}\n";

    fn applied(changes: &[Change]) -> Vec<(Resource, bool)> {
        changes
            .iter()
            .filter(|c| !matches!(c, Change::Delete(_)))
            .map(|c| (c.resource().clone(), true))
            .collect()
    }

    #[test]
    fn create_then_unchanged_then_update() {
        let first = plan_apply(&load(BASE), &[], false).unwrap();
        assert!(first.iter().all(|c| matches!(c, Change::Create(_))));
        assert_eq!(first[0].resource().kind(), Kind::Namespace);
        let current = applied(&first);
        let again = plan_apply(&load(BASE), &current, false).unwrap();
        assert!(again.iter().all(|c| matches!(c, Change::Unchanged(_))));
        let changed = BASE.replace("database: d", "database: e");
        let third = plan_apply(&load(&changed), &current, false).unwrap();
        assert_eq!(
            third
                .iter()
                .filter(|c| matches!(c, Change::Update { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn prune_deletes_only_what_apply_made() {
        let mut current = applied(&plan_apply(&load(BASE), &[], false).unwrap());
        let by_hand = load("kind: Identity\nmetadata: {name: bob, namespace: a}\n");
        current.push((by_hand[0].resource.clone(), false));
        let only_ns = load("kind: Namespace\nmetadata: {name: a}\n");
        // Even after a file adopts it, `default` is never pruned.
        let default_ns = load("kind: Namespace\nmetadata: {name: default}\n");
        current.push((default_ns[0].resource.clone(), true));
        let plan = plan_apply(&only_ns, &current, true).unwrap();
        let deleted: Vec<String> = plan
            .iter()
            .filter_map(|c| match c {
                Change::Delete(r) => Some(r.describe()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, ["Service a/s", "Target a/pg"]);
    }

    #[test]
    fn missing_references_and_duplicates_are_reported_with_origin() {
        let err = plan_apply(
            &load(&BASE.replace("target: pg", "target: nope")),
            &[],
            false,
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(
            err.0[0].starts_with("f.yaml, document 3: (Service a/s) spec.target"),
            "{err}"
        );
        let twice = format!("{BASE}---\nkind: Namespace\nmetadata: {{name: a}}\n");
        let err = plan_apply(&load(&twice), &[], false).unwrap_err();
        assert!(err.0[0].contains("declared twice"), "{err}");
        let err =
            plan_apply(&load(&BASE.replace("{name: a}", "{name: b}")), &[], false).unwrap_err();
        assert!(
            err.to_string().contains("Namespace a does not exist"),
            "{err}"
        );
    }
}
