//! JSON-RPC 2.0 messages as the gateway sees them: raw JSON, classified
//! just enough to relay them faithfully and to intercept `tools/call`.
//!
//! The gateway never re-serializes a message it does not change: it keeps
//! the [`Value`] it parsed and writes it back as it came (field order
//! included, `serde_json` preserves it), so methods, fields and extensions
//! that Mandate does not know pass untouched.

use crate::trace::TraceContext;
use rmcp::model::{CallToolRequestParams, ErrorCode};
use serde_json::{Map, Value, json};

/// The `tools/call` method, the one the gateway intercepts.
pub const TOOLS_CALL: &str = "tools/call";
/// The `tools/list` method, whose results the gateway reads (annotations)
/// and may filter (hidden tools).
pub const TOOLS_LIST: &str = "tools/list";
/// The cancellation notification.
pub const CANCELLED: &str = "notifications/cancelled";

/// A request id, as a map key: its JSON text, so `1` and `"1"` differ as
/// JSON-RPC says they do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdKey(String);

impl IdKey {
    /// The key of a request id.
    pub fn of(id: &Value) -> Self {
        Self(id.to_string())
    }

    /// The request id again.
    pub fn id(&self) -> Option<Value> {
        serde_json::from_str(&self.0).ok()
    }
}

/// One message, classified.
#[derive(Debug)]
pub enum Message {
    /// A request: it has a method and an id.
    Request {
        /// The request id (a string or a number).
        id: Value,
        /// The method.
        method: String,
    },
    /// A notification: a method without an id.
    Notification {
        /// The method.
        method: String,
    },
    /// A response (result or error) to the request with this id.
    Response {
        /// The id of the request answered.
        id: Value,
    },
    /// Valid JSON that is not a JSON-RPC 2.0 message; `id` is the request
    /// id when one could be read, to answer the error to.
    Invalid {
        /// The id, if the message carried a usable one.
        id: Option<Value>,
        /// What is wrong, for the error message.
        reason: &'static str,
    },
}

/// Parses one message from a client, refusing duplicate object keys
/// anywhere in it. Peers' JSON parsers disagree on which of two duplicates
/// wins (serde keeps the last, others the first), and messages that are
/// not intercepted are forwarded as they came: with a duplicate `method`, a
/// message seen here as `ping` could run upstream as `tools/call`.
pub fn parse_client(bytes: &[u8]) -> Result<Value, String> {
    use mandate_core::json::{ParseError, from_slice};
    from_slice(bytes).map_err(|e| match e {
        ParseError::DuplicateKey(e) => format!("{e}: send each key once"),
        e => e.to_string(),
    })
}

/// Classifies a parsed message.
pub fn classify(message: &Value) -> Message {
    let Some(object) = message.as_object() else {
        return Message::Invalid {
            id: None,
            reason: "a JSON-RPC message must be an object (batches are not supported)",
        };
    };
    let id = object.get("id").filter(|id| valid_id(id)).cloned();
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Message::Invalid {
            id,
            reason: "`jsonrpc` must be \"2.0\"",
        };
    }
    if object.get("id").is_some() && id.is_none() {
        return Message::Invalid {
            id: None,
            reason: "`id` must be a string or an integer",
        };
    }
    match (object.get("method"), id) {
        (Some(Value::String(method)), Some(id)) => Message::Request {
            id,
            method: method.clone(),
        },
        // A request without an id is a notification to JSON-RPC, and many
        // servers run its method all the same (they only send no answer):
        // a `tools/call` sent that way would run undecided. MCP's
        // notifications are all `notifications/*`; nothing else passes.
        (Some(Value::String(method)), None) if !method.starts_with("notifications/") => {
            Message::Invalid {
                id: None,
                reason: "a message without an `id` must be a `notifications/*` notification; a request needs an id",
            }
        }
        (Some(Value::String(method)), None) => Message::Notification {
            method: method.clone(),
        },
        (Some(_), id) => Message::Invalid {
            id,
            reason: "`method` must be a string",
        },
        (None, Some(id)) if object.contains_key("result") != object.contains_key("error") => {
            Message::Response { id }
        }
        (None, id) => Message::Invalid {
            id,
            reason: "a message needs a `method`, or an `id` with exactly one of `result` and `error`",
        },
    }
}

/// JSON-RPC ids are strings or numbers; Mandate accepts integers only among
/// numbers (MCP forbids `null` ids and nobody uses fractions).
fn valid_id(id: &Value) -> bool {
    matches!(id, Value::String(_)) || id.as_i64().is_some() || id.as_u64().is_some()
}

/// A JSON-RPC error response. `id` is `null` when the request's id could not
/// be read.
pub fn error(id: Option<&Value>, code: ErrorCode, message: impl Into<String>) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": code.0, "message": message.into()},
    })
}

