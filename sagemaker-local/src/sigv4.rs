//! SigV4 verification for every AWS route. The canonical request is rebuilt from exactly
//! the headers the client says it signed; the key derivation and HMAC are aws-sigv4's.
//! Region and service come from the credential scope, so any region a client uses works.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::{NaiveDateTime, TimeZone, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::error::AwsError;

/// The largest body accepted: InvokeEndpoint's 6 MiB payload limit plus headroom.
pub const MAX_BODY_BYTES: usize = 6_291_456 + 64 * 1024;
/// The signing names requests may be scoped to: all three SageMaker APIs sign as
/// `sagemaker`; Application Auto Scaling (Deploy registers variants) as its own.
const SERVICES: &[&str] = &["sagemaker", "application-autoscaling"];
/// Requests whose X-Amz-Date is further than this from the server's clock are refused.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The one key pair requests must be signed with.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const STRICT_PATH: &AsciiSet = &STRICT.remove(b'/');

pub async fn verify(
    State(creds): State<Arc<Credentials>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let refused = |e: AwsError| {
        metrics::counter!("sagemaker_local_auth_failures_total", "code" => e.code).increment(1);
        e.into_response()
    };
    // Everything that can be checked without the body is checked before any of it is read:
    // the key, the date and scope, the signed headers, the clock; and the signature itself
    // when the client declares the payload's hash (x-amz-content-sha256).
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let host = parts.uri.authority().map(|a| a.as_str().to_owned());
    let signed = match Signed::parse(&creds, SERVICES, &parts.headers, SystemTime::now()) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    let request = CanonicalRequest {
        method: &parts.method,
        path_and_query,
        authority: host.as_deref(),
        headers: &parts.headers,
    };
    let declared = parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(hash) = &declared
        && let Err(e) = signed.verify(&creds, &request, hash)
    {
        return refused(e);
    }
    if parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES)
    {
        return refused(too_large());
    }
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return refused(too_large()),
    };
    let body_hash = hex::encode(Sha256::digest(&body));
    let checked = match declared.as_deref() {
        Some("UNSIGNED-PAYLOAD") => Ok(()),
        Some(hash) if hash != body_hash => Err(signature_mismatch()),
        Some(_) => Ok(()),
        None => signed.verify(&creds, &request, &body_hash),
    };
    if let Err(e) = checked {
        return refused(e);
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn too_large() -> AwsError {
    AwsError::validation_error(format!(
        "Request payload exceeds the maximum of {MAX_BODY_BYTES} bytes."
    ))
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

fn forbidden(code: &'static str, message: impl Into<String>) -> AwsError {
    AwsError::new(StatusCode::FORBIDDEN, code, message)
}

fn signature_mismatch() -> AwsError {
    forbidden(
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
    )
}

struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256")?.trim();
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let mut scope = credential?.split('/');
    let auth = Authorization {
        access_key: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    };
    (scope.next()? == "aws4_request" && scope.next().is_none()).then_some(auth)
}

/// What the request is, as the signature covers it (all but the payload's hash).
pub struct CanonicalRequest<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a str,
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// A request's signature, checked for everything but the canonical request itself.
struct Signed<'a> {
    auth: Authorization<'a>,
    amz_date: &'a str,
    signed_at: SystemTime,
}

