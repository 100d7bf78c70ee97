//! Which EndpointSlices to create, update and delete so that a Service's slices hold the
//! desired endpoints, as upstream's reconciler decides: slices grouped by address type and
//! port set, only changed slices written, new endpoints first fill slices already being
//! updated, then one unchanged slice with room for all of them, then new slices of at most
//! `max` endpoints; a placeholder slice when there are no endpoints; a slice about to be
//! deleted is reused for one about to be created.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};

/// The endpoints desired for one address type and port set.
#[derive(Debug, Clone)]
pub struct Group {
    /// `IPv4` or `IPv6`.
    pub address_type: String,
    /// The ports, in the Service's order.
    pub ports: Vec<EndpointPort>,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// The writes a sync makes.
#[derive(Debug, Default)]
pub struct Plan {
    /// New slices (metadata from the template: generateName, labels, owner).
    pub create: Vec<EndpointSlice>,
    /// Changed slices, with their names and resourceVersions.
    pub update: Vec<EndpointSlice>,
    /// Slices to remove.
    pub delete: Vec<EndpointSlice>,
}

/// What the plan needs to know of the owner.
pub struct Owner<'a> {
    /// The address types the owner supports.
    pub address_types: &'a [String],
    /// The labels every slice of the owner carries.
    pub labels: &'a BTreeMap<String, String>,
    /// A new, empty slice for an address type and ports.
    pub new_slice: &'a dyn Fn(&str, &[EndpointPort]) -> EndpointSlice,
    /// Whether an existing slice belongs to the owner (its ownerReference's UID): others of
    /// the same name (an old Service's) are deleted.
    pub owns: &'a dyn Fn(&EndpointSlice) -> bool,
    /// At most this many endpoints in a slice.
    pub max: usize,
}

/// The identity of an endpoint within a port set (upstream's endpoint hash): its addresses,
/// hostname and the object it stands for.
pub fn endpoint_key(endpoint: &Endpoint) -> String {
    let mut addresses = endpoint.addresses.clone();
    addresses.sort();
    let target = endpoint
        .target_ref
        .as_ref()
        .map(|t| {
            format!(
                "{}/{}",
                t.namespace.as_deref().unwrap_or(""),
                t.name.as_deref().unwrap_or("")
            )
        })
        .unwrap_or_default();
    format!(
        "{}|{}|{}",
        addresses.join(","),
        endpoint.hostname.as_deref().unwrap_or(""),
        target
    )
}

/// The identity of a port set, independent of order.
pub fn ports_key(ports: Option<&[EndpointPort]>) -> String {
    let mut keys: Vec<String> = ports
        .unwrap_or_default()
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or(""),
                p.port.unwrap_or_default(),
                p.protocol.as_deref().unwrap_or(""),
                p.app_protocol.as_deref().unwrap_or("")
            )
        })
        .collect();
    keys.sort();
    keys.join(",")
}

/// Plans the writes that turn `existing` into the desired `groups`.
pub fn plan(owner: &Owner<'_>, groups: Vec<Group>, existing: Vec<EndpointSlice>) -> Plan {
    let mut plan = Plan::default();
    let mut by_type: BTreeMap<String, Vec<EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if owner.address_types.contains(&slice.address_type) {
            by_type
                .entry(slice.address_type.clone())
                .or_default()
                .push(slice);
        } else {
            plan.delete.push(slice);
        }
    }
    for address_type in owner.address_types {
        let existing = by_type.remove(address_type).unwrap_or_default();
        let wanted = groups
            .iter()
            .filter(|g| &g.address_type == address_type)
            .cloned()
            .collect();
        let typed = plan_address_type(owner, address_type, wanted, existing);
        plan.create.extend(typed.create);
        plan.update.extend(typed.update);
        plan.delete.extend(typed.delete);
    }
    plan
}

