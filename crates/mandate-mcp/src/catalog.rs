//! What an upstream says about its tools: their annotations, learned from
//! the `tools/list` results that pass through the gateway (or that the
//! gateway asks for itself when a call names a tool it has not seen), and
//! the filtering of those results for `hide_denied_tools`.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use mandate_core::ValueKind;
use serde_json::{Map, Value};

use crate::pep::Pep;

/// One upstream's tools, by name: the `annotations` object each was listed
/// with (`None` when the tool was listed without one).
#[derive(Debug, Default)]
pub struct Catalog {
    inner: RwLock<Known>,
}

#[derive(Debug, Default)]
struct Known {
    tools: HashMap<String, Option<Value>>,
    /// Whether a complete listing (every page) was read since the last
    /// `notifications/tools/list_changed`.
    complete: bool,
}

/// What the catalog knows of one tool.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Listed, with these annotations (if any).
    Listed(Option<Value>),
    /// Not listed, and a complete listing was read: the upstream does not
    /// list it.
    Unlisted,
    /// Not known yet: ask the upstream.
    Unknown,
}

/// What Mandate keeps of one listed tool: its `annotations`, without any
/// `mandate/` key (those are the operator's word, never an upstream's), and
/// as `mandate/arguments` the destinations its input schema marks with a
/// JSON Schema `format`: `email` and `idn-email` name an e-mail address,
/// `uri`, `iri`, `hostname` and `idn-hostname` a URL or host (a top-level
/// property, or an array of such strings). `None` when there is neither.
fn learned(tool: &Value) -> Option<Value> {
    let mut annotations = match tool.get("annotations") {
        Some(Value::Object(map)) => map.clone(),
        Some(other) => return Some(other.clone()),
        None => Map::new(),
    };
    annotations.retain(|key, _| !key.starts_with("mandate/"));
    let destinations: Map<String, Value> = tool
        .pointer("/inputSchema/properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, schema)| {
            let format = schema
                .get("format")
                .or_else(|| schema.pointer("/items/format"))
                .and_then(Value::as_str)?;
            let kind = match format {
                "email" | "idn-email" => ValueKind::Email,
                "uri" | "iri" | "hostname" | "idn-hostname" => ValueKind::Url,
                _ => return None,
            };
            Some((name.clone(), Value::from(kind.as_str())))
        })
        .collect();
    if !destinations.is_empty() {
        annotations.insert("mandate/arguments".to_owned(), Value::Object(destinations));
    }
    (tool.get("annotations").is_some() || !annotations.is_empty())
        .then_some(Value::Object(annotations))
}

impl Catalog {
    /// Learns the tools of one `tools/list` result; `complete` when the
    /// result is a whole listing (the first page without a `nextCursor`), or
    /// the last page of one the gateway read itself.
    pub fn learn(&self, result: &Value, complete: bool) {
        let Some(tools) = result.get("tools").and_then(Value::as_array) else {
            return;
        };
        let mut known = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        for tool in tools {
            if let Some(name) = tool.get("name").and_then(Value::as_str) {
                known.tools.insert(name.to_owned(), learned(tool));
            }
        }
        if complete {
            known.complete = true;
        }
    }

    /// Forgets completeness: the upstream said its tools changed. Known
    /// annotations stay until a listing replaces them.
    pub fn invalidate(&self) {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .complete = false;
    }

    /// What is known of `tool`.
    pub fn lookup(&self, tool: &str) -> Lookup {
        let known = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        match known.tools.get(tool) {
            Some(annotations) => Lookup::Listed(annotations.clone()),
            None if known.complete => Lookup::Unlisted,
            None => Lookup::Unknown,
        }
    }
}

/// Removes from a `tools/list` result the tools the task may never call
/// (see [`Pep::may_call`]), renaming the kept ones with `rename`. Returns
/// whether anything changed.
pub fn filter_tools(
    pep: &Pep,
    server: &str,
    result: &mut Value,
    rename: impl Fn(&str) -> Option<String>,
) -> bool {
    let hide = pep.config().hide_denied_tools;
    let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = tools.len();
    if hide {
        tools.retain(|tool| {
            tool.get("name")
                .and_then(Value::as_str)
                .is_some_and(|name| pep.may_call(server, name))
        });
    }
    let mut renamed = false;
    for tool in tools.iter_mut() {
        let new = tool.get("name").and_then(Value::as_str).and_then(&rename);
        if let (Some(new), Some(object)) = (new, tool.as_object_mut()) {
            object.insert("name".to_owned(), Value::String(new));
            renamed = true;
        }
    }
    renamed || tools.len() != before
}