impl<'a> Signed<'a> {
    /// The Authorization header, the key, the date and scope, the signed headers, the clock.
    fn parse(
        creds: &Credentials,
        services: &[&str],
        headers: &'a HeaderMap,
        now: SystemTime,
    ) -> Result<Self, AwsError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Some(raw) = header("authorization") else {
            return Err(forbidden(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ));
        };
        let incomplete = || {
            forbidden(
                "IncompleteSignatureException",
                format!(
                    "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters. Authorization={raw}"
                ),
            )
        };
        let auth = parse_authorization(raw).ok_or_else(incomplete)?;
        if auth.access_key != creds.access_key_id {
            return Err(forbidden(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        }
        let amz_date = header("x-amz-date").ok_or_else(|| {
            forbidden(
                "IncompleteSignatureException",
                "Authorization requires an X-Amz-Date header.",
            )
        })?;
        let signed_at = NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
            .map(|t| SystemTime::from(Utc.from_utc_datetime(&t)))
            .map_err(|_| {
                forbidden(
                    "IncompleteSignatureException",
                    format!("Invalid X-Amz-Date {amz_date}"),
                )
            })?;
        // The scope is the signing day, a region and this service: exactly.
        let scope_ok = auth.date.len() == 8
            && amz_date.get(..8) == Some(auth.date)
            && !auth.region.is_empty()
            && services.contains(&auth.service);
        if !scope_ok {
            return Err(forbidden(
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to a valid date, region and service: {}/{}/{}",
                    auth.date, auth.region, auth.service
                ),
            ));
        }
        // The host and the date must be covered by the signature, or they could be replayed
        // against another host or time.
        for required in ["host", "x-amz-date"] {
            if !auth.signed_headers.contains(&required) {
                return Err(forbidden(
                    "InvalidSignatureException",
                    format!("'{required}' must be a signed header"),
                ));
            }
        }
        let skew = now
            .duration_since(signed_at)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap_or_default();
        if skew > MAX_SKEW {
            return Err(forbidden(
                "InvalidSignatureException",
                format!(
                    "Signature expired: {amz_date} is now earlier or later than the server time by more than 15 minutes."
                ),
            ));
        }
        Ok(Signed {
            auth,
            amz_date,
            signed_at,
        })
    }

    /// The signature over `request` with `payload_hash`.
    fn verify(
        &self,
        creds: &Credentials,
        request: &CanonicalRequest<'_>,
        payload_hash: &str,
    ) -> Result<(), AwsError> {
        let auth = &self.auth;
        let (path, query) = request
            .path_and_query
            .split_once('?')
            .unwrap_or((request.path_and_query, ""));
        let mut canonical = String::with_capacity(512);
        canonical.push_str(request.method.as_str());
        canonical.push('\n');
        canonical.push_str(&utf8_percent_encode(path, STRICT_PATH).to_string());
        canonical.push('\n');
        canonical.push_str(&canonical_query(query));
        canonical.push('\n');
        for name in &auth.signed_headers {
            let mut values: Vec<String> = request
                .headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            if values.is_empty() && *name == "host" {
                values.extend(request.authority.map(str::to_owned));
            }
            canonical.push_str(name);
            canonical.push(':');
            canonical.push_str(&values.join(","));
            canonical.push('\n');
        }
        canonical.push('\n');
        canonical.push_str(&auth.signed_headers.join(";"));
        canonical.push('\n');
        canonical.push_str(payload_hash);

        let scope = format!(
            "{}/{}/{}/aws4_request",
            auth.date, auth.region, auth.service
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            self.amz_date,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let key = aws_sigv4::sign::v4::generate_signing_key(
            &creds.secret_access_key,
            self.signed_at,
            auth.region,
            auth.service,
        );
        let expected = aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes());
        if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
            Ok(())
        } else {
            tracing::debug!(%canonical, "signature mismatch");
            Err(signature_mismatch())
        }
    }
}

/// Verifies one whole request signed for `service`; `now` is a parameter so tests can pin
/// the clock.
pub fn check(
    creds: &Credentials,
    service: &str,
    request: &CanonicalRequest<'_>,
    body: &[u8],
    now: SystemTime,
) -> Result<(), AwsError> {
    let signed = Signed::parse(creds, &[service], request.headers, now)?;
    let body_hash = hex::encode(Sha256::digest(body));
    let payload_hash = match request
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some("UNSIGNED-PAYLOAD") => "UNSIGNED-PAYLOAD".to_owned(),
        Some(declared) if declared != body_hash => return Err(signature_mismatch()),
        _ => body_hash,
    };
    signed.verify(creds, request, &payload_hash)
}

/// Pairs decoded then strictly re-encoded and sorted, so either SDK's encoding matches.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| {
                let decoded = percent_decode_str(&s.replace('+', " ")).collect::<Vec<u8>>();
                percent_encoding::percent_encode(&decoded, STRICT).to_string()
            };
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
