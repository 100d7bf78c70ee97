//! Sets of field paths, as structured-merge-diff keeps them: a tree whose nodes are fields of
//! maps (`f:`), items of associative lists by key (`k:`), items of sets by value (`v:`) or
//! items by index (`i:`), each node a member of the set itself or only the parent of members.
//! It serialises as `fieldsV1`, where a member with children carries a `.` entry.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Element {
    /// A field of a map or struct: `f:name`.
    Field(String),
    /// An item of an associative list by its keys: `k:{"name":"c"}` (canonical JSON, keys
    /// sorted).
    Key(String),
    /// An item of a set by its value: `v:"x"` (canonical JSON).
    Value(String),
    /// An item by position: `i:0`.
    Index(usize),
}

impl Element {
    /// The item of an associative list whose key fields have these values.
    pub fn key(fields: &Map<String, Value>) -> Element {
        // serde_json's Map orders keys when its keys are inserted in order; sort to be sure.
        let sorted: BTreeMap<&String, &Value> = fields.iter().collect();
        Element::Key(Value::from(canonical_map(&sorted)).to_string())
    }

    /// The item of a set with this value.
    pub fn value(value: &Value) -> Element {
        Element::Value(canonical(value).to_string())
    }

    fn encode(&self) -> String {
        match self {
            Element::Field(name) => format!("f:{name}"),
            Element::Key(key) => format!("k:{key}"),
            Element::Value(value) => format!("v:{value}"),
            Element::Index(index) => format!("i:{index}"),
        }
    }

    fn decode(text: &str) -> Option<Element> {
        let (prefix, rest) = text.split_at_checked(2)?;
        match prefix {
            "f:" => Some(Element::Field(rest.to_string())),
            "k:" => {
                let parsed: Value = serde_json::from_str(rest).ok()?;
                Some(Element::key(parsed.as_object()?))
            }
            "v:" => {
                let parsed: Value = serde_json::from_str(rest).ok()?;
                Some(Element::value(&parsed))
            }
            "i:" => rest.parse().ok().map(Element::Index),
            _ => None,
        }
    }

    /// The element as field paths print in conflicts: `.name`, `[name="c"]`, `[="x"]`, `[0]`.
    fn display(&self) -> String {
        match self {
            Element::Field(name) => format!(".{name}"),
            Element::Key(key) => {
                let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(key)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                format!("[{}]", parts.join(","))
            }
            Element::Value(value) => format!("[={value}]"),
            Element::Index(index) => format!("[{index}]"),
        }
    }
}

fn canonical_map(map: &BTreeMap<&String, &Value>) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| ((*k).clone(), canonical(v)))
        .collect()
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(canonical_map(&map.iter().collect())),
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// A path from the object's root.
pub type Path = Vec<Element>;

/// How a path prints in conflict messages, e.g. `.spec.containers[name="c"].image`.
pub fn display(path: &[Element]) -> String {
    path.iter().map(Element::display).collect()
}