/// A JSON-RPC success response.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An MCP tool error: a `tools/call` result with `isError: true` and the
/// text as its one content item. This is how a denied call is answered: the
/// model sees the reason, as MCP asks for tool-level failures.
pub fn tool_error(text: impl Into<String>) -> Value {
    json!({
        "content": [{"type": "text", "text": text.into()}],
        "isError": true,
    })
}

/// The checked parameters of a `tools/call` request.
#[derive(Debug, Clone)]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// The call's arguments (an object; empty when the call sent none).
    pub arguments: Map<String, Value>,
    /// The trace context the client sent in `params._meta`, if any.
    pub trace: TraceContext,
}

/// Reads the parameters of a `tools/call` request with rmcp's type for
/// them; anything else is an invalid-params error (the call is never
/// forwarded unchecked).
pub fn tool_call(message: &Value) -> Result<ToolCall, String> {
    let params = message
        .get("params")
        .ok_or_else(|| "`tools/call` needs `params`".to_owned())?;
    let params: CallToolRequestParams = serde_json::from_value(params.clone())
        .map_err(|e| format!("invalid `tools/call` params: {e}"))?;
    if params.name.is_empty() {
        return Err("`params.name` must not be empty".to_owned());
    }
    Ok(ToolCall {
        name: params.name.into_owned(),
        arguments: params.arguments.unwrap_or_default(),
        trace: TraceContext::of_call(message),
    })
}

/// The `requestId` of a cancellation notification.
pub fn cancelled_request(message: &Value) -> Option<&Value> {
    message.get("params")?.get("requestId")
}

/// Whether a `tools/call` response reports a failure: a JSON-RPC error, or
/// a result with `isError: true`.
pub fn call_failed(response: &Value) -> bool {
    response.get("error").is_some()
        || response
            .get("result")
            .and_then(|r| r.get("isError"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse_client(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).is_ok());
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"a":[{"x":1},{"y":2,"y":3}]}"#,
        ] {
            let e = parse_client(text.as_bytes()).unwrap_err();
            assert!(e.contains("duplicate key"), "{text}: {e}");
        }
        // The same key in sibling objects is fine.
        assert!(parse_client(br#"{"a":{"k":1},"b":{"k":2},"c":[{"k":3},{"k":4}]}"#).is_ok());
        assert!(parse_client(b"not json").is_err());
    }

    #[test]
    fn classifies_every_kind() {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call"});
        assert!(
            matches!(classify(&request), Message::Request { method, .. } if method == "tools/call")
        );
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert!(matches!(classify(&note), Message::Notification { .. }));
        // A call without an id is no notification: it would run undecided.
        let sneaky = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "rm"}});
        assert!(matches!(
            classify(&sneaky),
            Message::Invalid { id: None, .. }
        ));
        let response = json!({"jsonrpc": "2.0", "id": "a", "result": {}});
        assert!(matches!(classify(&response), Message::Response { .. }));
        let both = json!({"jsonrpc": "2.0", "id": "a", "result": {}, "error": {}});
        assert!(matches!(classify(&both), Message::Invalid { .. }));
        let old = json!({"jsonrpc": "1.0", "id": 3, "method": "x"});
        assert!(matches!(
            classify(&old),
            Message::Invalid { id: Some(_), .. }
        ));
        let bad_id = json!({"jsonrpc": "2.0", "id": {"x": 1}, "method": "x"});
        assert!(matches!(
            classify(&bad_id),
            Message::Invalid { id: None, .. }
        ));
        assert!(matches!(classify(&json!([1, 2])), Message::Invalid { .. }));
        let bad_method = json!({"jsonrpc": "2.0", "id": 4, "method": 7});
        assert!(matches!(
            classify(&bad_method),
            Message::Invalid { id: Some(_), .. }
        ));
    }

    #[test]
    fn ids_keep_their_type() {
        assert_ne!(IdKey::of(&json!(1)), IdKey::of(&json!("1")));
    }

    #[test]
    fn tool_call_params_are_checked() {
        let ok = json!({"params": {"name": "read_file", "arguments": {"path": "/x"}}});
        let call = tool_call(&ok).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(call.name, "read_file");
        assert_eq!(call.arguments.get("path"), Some(&json!("/x")));
        for bad in [
            json!({}),
            json!({"params": {"name": 3}}),
            json!({"params": {"name": "x", "arguments": [1]}}),
            json!({"params": {"name": ""}}),
            json!({"params": "tools"}),
        ] {
            assert!(tool_call(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_are_seen() {
        assert!(call_failed(&json!({"error": {"code": 1}})));
        assert!(call_failed(&json!({"result": {"isError": true}})));
        assert!(!call_failed(&json!({"result": {"content": []}})));
    }
}
