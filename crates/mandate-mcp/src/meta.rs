//! The decision behind a `tools/call` answer, told to the client in the
//! result's `_meta` under [`DECISION_KEY`].
//!
//! Without it an agent learns nothing of the decision its call got: it
//! could not look up the call's receipt (`GET /v1/receipts/{decision_id}`),
//! exchange its task credential for a token to the call's resource (`POST
//! /v1/token` names the decision), or name the call to a person. The gateway
//! adds it to the result of every call it relayed after an allow, and to
//! the tool error of every call the server denied (or held for an approval
//! that did not release it). A call the gateway could not get a decision
//! for has no decision, so its tool error has no `_meta`; JSON-RPC errors
//! (`error`, not `result`) are passed on as they came.
//!
//! Whatever `_meta` the upstream server returned is kept: the key is added
//! to it. An upstream that sends the key itself is overruled, so that what
//! the client reads under it is always the gateway's.

use mandate_core::{ApprovalId, Decision, DecisionId, DecisionResponse};
use serde_json::{Map, Value};

/// The `_meta` key of the decision. MCP reserves the prefixes whose second
/// label is `modelcontextprotocol` or `mcp`; `mandate/` is a one-label
/// prefix of Mandate's own.
pub const DECISION_KEY: &str = "mandate/decision";

/// The decision behind one `tools/call` answer, as the client sees it under
/// [`DECISION_KEY`]. The field names are those of `POST /v1/decide`'s
/// answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionMeta {
    /// The decision's outcome: `allow` for a relayed call; `deny`, or
    /// `approval_required` when the approval it waited on did not release
    /// it, for a tool error.
    pub decision: Decision,
    /// The decision's id, the key of its receipt.
    pub decision_id: DecisionId,
    /// The position of the decision's receipt in the receipt log (every
    /// server that answers a decision has recorded its receipt); left out
    /// when the answer had none.
    pub receipt_index: Option<u64>,
    /// The approval the call went through: the one that released an
    /// allowed call, or the one a held call waited on; left out otherwise.
    pub approval_id: Option<ApprovalId>,
}

impl DecisionMeta {
    /// The decision the server answered.
    pub fn of(answer: &DecisionResponse) -> Self {
        Self {
            decision: answer.decision,
            decision_id: answer.decision_id.clone(),
            receipt_index: answer.receipt_index,
            approval_id: answer.approval_id.clone(),
        }
    }

    /// The value under [`DECISION_KEY`]: an object with the fields that
    /// are set.
    pub fn to_value(&self) -> Value {
        let mut fields = Map::new();
        fields.insert("decision".to_owned(), self.decision.as_str().into());
        fields.insert("decision_id".to_owned(), self.decision_id.as_str().into());
        if let Some(index) = self.receipt_index {
            fields.insert("receipt_index".to_owned(), index.into());
        }
        if let Some(approval) = &self.approval_id {
            fields.insert("approval_id".to_owned(), approval.as_str().into());
        }
        Value::Object(fields)
    }

    /// Adds the decision to the `_meta` of a `tools/call` result (a
    /// `CallToolResult` object), keeping every other key of it. Returns
    /// whether the result changed: not when it is not an object, nor when
    /// its `_meta` is neither an object nor `null` (invalid MCP, which the
    /// gateway passes on as it came rather than guess what to keep).
    pub fn add_to_result(&self, result: &mut Value) -> bool {
        let Some(result) = result.as_object_mut() else {
            return false;
        };
        let meta = result
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if meta.is_null() {
            *meta = Value::Object(Map::new());
        }
        let Some(meta) = meta.as_object_mut() else {
            return false;
        };
        meta.insert(DECISION_KEY.to_owned(), self.to_value());
        true
    }

    /// [`DecisionMeta::add_to_result`] on the `result` of a JSON-RPC
    /// response; an error response is left as it is.
    pub fn add_to_response(&self, response: &mut Value) -> bool {
        response
            .get_mut("result")
            .is_some_and(|result| self.add_to_result(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(approval: Option<&str>) -> DecisionMeta {
        DecisionMeta {
            decision: Decision::Allow,
            decision_id: DecisionId::try_from("01a2088f-8589-70aa-be37-388df963e17e".to_owned())
                .unwrap(),
            receipt_index: Some(7),
            approval_id: approval.map(|a| ApprovalId::try_from(a.to_owned()).unwrap()),
        }
    }

    #[test]
    fn the_decision_is_added_beside_the_upstreams_meta() {
        let mut response = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "content": [{"type": "text", "text": "hi"}],
            "_meta": {"com.example/trace": {"span": "a1"}, "progressToken": 3},
        }});
        assert!(meta(None).add_to_response(&mut response));
        assert_eq!(
            response["result"]["_meta"],
            json!({
                "com.example/trace": {"span": "a1"},
                "progressToken": 3,
                "mandate/decision": {
                    "decision": "allow",
                    "decision_id": "01a2088f-8589-70aa-be37-388df963e17e",
                    "receipt_index": 7,
                },
            })
        );
        assert_eq!(response["result"]["content"][0]["text"], "hi");
    }

    #[test]
    fn the_gateways_decision_overrules_an_upstreams_claim() {
        let mut result = json!({"content": [], "_meta": {
            "mandate/decision": {"decision": "allow", "decision_id": "forged"},
        }});
        assert!(meta(Some("01a2088f-0000-7000-8000-00000000a001")).add_to_result(&mut result));
        assert_eq!(
            result["_meta"]["mandate/decision"],
            json!({
                "decision": "allow",
                "decision_id": "01a2088f-8589-70aa-be37-388df963e17e",
                "receipt_index": 7,
                "approval_id": "01a2088f-0000-7000-8000-00000000a001",
            })
        );
    }

    #[test]
    fn a_result_without_meta_gets_one() {
        for mut result in [
            json!({"content": []}),
            json!({"content": [], "_meta": null}),
        ] {
            assert!(meta(None).add_to_result(&mut result));
            assert_eq!(
                result["_meta"]["mandate/decision"]["receipt_index"], 7,
                "{result}"
            );
            assert_eq!(result["_meta"].as_object().map(Map::len), Some(1));
        }
    }

    #[test]
    fn what_cannot_carry_it_is_left_as_it_came() {
        for original in [
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "no"}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": "not an object"}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "_meta": "text"}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "_meta": [1]}}),
        ] {
            let mut response = original.clone();
            assert!(!meta(None).add_to_response(&mut response), "{original}");
            assert_eq!(response, original);
        }
    }
}
