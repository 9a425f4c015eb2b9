//! The web management console: one HTML page, one script and one stylesheet, embedded in the
//! binary and served by the management listener (`mgmt`) outside `/api`. The page is a
//! single-page app that talks only to `/api` with the user's Basic credentials; nothing is
//! built at install time and nothing is fetched from elsewhere at run time.
//!
//! This crate owns the bytes and their content types only. It must not know HTTP or the broker:
//! `mgmt` decides methods and status codes and adds [`HEADERS`] to every asset it serves.

const INDEX_HTML: &[u8] = include_bytes!("../assets/index.html");
const CONSOLE_JS: &[u8] = include_bytes!("../assets/console.js");
const CONSOLE_CSS: &[u8] = include_bytes!("../assets/console.css");

/// Response headers for every console asset, names in lower case. The policy allows only this
/// origin's own script, style, `fetch` and images (plus `data:` images), so text that reaches
/// the page as markup by mistake still cannot run script or load anything; no framing.
pub const HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    // Revalidate on every load, so an upgraded server never runs an old script.
    ("cache-control", "no-cache"),
];

/// The asset at a request path, as (content type, bytes); `None` for any other path.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/console.js" => Some(("text/javascript; charset=utf-8", CONSOLE_JS)),
        "/console.css" => Some(("text/css; charset=utf-8", CONSOLE_CSS)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each asset is served under its path with its content type; other paths are not.
    #[test]
    fn assets_by_path() {
        assert_eq!(asset("/").map(|a| a.0), Some("text/html; charset=utf-8"));
        assert_eq!(asset("/index.html"), asset("/"));
        assert_eq!(asset("/console.js").map(|a| a.0), Some("text/javascript; charset=utf-8"));
        assert_eq!(asset("/console.css").map(|a| a.0), Some("text/css; charset=utf-8"));
        for missing in ["", "/favicon.ico", "/console.js/", "/../Cargo.toml", "/assets/console.js"] {
            assert_eq!(asset(missing), None, "{missing}");
        }
    }

    /// The page loads only the script and stylesheet served here: no inline script or style
    /// (which the policy would block anyway) and no address elsewhere.
    #[test]
    fn page_loads_only_own_assets() {
        let html = std::str::from_utf8(INDEX_HTML).expect("index.html is UTF-8");
        assert!(html.contains(r#"<script src="console.js" defer></script>"#));
        assert!(html.contains(r#"<link rel="stylesheet" href="console.css">"#));
        assert_eq!(html.matches("<script").count(), 1);
        assert!(!html.contains("<style"));
        assert!(!html.contains(" style="));
        for text in [INDEX_HTML, CONSOLE_JS, CONSOLE_CSS] {
            let text = std::str::from_utf8(text).expect("assets are UTF-8");
            assert!(!text.contains("http://") && !text.contains("https://"), "an address elsewhere");
        }
    }

    /// Tidy: the script never turns strings into markup or code, so a name a client chose (a
    /// queue, exchange, vhost, user or header value) can only ever be shown as text.
    #[test]
    fn script_builds_dom_without_markup() {
        let js = std::str::from_utf8(CONSOLE_JS).expect("console.js is UTF-8");
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setAttribute('on",
        ] {
            assert!(!js.contains(banned), "console.js uses {banned}");
        }
    }

    /// The policy forbids what the tidy test relies on: inline script, other origins, framing.
    #[test]
    fn policy_is_strict() {
        let csp = HEADERS.iter().find(|h| h.0 == "content-security-policy").expect("a policy").1;
        assert!(csp.contains("script-src 'self';"));
        assert!(!csp.contains("unsafe"));
        assert!(csp.contains("frame-ancestors 'none'"));
    }
}
