//! Who may read a node's HTTP endpoints: only holders of the cluster token (API.md §10; an open
//! dashboard is how ShadowRay, CVE-2023-48022, took over Ray clusters).
//!
//! A request proves the token in one of three ways: an `Authorization: Bearer <token>` header
//! (HTTP clients, Prometheus' `authorization` setting), `?token=<token>` in the URL (a browser's
//! first visit: answered with a session cookie and a redirect to the same URL without the
//! token), or that session cookie (`HttpOnly`, `SameSite=Strict`; a random secret of the
//! server, never the token itself, and named after the server's port, as browsers share cookies
//! between the ports of a host). Anything else is answered 401, with a body saying how to pass
//! the token. [`decide`] is the whole decision, a pure function of what the request carries;
//! [`guard`] applies it to every request of a router. Secrets are compared in constant time.

use crate::transport::Token;
use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// What a server checks requests against: the cluster token and the session cookie it hands
/// out.
#[derive(Clone)]
pub(crate) struct Keys {
    /// The cluster token's 32 bytes.
    token: [u8; 32],
    /// The session cookie's value (a random secret of this server, as hex).
    session: String,
    /// The session cookie's name (`lumen_session_<port>`).
    cookie: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({}, …)", self.cookie)
    }
}

impl Keys {
    /// The keys of a server on `port` of a cluster with `token`, with session secret `session`
    /// (random bytes, fresh for each server).
    pub(crate) fn new(token: &Token, session: [u8; 32], port: u16) -> Keys {
        Keys {
            token: token.0,
            session: crate::cluster::session::hex(&session),
            cookie: format!("lumen_session_{port}"),
        }
    }
}

/// What the request carries that may prove it holds the token.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Presented<'a> {
    /// Each `Authorization` header.
    pub(crate) authorization: &'a [&'a str],
    /// Each `Cookie` header.
    pub(crate) cookies: &'a [&'a str],
    /// The URL's query (after `?`), if any.
    pub(crate) query: Option<&'a str>,
}

/// The decision on a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// It proved the token: serve it.
    Allowed,
    /// Its URL holds the right token: answer with the session cookie and a redirect to
    /// `location` (the same path, the other query parameters kept, the token taken out).
    SignIn {
        /// Where to send the browser.
        location: String,
    },
    /// Refused (401), and why.
    Refused(Refusal),
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It presented nothing.
    NoToken,
    /// It presented a token (header or URL) that is not the cluster's.
    WrongToken,
    /// Its `Authorization` header is not `Bearer <token>`.
    NotBearer,
    /// Its only proof was a session cookie this server did not hand out (an old server's).
    StaleSession,
}

impl Refusal {
    /// What the 401 body says first.
    fn reason(self) -> &'static str {
        match self {
            Refusal::NoToken => "no cluster token was given",
            Refusal::WrongToken => "the token given is not this cluster's token",
            Refusal::NotBearer => "the Authorization header is not `Bearer <token>`",
            Refusal::StaleSession => {
                "the session cookie is not this server's (it restarted): sign in again"
            }
        }
    }
}

/// Equality of two byte strings in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether `text` is the cluster token (64 hex digits, either case, surrounding blanks ignored).
fn is_token(keys: &Keys, text: &str) -> bool {
    match Token::parse(text) {
        // Parsing the caller's own text tells it nothing; the comparison is constant-time.
        Ok(t) => same(&t.0, &keys.token),
        Err(_) => false,
    }
}

