//! `GET /ui`: the web console for approvers, three static files built into
//! the binary.
//!
//! The console is plain HTML, one ES module and one stylesheet
//! (`crates/mandate-server/ui/`), with no build step. It holds no secret and
//! needs no authentication to load: it asks the approver for their token and
//! calls the `/v1` API with it. Every file is served with a strict Content
//! Security Policy (scripts and styles from this origin only, no inline code,
//! no framing) so that data an agent put in a request, such as a tool
//! argument, can never run as script in an approver's browser.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The page: `GET /ui` and `GET /ui/`.
const INDEX_HTML: &str = include_str!("../../ui/index.html");
/// The console's code: `GET /ui/console.js`.
const CONSOLE_JS: &str = include_str!("../../ui/console.js");
/// The console's styles: `GET /ui/console.css`.
const CONSOLE_CSS: &str = include_str!("../../ui/console.css");

/// What the console's pages may load and do. `connect-src 'self'` keeps the
/// approver token on this origin; `frame-ancestors 'none'` stops another site
/// from framing the approve button (clickjacking).
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// `GET /ui`, `GET /ui/`: the console's page.
pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/console.js`: the console's code, an ES module.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

/// `GET /ui/console.css`: the console's styles.
pub(crate) async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}

/// One file with its content type and the console's security headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Revalidate on every load, so that an upgraded server never runs
            // with the previous version's script.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn every_file_has_its_type_and_the_security_headers() {
        for (response, ty) in [
            (index().await, "text/html; charset=utf-8"),
            (script().await, "text/javascript; charset=utf-8"),
            (stylesheet().await, "text/css; charset=utf-8"),
        ] {
            let h = response.headers();
            assert_eq!(h[header::CONTENT_TYPE], ty);
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        }
    }

    /// The CSP forbids inline code: the page must not need any.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let lower = INDEX_HTML.to_ascii_lowercase();
        assert!(!lower.contains("<style"), "inline <style> in index.html");
        assert!(!lower.contains(" style="), "style attribute in index.html");
        assert!(
            !has_inline_handler(&lower),
            "inline event handler in index.html"
        );
        for (at, _) in lower.match_indices("<script") {
            let tag = lower.get(at..).and_then(|t| t.split('>').next()).unwrap();
            assert!(tag.contains(" src="), "inline script: {tag}");
        }
    }

    /// Data from the server reaches the page as text only.
    #[test]
    fn the_script_never_writes_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!CONSOLE_JS.contains(sink), "console.js uses `{sink}`");
        }
    }

    fn has_inline_handler(html: &str) -> bool {
        ["onclick=", "onload=", "onerror=", "onsubmit=", "oninput="]
            .iter()
            .any(|h| html.contains(h))
    }
}
