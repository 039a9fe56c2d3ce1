//! Newline-delimited JSON framing, as the MCP stdio transport defines it,
//! with a bound on the size of one message.

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The default bound on one message: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// One frame read.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message (without its newline); may be blank.
    Line(Vec<u8>),
    /// A message longer than the bound: it was read to its end and dropped.
    TooLong,
    /// The stream ended.
    End,
}

/// Reads one newline-terminated frame of at most `max` bytes. A last line
/// without a newline still counts as a frame.
pub async fn read_frame<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Frame> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Frame::TooLong,
                (false, true) => Frame::End,
                (false, false) => Frame::Line(line),
            });
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        if !too_long {
            let body = available.get(..chunk).unwrap_or_default();
            let body = if done {
                body.get(..chunk - 1).unwrap_or_default()
            } else {
                body
            };
            if line.len() + body.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(body);
            }
        }
        reader.consume(chunk);
        if done {
            if too_long {
                return Ok(Frame::TooLong);
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Frame::Line(line));
        }
    }
}

/// Writes one message and its newline, and flushes. One buffer, so that a
/// message usually takes one write (on a blocking stdout, one trip to the
/// blocking pool instead of two).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &[u8],
) -> std::io::Result<()> {
    let mut framed = Vec::with_capacity(message.len().saturating_add(1));
    framed.extend_from_slice(message);
    framed.push(b'\n');
    writer.write_all(&framed).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_and_bounds() {
        let input: &[u8] = b"{\"a\":1}\r\nxxxxxxxxxxxxxxxxxxxx\n\n{}";
        let mut reader = tokio::io::BufReader::with_capacity(4, input);
        let mut frames = Vec::new();
        loop {
            let frame = read_frame(&mut reader, 10).await.unwrap_or(Frame::End);
            if frame == Frame::End {
                break;
            }
            frames.push(frame);
        }
        assert_eq!(
            frames,
            [
                Frame::Line(b"{\"a\":1}".to_vec()),
                Frame::TooLong,
                Frame::Line(Vec::new()),
                Frame::Line(b"{}".to_vec()),
            ]
        );
    }
}
