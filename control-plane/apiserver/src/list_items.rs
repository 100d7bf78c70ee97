//! The items of a LIST as they are read: kept as objects only when the response needs them all
//! at once (a Table, YAML); otherwise each is written into the JSON body as it is decoded, so a
//! list of many objects never holds them all decoded (10 000 pods decoded are ~20 times their
//! JSON, and the allocator keeps that memory after the response has gone).

use http::Response;
use serde_json::{Value, json};

use crate::body::{self, ApiBody};
use crate::kinds::Kind;
use crate::table;

/// The items gathered so far.
pub enum Items {
    /// Decoded, for a Table or YAML.
    Objects(Vec<Value>),
    /// Already serialized: the comma-separated items of the JSON array.
    Json {
        /// The bytes between `[` and `]`.
        body: Vec<u8>,
        /// How many items.
        count: usize,
    },
}

impl Items {
    /// No items yet; `json` when the response is plain JSON.
    pub fn new(json: bool) -> Items {
        if json {
            Items::Json {
                body: Vec::new(),
                count: 0,
            }
        } else {
            Items::Objects(Vec::new())
        }
    }

    /// Adds one object.
    pub fn push(&mut self, object: Value) {
        match self {
            Items::Objects(objects) => objects.push(object),
            Items::Json { body, count } => {
                if *count > 0 {
                    body.push(b',');
                }
                // Writing a Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *body, &object);
                *count += 1;
            }
        }
    }

    /// How many items.
    pub fn len(&self) -> usize {
        match self {
            Items::Objects(objects) => objects.len(),
            Items::Json { count, .. } => *count,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The list response: a Table, YAML or JSON as the items were gathered for.
    pub fn respond(
        self,
        kind: &Kind,
        metadata: Value,
        table: bool,
        yaml: bool,
    ) -> Response<ApiBody> {
        match self {
            Items::Objects(items) if table => {
                body::json_response(200, &table::of_objects(kind, &items, Some(metadata)))
            }
            Items::Objects(items) => {
                let list = json!({
                    "kind": kind.list_kind(),
                    "apiVersion": kind.api_version(),
                    "metadata": metadata,
                    "items": items,
                });
                body::object_response(200, &list, yaml)
            }
            Items::Json { body: items, .. } => {
                let head = json!({
                    "kind": kind.list_kind(),
                    "apiVersion": kind.api_version(),
                    "metadata": metadata,
                })
                .to_string();
                let mut out = Vec::with_capacity(head.len() + items.len() + 12);
                // `{...}` without its closing brace, then the items.
                out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
                out.extend_from_slice(b",\"items\":[");
                out.extend_from_slice(&items);
                out.extend_from_slice(b"]}");
                body::bytes_response(200, "application/json", out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::kinds::KindTable;

    #[tokio::test]
    async fn streamed_json_is_the_list_the_objects_make() {
        let table = KindTable::default();
        let Some(kind) = table.find("", "v1", "configmaps") else {
            panic!("no configmaps")
        };
        let objects = [
            json!({"metadata": {"name": "a"}}),
            json!({"metadata": {"name": "b"}}),
        ];
        for count in [0, 1, 2] {
            let mut items = Items::new(true);
            for object in &objects[..count] {
                items.push(object.clone());
            }
            assert_eq!(items.len(), count);
            let response = items.respond(kind, json!({"resourceVersion": "7"}), false, false);
            let body = match response.into_body().collect().await {
                Ok(body) => body,
                Err(never) => match never {},
            };
            let list: Value = serde_json::from_slice(&body.to_bytes()).unwrap_or(Value::Null);
            assert_eq!(
                list,
                json!({"kind": "ConfigMapList", "apiVersion": "v1",
                       "metadata": {"resourceVersion": "7"}, "items": objects[..count]})
            );
        }
    }
}
