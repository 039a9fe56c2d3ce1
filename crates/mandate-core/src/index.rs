//! Policy slicing: evaluate only the policies whose scope can match.
//!
//! Cedar evaluates every policy in the set it is given. A policy whose scope
//! names a specific principal or resource (`resource == Mandate::Tool::"x"`,
//! `principal in ...`) cannot apply to a call on another entity, and since the
//! scope is checked before the conditions, leaving it out changes neither the
//! decision nor the errors. So at load time policies are bucketed by the
//! entity their scope names; a call gathers the policies with no entity in
//! their scope plus the buckets of its own principal, resource and their
//! ancestors. Slices are cached per (principal, resource), so a decision costs
//! what the applicable policies cost, however large the pack grows.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    ActionConstraint, EntityUid, Policy, PolicySet, PrincipalConstraint, ResourceConstraint,
};

/// Cached slices kept at most; the cache starts over when full.
const MAX_CACHED_SLICES: usize = 8192;

/// The entities a call is about, with their ancestors.
pub(crate) struct Scope<'a> {
    pub principal: &'a EntityUid,
    pub principal_ancestors: &'a [EntityUid],
    pub action: &'a EntityUid,
    pub resource: &'a EntityUid,
    pub resource_ancestors: &'a [EntityUid],
}

/// One policy set, bucketed by the entities its scopes name.
#[derive(Debug)]
pub(crate) struct PolicyIndex {
    len: usize,
    /// Policies whose scope names no principal or resource entity.
    general: Vec<Policy>,
    general_set: Arc<PolicySet>,
    /// Policies whose resource scope names an entity (`==`, `in`), by that entity.
    by_resource: HashMap<EntityUid, Vec<Policy>>,
    /// Policies whose principal scope names an entity and resource scope does not.
    by_principal: HashMap<EntityUid, Vec<Policy>>,
    slices: RwLock<HashMap<(EntityUid, EntityUid), Arc<PolicySet>>>,
}

fn principal_entity(p: &Policy) -> Option<EntityUid> {
    match p.principal_constraint() {
        PrincipalConstraint::Eq(u)
        | PrincipalConstraint::In(u)
        | PrincipalConstraint::IsIn(_, u) => Some(u),
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
    }
}

fn resource_entity(p: &Policy) -> Option<EntityUid> {
    match p.resource_constraint() {
        ResourceConstraint::Eq(u) | ResourceConstraint::In(u) | ResourceConstraint::IsIn(_, u) => {
            Some(u)
        }
        ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
    }
}

fn set_of<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> PolicySet {
    let mut set = PolicySet::new();
    for p in policies {
        // INVARIANT: ids were made unique when the pack loaded.
        let _ = set.add(p.clone());
    }
    set
}

impl PolicyIndex {
    pub(crate) fn new(policies: Vec<Policy>) -> Self {
        let len = policies.len();
        let mut general = Vec::new();
        let mut by_resource: HashMap<EntityUid, Vec<Policy>> = HashMap::new();
        let mut by_principal: HashMap<EntityUid, Vec<Policy>> = HashMap::new();
        for p in policies {
            if let Some(r) = resource_entity(&p) {
                by_resource.entry(r).or_default().push(p);
            } else if let Some(u) = principal_entity(&p) {
                by_principal.entry(u).or_default().push(p);
            } else {
                general.push(p);
            }
        }
        let general_set = Arc::new(set_of(&general));
        Self {
            len,
            general,
            general_set,
            by_resource,
            by_principal,
            slices: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The policies that can apply to a call on these entities.
    pub(crate) fn slice(&self, scope: &Scope<'_>) -> Arc<PolicySet> {
        if self.by_resource.is_empty() && self.by_principal.is_empty() {
            return Arc::clone(&self.general_set);
        }
        let key = (scope.principal.clone(), scope.resource.clone());
        if let Some(set) = self.slices.read().ok().and_then(|s| s.get(&key).cloned()) {
            return set;
        }
        let set = Arc::new(self.build_slice(scope));
        if let Ok(mut slices) = self.slices.write() {
            if slices.len() >= MAX_CACHED_SLICES {
                slices.clear();
            }
            slices.insert(key, Arc::clone(&set));
        }
        set
    }

    fn build_slice(&self, scope: &Scope<'_>) -> PolicySet {
        let principal_matches = |p: &Policy| match p.principal_constraint() {
            PrincipalConstraint::Eq(u) => &u == scope.principal,
            PrincipalConstraint::In(u) | PrincipalConstraint::IsIn(_, u) => {
                &u == scope.principal || scope.principal_ancestors.contains(&u)
            }
            PrincipalConstraint::Any | PrincipalConstraint::Is(_) => true,
        };
        // Action groups are not resolved here, so `in [...]` stays a candidate.
        let action_matches = |p: &Policy| match p.action_constraint() {
            ActionConstraint::Eq(a) => &a == scope.action,
            ActionConstraint::In(_) | ActionConstraint::Any => true,
        };
        let resources = std::iter::once(scope.resource).chain(scope.resource_ancestors);
        let principals = std::iter::once(scope.principal).chain(scope.principal_ancestors);
        let specific = resources
            .filter_map(|r| self.by_resource.get(r))
            .flatten()
            .filter(|p| principal_matches(p))
            .chain(
                principals
                    .filter_map(|u| self.by_principal.get(u))
                    .flatten(),
            )
            .filter(|p| action_matches(p));
        set_of(self.general.iter().chain(specific))
    }
}