/// Decides whether a request for `path` that presents `p` is served (see the module docs). An
/// `Authorization` header decides alone when present; then a `token` in the URL; then the
/// session cookie.
pub(crate) fn decide(keys: &Keys, path: &str, p: Presented<'_>) -> Access {
    if let Some(header) = p.authorization.first() {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Access::Refused(Refusal::NotBearer);
        }
        return if p.authorization.len() == 1 && is_token(keys, rest) {
            Access::Allowed
        } else {
            Access::Refused(Refusal::WrongToken)
        };
    }
    if let Some(query) = p.query {
        let mut given = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            match pair.split_once('=') {
                Some(("token", v)) => given = Some(v),
                _ if pair == "token" => given = Some(""),
                _ => kept.push(pair),
            }
        }
        if let Some(given) = given {
            if !is_token(keys, given) {
                return Access::Refused(Refusal::WrongToken);
            }
            // One leading slash: `//host/…` would send the browser to another site.
            let mut location = format!("/{}", path.trim_start_matches('/'));
            if !kept.is_empty() {
                location.push('?');
                location.push_str(&kept.join("&"));
            }
            return Access::SignIn { location };
        }
    }
    let mut stale = false;
    for header in p.cookies {
        for cookie in header.split(';') {
            if let Some((name, value)) = cookie.trim().split_once('=') {
                if name == keys.cookie {
                    if same(value.trim().as_bytes(), keys.session.as_bytes()) {
                        return Access::Allowed;
                    }
                    stale = true;
                }
            }
        }
    }
    Access::Refused(if stale {
        Refusal::StaleSession
    } else {
        Refusal::NoToken
    })
}

/// The body of a 401: what is wrong, and how to pass the token.
pub(crate) fn refusal_text(why: Refusal) -> String {
    format!(
        "401 Unauthorized: {}.\n\n\
         The cluster token is required: this endpoint shows (and a browser's session can read) \
         the cluster's state and logs.\n\
         - HTTP clients (curl, Prometheus): send the header `Authorization: Bearer <token>`.\n\
         - Browsers: open /?token=<token> once; it sets a session cookie and takes you to /.\n\
         The token is the 64 hex digits `lumen start --head` printed as LUMEN_TOKEN; on the \
         head's machine it is in the node record of the session folder.\n",
        why.reason()
    )
}