/// Whether a `tools/list` request asked for a later page.
pub fn is_first_page(request: &Value) -> bool {
    request
        .get("params")
        .and_then(|p| p.get("cursor"))
        .is_none_or(Value::is_null)
}

/// Most pages one `tools/list` listing is read to: a server that pages
/// without end cannot hold the gateway.
pub const MAX_PAGES: usize = 32;

/// Reads a whole `tools/list` listing, page by page, as the gateway asks
/// for it itself: `fetch(n, params)` sends the `n`-th request (params `{}`,
/// then `{"cursor": …}`) and returns its result; `page(result, last)` takes
/// each page in turn, `last` when it has no `nextCursor`. Stops at the last
/// page, at the first error (returned), or after [`MAX_PAGES`].
pub async fn list_pages<E, Fut>(
    mut fetch: impl FnMut(usize, Value) -> Fut,
    mut page: impl FnMut(Value, bool),
) -> Result<(), E>
where
    Fut: std::future::Future<Output = Result<Value, E>>,
{
    let mut params = serde_json::json!({});
    for n in 0..MAX_PAGES {
        let result = fetch(n, params).await?;
        let next = result.get("nextCursor").filter(|c| !c.is_null()).cloned();
        let last = next.is_none();
        page(result, last);
        match next {
            Some(cursor) => params = serde_json::json!({ "cursor": cursor }),
            None => break,
        }
    }
    Ok(())
}

/// Whether a `tools/list` result has more pages.
pub fn has_more(result: &Value) -> bool {
    result.get("nextCursor").is_some_and(|c| !c.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_listing_follows_cursors_to_the_last_page_and_no_further_than_max_pages() {
        // Three pages, then no cursor.
        let mut asked = Vec::new();
        let mut seen = Vec::new();
        let done: Result<(), ()> =
            list_pages(
                |n, params| {
                    asked.push(params);
                    let cursor = (n < 2).then(|| json!(format!("c{n}")));
                    async move {
                        Ok(json!({"tools": [{"name": format!("t{n}")}], "nextCursor": cursor}))
                    }
                },
                |result, last| seen.push((result["tools"][0]["name"].clone(), last)),
            )
            .await;
        assert_eq!(done, Ok(()));
        assert_eq!(
            asked,
            [json!({}), json!({"cursor": "c0"}), json!({"cursor": "c1"})]
        );
        assert_eq!(
            seen,
            [
                (json!("t0"), false),
                (json!("t1"), false),
                (json!("t2"), true)
            ]
        );

        // A server that always has more is read MAX_PAGES times.
        let mut pages = 0;
        let endless: Result<(), ()> = list_pages(
            |_, _| async { Ok(json!({"tools": [], "nextCursor": "again"})) },
            |_, _| pages += 1,
        )
        .await;
        assert_eq!((endless, pages), (Ok(()), MAX_PAGES));

        // An error stops the listing and is returned.
        let mut pages = 0;
        let failed = list_pages(
            |n, _| async move {
                if n == 1 {
                    Err("gone")
                } else {
                    Ok(json!({"tools": [], "nextCursor": "x"}))
                }
            },
            |_, _| pages += 1,
        )
        .await;
        assert_eq!((failed, pages), (Err("gone"), 1));
    }

    #[test]
    fn learns_and_forgets() {
        let catalog = Catalog::default();
        assert_eq!(catalog.lookup("a"), Lookup::Unknown);
        catalog.learn(
            &json!({"tools": [{"name": "a", "annotations": {"readOnlyHint": true}}, {"name": "b"}]}),
            true,
        );
        assert_eq!(
            catalog.lookup("a"),
            Lookup::Listed(Some(json!({"readOnlyHint": true})))
        );
        assert_eq!(catalog.lookup("b"), Lookup::Listed(None));
        assert_eq!(catalog.lookup("c"), Lookup::Unlisted);
        catalog.invalidate();
        assert_eq!(catalog.lookup("c"), Lookup::Unknown);
    }

    #[test]
    fn pages() {
        assert!(is_first_page(&json!({"params": {}})));
        assert!(!is_first_page(&json!({"params": {"cursor": "x"}})));
        assert!(has_more(&json!({"nextCursor": "x"})));
        assert!(!has_more(&json!({"tools": []})));
    }
}