/// A set of field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    children: BTreeMap<Element, Node>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    member: bool,
    children: FieldSet,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// Whether no path is in the set.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Adds `element` under this node as a member.
    pub fn insert(&mut self, element: Element) {
        self.children.entry(element).or_default().member = true;
    }

    /// The set below `element`, made if missing (not a member unless inserted).
    pub fn child(&mut self, element: Element) -> &mut FieldSet {
        &mut self.children.entry(element).or_default().children
    }

    /// The set below `element`, if there is one.
    pub fn get(&self, element: &Element) -> Option<&FieldSet> {
        self.children.get(element).map(|n| &n.children)
    }

    /// Whether `element` directly under this node is a member.
    pub fn has_member(&self, element: &Element) -> bool {
        self.children.get(element).is_some_and(|n| n.member)
    }

    /// The elements directly under this node, with whether each is a member.
    pub fn entries(&self) -> impl Iterator<Item = (&Element, bool, &FieldSet)> {
        self.children
            .iter()
            .map(|(e, n)| (e, n.member, &n.children))
    }

    /// Drops nodes that are neither members nor lead to members.
    pub(crate) fn prune(&mut self) {
        self.children.retain(|_, node| {
            node.children.prune();
            node.member || !node.children.is_empty()
        });
    }

    /// The paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        for (element, node) in &other.children {
            let mine = out.children.entry(element.clone()).or_default();
            mine.member |= node.member;
            mine.children = mine.children.union(&node.children);
        }
        out
    }

    /// The paths of this set not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (element, node) in &self.children {
            let (member, children) = match other.children.get(element) {
                Some(theirs) => (
                    node.member && !theirs.member,
                    node.children.difference(&theirs.children),
                ),
                None => (node.member, node.children.clone()),
            };
            out.children
                .insert(element.clone(), Node { member, children });
        }
        out.prune();
        out
    }

    /// The paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (element, node) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                out.children.insert(
                    element.clone(),
                    Node {
                        member: node.member && theirs.member,
                        children: node.children.intersection(&theirs.children),
                    },
                );
            }
        }
        out.prune();
        out
    }

    /// Every member path, parents before children, in the set's order.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for (element, node) in &self.children {
            prefix.push(element.clone());
            if node.member {
                out.push(prefix.clone());
            }
            node.children.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The set without the paths below the top-level fields `names`.
    pub fn without_fields(&self, names: &[&str]) -> FieldSet {
        let mut out = self.clone();
        out.children
            .retain(|e, _| !matches!(e, Element::Field(f) if names.contains(&f.as_str())));
        out
    }

    /// The set as `fieldsV1`.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        for (element, node) in &self.children {
            let mut inner = match node.children.to_fields_v1() {
                Value::Object(inner) => inner,
                _ => Map::new(),
            };
            if node.member && !inner.is_empty() {
                inner.insert(".".into(), Value::Object(Map::new()));
            }
            map.insert(element.encode(), Value::Object(inner));
        }
        Value::Object(map)
    }

    /// The set a `fieldsV1` value holds; `None` when it is not one.
    pub fn from_fields_v1(value: &Value) -> Option<FieldSet> {
        let map = value.as_object()?;
        let mut set = FieldSet::new();
        for (key, inner) in map {
            if key == "." {
                continue;
            }
            let element = Element::decode(key)?;
            let inner_map = inner.as_object()?;
            let member = inner_map.is_empty() || inner_map.contains_key(".");
            let children = FieldSet::from_fields_v1(inner)?;
            set.children.insert(element, Node { member, children });
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str) -> Element {
        Element::Field(name.into())
    }

    #[test]
    fn fields_v1_round_trips_with_dot_for_members_with_children() {
        let encoded = json!({
            "f:data": {".": {}, "f:a": {}},
            "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}},
            "f:metadata": {"f:finalizers": {"v:\"x\"": {}}},
        });
        let Some(set) = FieldSet::from_fields_v1(&encoded) else {
            panic!("not decoded")
        };
        assert_eq!(set.to_fields_v1(), encoded);
        assert!(set.has_member(&field("data")));
        assert!(!set.has_member(&field("spec")));
        let shown: Vec<String> = set.paths().iter().map(|p| display(p)).collect();
        assert!(shown.contains(&".spec.containers[name=\"c\"].image".to_string()));
        assert!(shown.contains(&".metadata.finalizers[=\"x\"]".to_string()));
        assert_eq!(FieldSet::from_fields_v1(&json!({"x:bad": {}})), None);
    }

    #[test]
    fn set_operations_work_on_members() {
        let mut a = FieldSet::new();
        a.child(field("spec")).insert(field("replicas"));
        a.child(field("spec")).insert(field("paused"));
        let mut b = FieldSet::new();
        b.child(field("spec")).insert(field("replicas"));
        let only_a = a.difference(&b);
        assert_eq!(only_a.paths(), vec![vec![field("spec"), field("paused")]]);
        assert_eq!(a.intersection(&b), b);
        assert_eq!(only_a.union(&b), a);
        assert!(b.difference(&a).is_empty());
    }
}
