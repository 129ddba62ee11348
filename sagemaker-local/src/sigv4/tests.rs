//! SigV4 against AWS's worked example and the refusals.
use super::*;

fn example() -> (Credentials, HeaderMap, SystemTime) {
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
    (creds, headers, at)
}

const PATH: &str = "/?Action=ListUsers&Version=2010-05-08";

fn checked(
    creds: &Credentials,
    path: &str,
    headers: &HeaderMap,
    at: SystemTime,
) -> Result<(), AwsError> {
    let request = CanonicalRequest {
        method: &Method::GET,
        path_and_query: path,
        authority: None,
        headers,
    };
    check(creds, "iam", &request, b"", at)
}

/// The worked example of AWS's SigV4 documentation (GET iam ListUsers).
#[test]
fn verifies_the_aws_documentation_example() {
    let (creds, mut headers, at) = example();
    checked(&creds, PATH, &headers, at).expect("valid signature");
    let wrong = Credentials {
        secret_access_key: "nope".into(),
        ..creds.clone()
    };
    let code = |r: Result<(), AwsError>| r.unwrap_err().code;
    assert_eq!(
        code(checked(&wrong, PATH, &headers, at)),
        "InvalidSignatureException"
    );
    let tampered = "/?Action=ListUsers&Version=2010-05-09";
    assert_eq!(
        code(checked(&creds, tampered, &headers, at)),
        "InvalidSignatureException"
    );
    let late = at + Duration::from_secs(3600);
    assert_eq!(
        code(checked(&creds, PATH, &headers, late)),
        "InvalidSignatureException"
    );
    headers.remove("authorization");
    assert_eq!(
        code(checked(&creds, PATH, &headers, at)),
        "MissingAuthenticationTokenException"
    );
}

/// A scope without a date, for another day or service, or a signature that leaves the
/// host or the date unsigned, is refused before any signature is computed.
#[test]
fn scope_and_signed_headers_are_enforced() {
    let (creds, headers, at) = example();
    let with_auth = |auth: &str| {
        let mut h = headers.clone();
        h.insert("authorization", auth.parse().unwrap());
        h
    };
    let sig = "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
    for (what, auth) in [
        (
            "empty scope date",
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE//us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, {sig}"
            ),
        ),
        (
            "another day",
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150831/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, {sig}"
            ),
        ),
        (
            "another service",
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/s3/aws4_request, SignedHeaders=content-type;host;x-amz-date, {sig}"
            ),
        ),
        (
            "no region",
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830//iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, {sig}"
            ),
        ),
        (
            "host unsigned",
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;x-amz-date, {sig}"
            ),
        ),
        (
            "date unsigned",
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host, {sig}"
            ),
        ),
    ] {
        let e = checked(&creds, PATH, &with_auth(&auth), at).unwrap_err();
        assert_eq!(e.code, "InvalidSignatureException", "{what}: {e:?}");
    }
}