fn plan_address_type(
    owner: &Owner<'_>,
    address_type: &str,
    groups: Vec<Group>,
    existing: Vec<EndpointSlice>,
) -> Plan {
    let mut plan = Plan::default();
    let existing_count = existing.len();
    let mut existing_by_ports: BTreeMap<String, Vec<EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if (owner.owns)(&slice) {
            existing_by_ports
                .entry(ports_key(slice.ports.as_deref()))
                .or_default()
                .push(slice);
        } else {
            plan.delete.push(slice);
        }
    }
    // Groups of the same port set merge (pods whose ports resolve alike).
    let mut desired: BTreeMap<String, (Vec<EndpointPort>, BTreeMap<String, Endpoint>)> =
        BTreeMap::new();
    for group in groups {
        let entry = desired
            .entry(ports_key(Some(&group.ports)))
            .or_insert_with(|| (group.ports.clone(), BTreeMap::new()));
        for endpoint in group.endpoints {
            entry.1.insert(endpoint_key(&endpoint), endpoint);
        }
    }
    for (key, (ports, endpoints)) in desired.iter_mut() {
        let slices = existing_by_ports.remove(key).unwrap_or_default();
        let mapped = plan_port_mapping(owner, address_type, ports, slices, endpoints);
        plan.create.extend(mapped.create);
        plan.update.extend(mapped.update);
        plan.delete.extend(mapped.delete);
    }
    for (_, slices) in existing_by_ports {
        plan.delete.extend(slices);
    }
    if existing_count == plan.delete.len() && plan.create.is_empty() {
        let placeholder = (owner.new_slice)(address_type, &[]);
        if plan.delete.len() == 1 && is_placeholder_like(&plan.delete[0], &placeholder) {
            plan.delete.clear();
        } else {
            plan.create.push(placeholder);
        }
    }
    // A slice about to go is reused for one about to come: one write instead of two.
    let mut kept = Vec::new();
    for old in std::mem::take(&mut plan.delete) {
        if (owner.owns)(&old)
            && old.address_type == address_type
            && let Some(mut new) = plan.create.pop()
        {
            new.metadata.name = old.metadata.name.clone();
            new.metadata.generate_name = old.metadata.generate_name.clone();
            new.metadata.resource_version = old.metadata.resource_version.clone();
            new.metadata.annotations = old.metadata.annotations.clone();
            plan.update.push(new);
        } else {
            kept.push(old);
        }
    }
    plan.delete = kept;
    plan
}

/// Whether an existing slice is the placeholder upstream would make: same labels, no
/// endpoints, no ports.
fn is_placeholder_like(slice: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    slice.metadata.labels.clone().unwrap_or_default()
        == placeholder.metadata.labels.clone().unwrap_or_default()
        && slice.endpoints.is_empty()
        && slice.ports.as_deref().unwrap_or_default().is_empty()
        && slice.address_type == placeholder.address_type
}

