//! `http.route` templates inferred from request paths: the label that keeps RED metrics'
//! cardinality bounded whatever the traffic.

use compact_str::CompactString;

/// A path segment that looks like an identifier.
pub const ROUTE_ID: &str = "{id}";
/// What follows the last segment kept.
pub const ROUTE_REST: &str = "{rest}";
/// A route past the per-service limit, or a request-target that is not a path.
pub const ROUTE_OTHER: &str = "{other}";
/// Segments kept in a route; deeper paths end with `/{rest}`.
pub const MAX_ROUTE_SEGMENTS: usize = 6;
/// A longer segment is taken for an identifier whatever its characters (slugs, blobs).
pub const MAX_SEGMENT_LEN: usize = 64;

/// The `http.route` template of a request path, so that routes stay few whatever the traffic.
///
/// The rule:
/// - the query (`?`) and fragment (`#`) are dropped; an absolute-form target
///   (`http://host/p`) is reduced to its path (`/` if it has none);
/// - an empty target is `/`; `*` (`OPTIONS *`) stays `*`; any other target that does not start
///   with `/` (authority-form `host:port`, garbage) is `{other}`;
/// - the path is split on `/` (empty segments, e.g. a trailing slash, are kept as they are);
///   a segment becomes `{id}` when it is all digits, holds a run of 4+ digits, is a UUID, is
///   hex of length >= 8 with at least one digit, is token-like (length >= 16 with both
///   letters and digits), is longer than [`MAX_SEGMENT_LEN`], or has any character outside
///   `[A-Za-z0-9._~-]` (percent-encoding included);
/// - at most [`MAX_ROUTE_SEGMENTS`] segments are kept; anything deeper becomes one `/{rest}`
///   (a lone trailing slash after them is kept as `/`).
///
/// So `/users/123/orders/9f8e7d6c?x=1` is `/users/{id}/orders/{id}` and
/// `/a/b/c/d/e/f/g/h` is `/a/b/c/d/e/f/{rest}`.
pub fn route_template(path: &str) -> CompactString {
    // Bytes, not `str::find`: this runs for every server span, and a substring search sets up
    // a searcher each time (a quarter of the RED stage's cost).
    let path = match path.bytes().position(|b| b == b'?' || b == b'#') {
        Some(i) => &path[..i],
        None => path,
    };
    // Only a target that does not start with `/` can be absolute-form.
    let path = if path.starts_with('/') {
        path
    } else if let Some(i) = path.find("://") {
        let after = &path[i + 3..];
        after.find('/').map_or("/", |j| &after[j..])
    } else {
        path
    };
    if path.is_empty() {
        return CompactString::const_new("/");
    }
    if path == "*" {
        return CompactString::const_new("*");
    }
    let Some(rest) = path.strip_prefix('/') else {
        return CompactString::const_new(ROUTE_OTHER);
    };
    // Inline up to 24 bytes, most routes: no allocation.
    let mut out = CompactString::with_capacity(path.len().min(128));
    for (n, seg) in rest.splitn(MAX_ROUTE_SEGMENTS + 1, '/').enumerate() {
        out.push('/');
        if n == MAX_ROUTE_SEGMENTS {
            if !seg.is_empty() {
                out.push_str(ROUTE_REST);
            }
        } else if is_identifier(seg) {
            out.push_str(ROUTE_ID);
        } else {
            out.push_str(seg);
        }
    }
    out
}

/// Whether a path segment looks like a value rather than a name (see [`route_template`]).
fn is_identifier(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.len() > MAX_SEGMENT_LEN
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._~-".contains(c))
    {
        return true;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    let longest_digit_run = b
        .split(|c| !c.is_ascii_digit())
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    digits == b.len()
        || longest_digit_run >= 4
        || is_uuid(b)
        || (b.len() >= 8 && digits > 0 && b.iter().all(u8::is_ascii_hexdigit))
        || (b.len() >= 16 && digits > 0 && letters > 0)
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates() {
        let cases = [
            ("/users/123", "/users/{id}"),
            ("/users/123/orders/9f8e7d6c", "/users/{id}/orders/{id}"),
            ("/api/v1/items?x=1", "/api/v1/items"),
            ("/", "/"),
            ("/files/550e8400-e29b-41d4-a716-446655440000", "/files/{id}"),
            ("", "/"),
            ("*", "*"),
            ("?x=1", "/"),
            ("/page#section", "/page"),
            ("/redirect?to=http://evil/1", "/redirect"),
            ("http://example.com/users/42?q=1", "/users/{id}"),
            ("https://example.com", "/"),
            ("example.com:443", "{other}"),
            ("users/1", "{other}"),
            ("/users/", "/users/"),
            ("/users/me", "/users/me"),
            ("/a//b", "/a//b"),
            ("/static/app.min.js", "/static/app.min.js"),
            ("/deadbeef", "/deadbeef"),
            ("/cafe1234", "/{id}"),
            ("/v2/oauth2/h264", "/v2/oauth2/h264"),
            ("/t/AbCdEfGh12345678", "/t/{id}"),
            ("/t/abcdefghijklmnop", "/t/abcdefghijklmnop"),
            ("/invoices/INV-000123", "/invoices/{id}"),
            ("/search/hello%20world", "/search/{id}"),
            ("/users/@me", "/users/{id}"),
            ("/a/b/c/d/e/f", "/a/b/c/d/e/f"),
            ("/a/b/c/d/e/f/", "/a/b/c/d/e/f/"),
            ("/a/b/c/d/e/f/g", "/a/b/c/d/e/f/{rest}"),
            ("/a/b/c/d/e/f/g/h/i", "/a/b/c/d/e/f/{rest}"),
            ("/1/2/3/4/5/6/7", "/{id}/{id}/{id}/{id}/{id}/{id}/{rest}"),
        ];
        for (path, want) in cases {
            assert_eq!(route_template(path), want, "{path:?}");
        }
        let long = format!("/posts/{}", "a".repeat(MAX_SEGMENT_LEN + 1));
        assert_eq!(route_template(&long), "/posts/{id}");
        let slug = format!("/posts/{}", "a".repeat(MAX_SEGMENT_LEN));
        assert_eq!(route_template(&slug), slug);
        assert_eq!(route_template("/ünïcode"), "/{id}");
    }
}
