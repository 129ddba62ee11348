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
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return AwsError::validation_error(format!(
                "Request payload exceeds the maximum of {MAX_BODY_BYTES} bytes."
            ))
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            .into_response();
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let host = parts.uri.authority().map(|a| a.as_str().to_owned());
    if let Err(e) = check(
        &creds,
        &parts.method,
        path_and_query,
        host.as_deref(),
        &parts.headers,
        &body,
        SystemTime::now(),
    ) {
        metrics::counter!("sagemaker_local_auth_failures_total", "code" => e.code).increment(1);
        return e.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
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
    (scope.next()? == "aws4_request").then_some(auth)
}

/// Verifies one request; `now` is a parameter so tests can pin the clock.
pub fn check(
    creds: &Credentials,
    method: &Method,
    path_and_query: &str,
    authority: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), AwsError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(raw) = header("authorization") else {
        return Err(forbidden(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let auth = parse_authorization(raw).ok_or_else(|| {
        forbidden("IncompleteSignatureException", format!("Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters. Authorization={raw}"))
    })?;
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
    if !amz_date.starts_with(auth.date) {
        return Err(signature_mismatch());
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

    let body_hash = hex::encode(Sha256::digest(body));
    let payload_hash = match header("x-amz-content-sha256") {
        Some("UNSIGNED-PAYLOAD") => "UNSIGNED-PAYLOAD".to_owned(),
        Some(declared) if declared != body_hash => return Err(signature_mismatch()),
        _ => body_hash,
    };

    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut canonical = String::with_capacity(512);
    canonical.push_str(method.as_str());
    canonical.push('\n');
    canonical.push_str(&utf8_percent_encode(path, STRICT_PATH).to_string());
    canonical.push('\n');
    canonical.push_str(&canonical_query(query));
    canonical.push('\n');
    for name in &auth.signed_headers {
        let mut values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() && *name == "host" {
            values.extend(authority.map(str::to_owned));
        }
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&values.join(","));
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&auth.signed_headers.join(";"));
    canonical.push('\n');
    canonical.push_str(&payload_hash);

    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = aws_sigv4::sign::v4::generate_signing_key(
        &creds.secret_access_key,
        signed_at,
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
mod tests {
    use super::*;

    /// The worked example of AWS's SigV4 documentation (GET iam ListUsers).
    #[test]
    fn verifies_the_aws_documentation_example() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        };
        let mut headers = HeaderMap::new();
        headers.insert("host", "iam.amazonaws.com".parse().unwrap());
        headers.insert(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
                .parse()
                .unwrap(),
        );
        let at = SystemTime::from(Utc.with_ymd_and_hms(2015, 8, 30, 12, 40, 0).unwrap());
        let path = "/?Action=ListUsers&Version=2010-05-08";
        check(&creds, &Method::GET, path, None, &headers, b"", at).expect("valid signature");

        let wrong = Credentials {
            secret_access_key: "nope".into(),
            ..creds.clone()
        };
        assert_eq!(
            check(&wrong, &Method::GET, path, None, &headers, b"", at)
                .unwrap_err()
                .code,
            "InvalidSignatureException"
        );
        let tampered = "/?Action=ListUsers&Version=2010-05-09";
        assert_eq!(
            check(&creds, &Method::GET, tampered, None, &headers, b"", at)
                .unwrap_err()
                .code,
            "InvalidSignatureException"
        );
        let late = at + Duration::from_secs(3600);
        assert_eq!(
            check(&creds, &Method::GET, path, None, &headers, b"", late)
                .unwrap_err()
                .code,
            "InvalidSignatureException"
        );
        headers.remove("authorization");
        assert_eq!(
            check(&creds, &Method::GET, path, None, &headers, b"", at)
                .unwrap_err()
                .code,
            "MissingAuthenticationTokenException"
        );
    }
}