fn plan_port_mapping(
    owner: &Owner<'_>,
    address_type: &str,
    ports: &[EndpointPort],
    slices: Vec<EndpointSlice>,
    desired: &mut BTreeMap<String, Endpoint>,
) -> Plan {
    let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged = BTreeSet::new();
    let mut to_update = BTreeSet::new();
    let mut to_delete = BTreeSet::new();
    for slice in slices {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let mut kept = Vec::new();
        let mut changed = false;
        for endpoint in &slice.endpoints {
            if let Some(want) = desired.remove(&endpoint_key(endpoint)) {
                changed |= &want != endpoint;
                kept.push(want);
            }
        }
        let labels_changed = slice.metadata.labels.as_ref() != Some(owner.labels);
        if changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                to_delete.insert(name.clone());
                by_name.insert(name, slice);
            } else {
                let mut slice = slice;
                slice.endpoints = kept;
                slice.metadata.labels = Some(owner.labels.clone());
                to_update.insert(name.clone());
                by_name.insert(name, slice);
            }
        } else if labels_changed {
            let mut slice = slice;
            slice.metadata.labels = Some(owner.labels.clone());
            to_update.insert(name.clone());
            by_name.insert(name, slice);
        } else {
            unchanged.insert(name.clone());
            by_name.insert(name, slice);
        }
    }
    let pop = |desired: &mut BTreeMap<String, Endpoint>| desired.pop_first().map(|(_, e)| e);
    // Fill the slices already being written, the fullest first.
    if !desired.is_empty() {
        let mut updating: Vec<&String> = to_update.iter().collect();
        updating
            .sort_by_key(|name| std::cmp::Reverse(by_name.get(*name).map(|s| s.endpoints.len())));
        for name in updating {
            if let Some(slice) = by_name.get_mut(name) {
                while slice.endpoints.len() < owner.max {
                    let Some(endpoint) = pop(desired) else { break };
                    slice.endpoints.push(endpoint);
                }
            }
        }
    }
    let mut create = Vec::new();
    while !desired.is_empty() {
        // One unchanged slice that takes all that is left, the fullest that fits.
        let fill = if desired.len() < owner.max {
            unchanged
                .iter()
                .filter(|name| {
                    by_name
                        .get(*name)
                        .is_some_and(|s| s.endpoints.len() + desired.len() <= owner.max)
                })
                .max_by_key(|name| by_name.get(*name).map(|s| s.endpoints.len()))
                .cloned()
        } else {
            None
        };
        match fill.and_then(|name| by_name.get_mut(&name).map(|s| (name, s))) {
            Some((name, slice)) => {
                while slice.endpoints.len() < owner.max {
                    let Some(endpoint) = pop(desired) else { break };
                    slice.endpoints.push(endpoint);
                }
                unchanged.remove(&name);
                to_update.insert(name);
            }
            None => {
                let mut slice = (owner.new_slice)(address_type, ports);
                while slice.endpoints.len() < owner.max.max(1) {
                    let Some(endpoint) = pop(desired) else { break };
                    slice.endpoints.push(endpoint);
                }
                create.push(slice);
            }
        }
    }
    Plan {
        create,
        update: to_update
            .iter()
            .filter_map(|n| by_name.get(n).cloned())
            .collect(),
        delete: to_delete
            .iter()
            .filter_map(|n| by_name.get(n).cloned())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::EndpointConditions;

    fn endpoint(ip: &str, ready: bool) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(ready),
                terminating: Some(false),
            }),
            ..Endpoint::default()
        }
    }

    fn port(number: i32) -> EndpointPort {
        EndpointPort {
            name: Some("http".into()),
            port: Some(number),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }
    }

    fn run(groups: Vec<Group>, existing: Vec<EndpointSlice>, max: usize) -> Plan {
        let labels = BTreeMap::from([("kubernetes.io/service-name".to_string(), "s".to_string())]);
        let new_slice = |address_type: &str, ports: &[EndpointPort]| EndpointSlice {
            address_type: address_type.into(),
            ports: Some(ports.to_vec()),
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                generate_name: Some("s-".into()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            endpoints: Vec::new(),
        };
        let owner = Owner {
            address_types: &["IPv4".to_string()],
            labels: &labels,
            new_slice: &new_slice,
            owns: &|_| true,
            max,
        };
        plan(&owner, groups, existing)
    }

    fn named(mut slice: EndpointSlice, name: &str) -> EndpointSlice {
        slice.metadata.name = Some(name.into());
        slice
    }

    #[test]
    fn endpoints_are_split_at_max_and_unchanged_slices_are_not_written() {
        let group = Group {
            address_type: "IPv4".into(),
            ports: vec![port(80)],
            endpoints: (1..=5)
                .map(|i| endpoint(&format!("10.0.0.{i}"), true))
                .collect(),
        };
        let first = run(vec![group.clone()], vec![], 2);
        assert_eq!(first.create.len(), 3);
        assert!(first.create.iter().all(|s| s.endpoints.len() <= 2));
        let existing: Vec<EndpointSlice> = first
            .create
            .into_iter()
            .enumerate()
            .map(|(i, s)| named(s, &format!("s-{i}")))
            .collect();
        let again = run(vec![group.clone()], existing.clone(), 2);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
        // One endpoint turns unready: only its slice is written.
        let mut changed = group;
        changed.endpoints[0] = endpoint("10.0.0.1", false);
        let third = run(vec![changed], existing, 2);
        assert_eq!(third.update.len(), 1);
        assert!(third.create.is_empty() && third.delete.is_empty());
    }

    #[test]
    fn no_endpoints_leave_one_placeholder() {
        let first = run(vec![], vec![], 100);
        assert_eq!(first.create.len(), 1);
        assert!(first.create[0].endpoints.is_empty());
        let existing = vec![named(
            first.create.into_iter().next().unwrap_or_default(),
            "s-0",
        )];
        let again = run(vec![], existing, 100);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
    }
}