/// Middleware: serves a request only if [`decide`] allows it; answers a sign-in with the
/// cookie and a redirect, and anything else with 401.
pub(crate) async fn guard(State(keys): State<Arc<Keys>>, request: Request, next: Next) -> Response {
    let access = {
        let headers: &HeaderMap = request.headers();
        let text = |name| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        };
        let (authorization, cookies) = (text(AUTHORIZATION), text(COOKIE));
        decide(
            &keys,
            request.uri().path(),
            Presented {
                authorization: &authorization,
                cookies: &cookies,
                query: request.uri().query(),
            },
        )
    };
    match access {
        Access::Allowed => next.run(request).await,
        Access::SignIn { location } => {
            let cookie = format!(
                "{}={}; HttpOnly; SameSite=Strict; Path=/",
                keys.cookie, keys.session
            );
            let mut response = StatusCode::SEE_OTHER.into_response();
            let h = response.headers_mut();
            // Both are plain ASCII built here (a path from a parsed URI, hex digits).
            if let (Ok(c), Ok(l)) = (
                HeaderValue::from_str(&cookie),
                HeaderValue::from_str(&location),
            ) {
                h.insert(SET_COOKIE, c);
                h.insert(LOCATION, l);
            }
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Access::Refused(why) => {
            let mut response = (StatusCode::UNAUTHORIZED, refusal_text(why)).into_response();
            let h = response.headers_mut();
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lumen\""),
            );
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (Keys, String) {
        let token = Token([7u8; 32]);
        (Keys::new(&token, [9u8; 32], 8265), token.to_hex())
    }

    fn ask(keys: &Keys, auth: &[&str], cookies: &[&str], query: Option<&str>) -> Access {
        decide(
            keys,
            "/",
            Presented {
                authorization: auth,
                cookies,
                query,
            },
        )
    }

    #[test]
    fn a_bearer_header_with_the_token_is_allowed_and_any_other_header_refused() {
        let (k, token) = keys();
        let bearer = format!("Bearer {token}");
        assert_eq!(ask(&k, &[&bearer], &[], None), Access::Allowed);
        let upper = format!("bearer {}", token.to_uppercase());
        assert_eq!(ask(&k, &[&upper], &[], None), Access::Allowed);
        let wrong = format!("Bearer {}", "0".repeat(64));
        assert_eq!(
            ask(&k, &[&wrong], &[], None),
            Access::Refused(Refusal::WrongToken)
        );
        assert_eq!(
            ask(&k, &["Bearer short"], &[], None),
            Access::Refused(Refusal::WrongToken)
        );
        let basic = format!("Basic {token}");
        assert_eq!(
            ask(&k, &[&basic], &[], None),
            Access::Refused(Refusal::NotBearer)
        );
        // Two headers, one right: refused (which would a proxy pass on?).
        assert_eq!(
            ask(&k, &[&bearer, &wrong], &[], None),
            Access::Refused(Refusal::WrongToken)
        );
    }

    #[test]
    fn a_wrong_header_is_refused_even_with_a_good_cookie() {
        let (k, _) = keys();
        let good = format!("lumen_session_8265={}", k.session);
        assert_eq!(
            ask(&k, &["Bearer nope"], &[&good], None),
            Access::Refused(Refusal::WrongToken)
        );
    }

    #[test]
    fn the_token_in_the_url_signs_in_and_is_taken_out_of_the_redirect() {
        let (k, token) = keys();
        let q = format!("token={token}");
        assert_eq!(
            ask(&k, &[], &[], Some(&q)),
            Access::SignIn {
                location: "/".into()
            }
        );
        let q = format!("a=1&token={token}&b=2");
        assert_eq!(
            decide(
                &k,
                "/api/logs",
                Presented {
                    query: Some(&q),
                    ..Presented::default()
                }
            ),
            Access::SignIn {
                location: "/api/logs?a=1&b=2".into()
            }
        );
        let q = format!("token={token}");
        assert_eq!(
            decide(
                &k,
                "//elsewhere.example/x",
                Presented {
                    query: Some(&q),
                    ..Presented::default()
                }
            ),
            Access::SignIn {
                location: "/elsewhere.example/x".into()
            },
            "the redirect stays on this server"
        );
        assert_eq!(
            ask(&k, &[], &[], Some("token=abc")),
            Access::Refused(Refusal::WrongToken)
        );
        assert_eq!(
            ask(&k, &[], &[], Some("token")),
            Access::Refused(Refusal::WrongToken)
        );
    }

    #[test]
    fn the_session_cookie_is_allowed_and_a_stale_or_foreign_one_is_not() {
        let (k, token) = keys();
        let good = format!("theme=dark; lumen_session_8265={}", k.session);
        assert_eq!(ask(&k, &[], &[&good], None), Access::Allowed);
        assert_eq!(
            ask(&k, &[], &["lumen_session_8265=00"], None),
            Access::Refused(Refusal::StaleSession)
        );
        // Another server's cookie on the same host (another port) proves nothing here.
        let other = format!("lumen_session_9000={}", k.session);
        assert_eq!(
            ask(&k, &[], &[&other], None),
            Access::Refused(Refusal::NoToken)
        );
        // The token itself is not a session.
        let raw = format!("lumen_session_8265={token}");
        assert_eq!(
            ask(&k, &[], &[&raw], None),
            Access::Refused(Refusal::StaleSession)
        );
    }

    #[test]
    fn nothing_is_refused_with_a_body_that_says_how_to_pass_the_token() {
        let (k, _) = keys();
        assert_eq!(
            ask(&k, &[], &[], Some("x=1")),
            Access::Refused(Refusal::NoToken)
        );
        let body = refusal_text(Refusal::NoToken);
        assert!(body.contains("token is required"), "{body}");
        assert!(body.contains("Authorization: Bearer <token>"), "{body}");
        assert!(body.contains("/?token=<token>"), "{body}");
    }

    #[test]
    fn comparison_is_by_content() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(same(b"", b""));
    }
}
