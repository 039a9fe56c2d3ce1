//! The MCP gateway's client side: a byte stream cut into newline-delimited
//! frames (`mandate_mcp::frame::read_frame`, with a small bound so that
//! over-long frames are exercised), each parsed (`jsonrpc::parse_client`),
//! classified, and read as a `tools/call` and a cancellation. Nothing may
//! panic, reading must move forward, and frames never hold a newline.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mandate_mcp::frame::{Frame, read_frame};
use mandate_mcp::jsonrpc::{Message, cancelled_request, classify, parse_client, tool_call};
use tokio::runtime::{Builder, Runtime};

/// The bound on one frame: small, so that the fuzzer reaches it.
const MAX_FRAME: usize = 1024;

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| match Builder::new_current_thread().build() {
    Ok(runtime) => runtime,
    Err(e) => panic!("no runtime: {e}"),
});

fuzz_target!(|data: &[u8]| {
    RUNTIME.block_on(async {
        let mut reader = data;
        // Each frame consumes at least one byte, so there are at most
        // `data.len()` frames before the end.
        for _ in 0..=data.len() {
            let frame = match read_frame(&mut reader, MAX_FRAME).await {
                Ok(frame) => frame,
                Err(e) => panic!("reading from memory failed: {e}"),
            };
            match frame {
                Frame::End => {
                    assert!(reader.is_empty(), "the end came before the bytes ran out");
                    return;
                }
                Frame::TooLong => {}
                Frame::Line(line) => {
                    assert!(line.len() <= MAX_FRAME, "a frame over the bound");
                    assert!(!line.contains(&b'\n'), "a frame holds a newline");
                    message(&line);
                }
            }
        }
        panic!("read_frame did not reach the end of {} bytes", data.len());
    });
});

fn message(line: &[u8]) {
    let Ok(message) = parse_client(line) else {
        return;
    };
    match classify(&message) {
        Message::Request { method, .. } if method == "tools/call" => {
            if let Ok(call) = tool_call(&message) {
                assert!(!call.name.is_empty());
            }
        }
        Message::Notification { method } if method == "notifications/cancelled" => {
            let _ = cancelled_request(&message);
        }
        _ => {
            let _ = tool_call(&message);
            let _ = cancelled_request(&message);
        }
    }
}
