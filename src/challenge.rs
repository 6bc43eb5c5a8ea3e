//! The HTTP-01 challenge answers: the tokens of orders in flight, and the answer to
//! `GET /.well-known/acme-challenge/<token>` with their key authorizations (served on `[http] listen`
//! by [`crate::plain_http`]).
//!
//! Only tokens that an order has published and not yet withdrawn are answered; any other token gets 404.
//! A token is withdrawn when its [`PublishedToken`] guard drops, so a failed or finished order cannot
//! leave a stale answer behind. Requests for other paths are the listener's to answer
//! ([`crate::plain_http::Fallback`]).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use tracing::debug;

use crate::answers::{Answers, PublishedAnswer};
use crate::fleet_answers::{FleetAnswers, FleetGuard};
use crate::storage::AnswerKind;
use crate::store::StoreError;

/// The path prefix of HTTP-01 requests (RFC 8555 §8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The key authorizations of the HTTP-01 challenges currently in flight, by token.
///
/// Cheap to clone; all clones share the same set, so the order that publishes a token and the listener
/// that answers it need not know each other.
#[derive(Debug, Clone, Default)]
pub struct ChallengeTokens {
    inner: Answers<Arc<str>>,
    /// The TLS-ALPN-01 certificates of the same orders, kept here so that whatever hands HTTP-01
    /// tokens from the orders to the listeners hands these over too.
    alpn: crate::tls_alpn::AlpnCertificates,
    /// The fleet's store, when answers are shared between nodes: published there too, and asked
    /// on a miss.
    fleet: Option<Arc<FleetAnswers>>,
}

/// Keeps a token answerable; dropping it withdraws the token (here, and from the fleet's store).
#[derive(Debug)]
pub struct PublishedToken {
    _local: PublishedAnswer<Arc<str>>,
    _fleet: Option<FleetGuard>,
}

impl ChallengeTokens {
    /// Tokens (and TLS-ALPN-01 certificates) shared through `store` with every node of the fleet,
    /// when it shares answers ([`crate::storage::StateStore::shares_challenges`]); otherwise the same
    /// as [`ChallengeTokens::default`].
    pub fn shared_through(store: &crate::storage::SharedStore) -> Self {
        let fleet = FleetAnswers::new(store);
        Self {
            inner: Answers::default(),
            alpn: crate::tls_alpn::AlpnCertificates::shared_through(fleet.clone()),
            fleet,
        }
    }

    /// Makes `token` answerable with `key_authorization` by this process until the returned guard
    /// drops.
    pub fn publish(&self, token: String, key_authorization: String) -> PublishedToken {
        PublishedToken {
            _local: self.inner.publish(token, key_authorization.into()),
            _fleet: None,
        }
    }

    /// [`ChallengeTokens::publish`], and in the fleet's store when answers are shared, so that any
    /// node answers `token`: returns once it is there, before the CA may be told to validate.
    pub async fn publish_to_fleet(
        &self,
        token: String,
        key_authorization: String,
    ) -> Result<PublishedToken, StoreError> {
        let fleet = match &self.fleet {
            Some(fleet) => Some(
                fleet
                    .publish(AnswerKind::Http01, &token, &key_authorization)
                    .await?,
            ),
            None => None,
        };
        Ok(PublishedToken {
            _local: self.inner.publish(token, key_authorization.into()),
            _fleet: fleet,
        })
    }

    /// The TLS-ALPN-01 challenge certificates of the orders in flight (answered on `[https] listen`).
    pub fn alpn(&self) -> &crate::tls_alpn::AlpnCertificates {
        &self.alpn
    }

    /// The key authorization for `token`, if an order in flight in this process published it.
    pub fn key_authorization(&self, token: &str) -> Option<Arc<str>> {
        self.inner.get(token)
    }

    /// How many tokens are answerable now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no token is answerable now.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`ChallengeTokens::answer`], and for a token this process does not hold, the answer another
    /// node of the fleet published (bounded; see [`crate::fleet_answers`]).
    pub async fn respond(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        let local = self.answer(method, path)?;
        let Some(fleet) = &self.fleet else {
            return Some(local);
        };
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        if local.status() != StatusCode::NOT_FOUND || !well_formed(token) {
            return Some(local);
        }
        match fleet.lookup(AnswerKind::Http01, token).await {
            Some(key_authorization) => {
                debug!(token, "answered an HTTP-01 challenge of another node");
                Some(key_authorization_response(key_authorization.as_bytes()))
            }
            None => Some(local),
        }
    }

    /// The response to a request for `path`, if the path is an HTTP-01 challenge path: the key
    /// authorization for a published token, 404 for any other token. `None` for every other path, so
    /// that the caller decides (404 here, a redirect to HTTPS in the daemon).
    pub fn answer(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        if method != Method::GET && method != Method::HEAD {
            return Some(plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n",
            ));
        }
        match well_formed(token)
            .then(|| self.key_authorization(token))
            .flatten()
        {
            Some(key_authorization) => {
                debug!(token, "answered an HTTP-01 challenge");
                Some(key_authorization_response(key_authorization.as_bytes()))
            }
            None => Some(plain(StatusCode::NOT_FOUND, "unknown challenge token\n")),
        }
    }
}

/// Tokens are base64url (RFC 8555 §8.1); anything else cannot be one of ours.
fn well_formed(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The 200 answer carrying a key authorization.
fn key_authorization_response(key_authorization: &[u8]) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(key_authorization)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// A short plain-text response.
pub fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(response: Response<Full<Bytes>>) -> String {
        String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn only_published_tokens_are_answered_and_only_while_published() {
        let tokens = ChallengeTokens::default();
        let path = format!("{CHALLENGE_PREFIX}abc_DEF-123");
        let guard = tokens.publish("abc_DEF-123".into(), "abc_DEF-123.thumb".into());

        let answer = tokens.answer(&Method::GET, &path).unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(body(answer).await, "abc_DEF-123.thumb");

        let other = tokens
            .answer(&Method::GET, &format!("{CHALLENGE_PREFIX}other"))
            .unwrap();
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
        let traversal = tokens
            .answer(&Method::GET, &format!("{CHALLENGE_PREFIX}../abc_DEF-123"))
            .unwrap();
        assert_eq!(traversal.status(), StatusCode::NOT_FOUND);
        assert!(tokens.answer(&Method::GET, "/index.html").is_none());

        drop(guard);
        assert!(tokens.is_empty());
        let gone = tokens.answer(&Method::GET, &path).unwrap();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_token_published_by_another_node_is_answered_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: crate::storage::SharedStore =
            crate::fleet_answers::tests::SharingStore::new(dir.path());
        let (ours, theirs) = (
            ChallengeTokens::shared_through(&store),
            ChallengeTokens::shared_through(&store),
        );
        let path = format!("{CHALLENGE_PREFIX}tok_1");
        let guard = theirs
            .publish_to_fleet("tok_1".into(), "tok_1.thumb".into())
            .await
            .unwrap();
        assert!(ours.is_empty());
        let answer = ours.respond(&Method::GET, &path).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(body(answer).await, "tok_1.thumb");
        // Without the store (a single node), the same request is unknown.
        let alone = ChallengeTokens::default();
        let answer = alone.respond(&Method::GET, &path).await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
        drop(guard);
    }
}
