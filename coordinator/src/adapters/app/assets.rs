//! The approval app's files, built into the binary: what the browser runs
//! is what was reviewed and released with this coordinator, never a file
//! an operator (or an attacker with write access to a web root) swapped.
//! No third-party asset, no inline script or style: the page works under
//! the strict Content-Security-Policy of [`super::SECURITY_HEADERS`].

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

/// (file name, content type, bytes).
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../../app/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../app/app.js"),
    ),
    (
        "statement.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../app/statement.js"),
    ),
    (
        "reports.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../app/reports.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../../app/app.css"),
    ),
];

fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file in the approval app").into_response(),
    }
}

/// `GET /app/`.
pub async fn index() -> Response {
    file("index.html")
}

/// `GET /app`: to `/app/`, so relative asset paths resolve.
pub async fn to_index() -> Redirect {
    Redirect::permanent("/app/")
}

/// `GET /app/{file}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::FILES;

    /// The page loads nothing from elsewhere and runs no inline code (the
    /// CSP would block it; this names the file at fault first).
    #[test]
    fn files_are_self_contained() {
        for (name, _, body) in FILES {
            // The SVG namespace is a name, not an address anything loads.
            let body = body.replace("'http://www.w3.org/2000/svg'", "");
            for bad in [
                "http://",
                "https://",
                "//cdn",
                "javascript:",
                " onclick=",
                " onload=",
                " style=\"",
                "eval(",
                "innerHTML",
            ] {
                assert!(!body.contains(bad), "{name} contains {bad:?}");
            }
        }
        let index = FILES[0].2;
        assert!(!index.contains("<script>"), "inline script in index.html");
        assert!(!index.contains("<style"), "inline style in index.html");
    }
}
