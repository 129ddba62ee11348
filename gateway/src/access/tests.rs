use super::*;

const KEY_A: &str = "key-a-0123456789abcdef0123456789abcdef";
const KEY_B: &str = "key-b-0123456789abcdef0123456789abcdef";

fn hex(hash: [u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn keys_json(entries: &[(&str, &str, u32, u32)]) -> String {
    let keys: Vec<String> = entries
        .iter()
        .map(|(name, key, rate, burst)| {
            format!(
                r#"{{"name":"{name}","sha256":"{}","per_second":{rate},"burst":{burst}}}"#,
                hex(hash_key(key))
            )
        })
        .collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

fn with_key(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    h
}

fn access(json: &str) -> Access {
    Access::new(AccessConfig {
        api_keys: Some(json.into()),
        ..config()
    })
    .unwrap()
}

fn config() -> AccessConfig {
    AccessConfig {
        api_keys_reload_ms: 2000,
        key_rate_per_sec: 100,
        key_burst: 200,
        ..Default::default()
    }
}

#[test]
fn open_without_keys_and_no_limits_unless_asked() {
    let a = Access::new(config()).unwrap();
    assert!(!a.keys_required());
    let (caller, headers) = a.admit(&HeaderMap::new(), None).unwrap();
    assert_eq!(caller.key_name, None);
    assert!(headers.is_empty());
}

#[test]
fn keys_are_required_and_checked_by_hash() {
    let a = access(&keys_json(&[("acme", KEY_A, 10, 10)]));
    assert!(a.keys_required());
    let none = a.admit(&HeaderMap::new(), None).unwrap_err();
    assert_eq!(none.status, 401);
    assert!(
        none.headers
            .iter()
            .any(|(n, v)| *n == "www-authenticate" && v == "Bearer")
    );
    assert_eq!(a.admit(&with_key("wrong"), None).unwrap_err().status, 401);
    let (caller, headers) = a.admit(&with_key(KEY_A), None).unwrap();
    assert_eq!(caller.key_name.as_deref(), Some("acme"));
    assert!(
        headers
            .iter()
            .any(|(n, v)| *n == "ratelimit-policy" && v == "\"default\";q=10;w=1")
    );
    let mut x = HeaderMap::new();
    x.insert("x-api-key", KEY_A.parse().unwrap());
    assert_eq!(
        a.admit(&x, None).unwrap().0.key_name.as_deref(),
        Some("acme")
    );
}

#[test]
fn a_client_over_its_limit_gets_429_and_another_is_unaffected() {
    let a = access(&keys_json(&[("a", KEY_A, 1, 2), ("b", KEY_B, 1, 2)]));
    a.admit(&with_key(KEY_A), None).unwrap();
    let (_, headers) = a.admit(&with_key(KEY_A), None).unwrap();
    assert!(
        headers
            .iter()
            .any(|(n, v)| *n == "ratelimit" && v.contains("r=0")),
        "{headers:?}"
    );
    let over = a.admit(&with_key(KEY_A), None).unwrap_err();
    assert_eq!(over.status, 429);
    assert_eq!(over.retry_after, Some(1));
    assert!(over.headers.iter().any(|(n, _)| *n == "ratelimit-policy"));
    assert_eq!(
        a.admit(&with_key(KEY_B), None)
            .unwrap()
            .0
            .key_name
            .as_deref(),
        Some("b")
    );
}

#[test]
fn anonymous_callers_are_limited_per_address_behind_trusted_proxies_only() {
    let a = Access::new(AccessConfig {
        anon_rate_per_sec: Some(1),
        anon_burst: Some(1),
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..config()
    })
    .unwrap();
    let proxy: IpAddr = "10.0.1.5".parse().unwrap();
    let forwarded = |chain: &str| {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", chain.parse().unwrap());
        h
    };
    // Through the trusted proxy: the client is the nearest untrusted address.
    a.admit(&forwarded("198.51.100.7, 10.0.2.2"), Some(proxy))
        .unwrap();
    assert_eq!(
        a.admit(&forwarded("198.51.100.7"), Some(proxy))
            .unwrap_err()
            .status,
        429,
        "the same client through the proxy"
    );
    a.admit(&forwarded("198.51.100.8"), Some(proxy)).unwrap();
    // A direct caller's X-Forwarded-For is not believed: it is limited as itself.
    let direct: IpAddr = "203.0.113.9".parse().unwrap();
    a.admit(&forwarded("198.51.100.99"), Some(direct)).unwrap();
    assert_eq!(
        a.admit(&forwarded("198.51.100.100"), Some(direct))
            .unwrap_err()
            .status,
        429
    );
}

#[test]
fn the_keys_file_is_reloaded_and_a_bad_file_keeps_the_keys_in_force() {
    let dir = std::env::temp_dir().join(format!("gateway-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.json");
    std::fs::write(&path, keys_json(&[("a", KEY_A, 1, 1), ("b", KEY_B, 5, 5)])).unwrap();
    let a = Access::new(AccessConfig {
        api_keys_file: Some(path.clone()),
        ..config()
    })
    .unwrap();
    a.admit(&with_key(KEY_A), None).unwrap();
    // Unchanged keys keep their buckets across a reload: a is still empty.
    std::fs::write(&path, keys_json(&[("a", KEY_A, 1, 1)])).unwrap();
    a.reload();
    assert_eq!(a.admit(&with_key(KEY_A), None).unwrap_err().status, 429);
    assert_eq!(
        a.admit(&with_key(KEY_B), None).unwrap_err().status,
        401,
        "b revoked"
    );
    std::fs::write(&path, "{ not json").unwrap();
    a.reload();
    assert_eq!(a.admit(&with_key(KEY_B), None).unwrap_err().status, 401);
    assert!(a.keys_required(), "still closed");
    std::fs::remove_file(&path).unwrap();
    a.reload();
    assert!(a.keys_required());
    // A file that is gone revokes every key (until it is back).
    let a = Access::new(AccessConfig {
        api_keys_file: Some(path.clone()),
        ..config()
    });
    assert!(
        a.is_err(),
        "a keys file that is missing at start is an error"
    );
    std::fs::write(&path, keys_json(&[("b", KEY_B, 5, 5)])).unwrap();
    let a = Access::new(AccessConfig {
        api_keys_file: Some(path.clone()),
        ..config()
    })
    .unwrap();
    a.admit(&with_key(KEY_B), None).unwrap();
    std::fs::remove_file(&path).unwrap();
    a.reload();
    assert_eq!(
        a.admit(&with_key(KEY_B), None).unwrap_err().status,
        401,
        "revoked"
    );
    std::fs::write(&path, keys_json(&[("b", KEY_B, 5, 5)])).unwrap();
    a.reload();
    a.admit(&with_key(KEY_B), None).expect("back with the file");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn keys_set_but_empty_are_an_error_not_an_open_api() {
    for blank in ["", "  "] {
        let e = Access::new(AccessConfig {
            api_keys: Some(blank.into()),
            ..config()
        })
        .err()
        .expect("refused");
        assert!(e.to_string().contains("set but empty"), "{e}");
    }
}

#[test]
fn requests_without_a_valid_key_are_limited_per_address() {
    let a = Access::new(AccessConfig {
        api_keys: Some(keys_json(&[("a", KEY_A, 100, 100)]).as_str().into()),
        unauthorized_rate_per_sec: 1,
        unauthorized_burst: 3,
        ..config()
    })
    .unwrap();
    let guesser: IpAddr = "198.51.100.7".parse().unwrap();
    let statuses: Vec<u16> = (0..5)
        .map(|_| {
            a.admit(&with_key("guess"), Some(guesser))
                .unwrap_err()
                .status
        })
        .collect();
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    let other: IpAddr = "198.51.100.8".parse().unwrap();
    assert_eq!(
        a.admit(&HeaderMap::new(), Some(other)).unwrap_err().status,
        401,
        "per address"
    );
    a.admit(&with_key(KEY_A), Some(guesser))
        .expect("a valid key is still admitted");
}

#[test]
fn the_configuration_prints_without_its_secrets() {
    let c = AccessConfig {
        api_keys: Some("{\"keys\": [\"hunter2\"]}".into()),
        ..config()
    };
    let printed = format!("{c:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
}

#[test]
fn invalid_key_documents_are_refused_at_start() {
    for bad in [
        r#"{"keys":[{"name":"x","sha256":"abc"}]}"#,
        r#"{"keys":[{"name":"","sha256":"00"}]}"#,
        r#"{"keys":[{"name":"x","sha256":"0000000000000000000000000000000000000000000000000000000000000000","per_second":0}]}"#,
        r#"{"kees":[]}"#,
    ] {
        assert!(
            Access::new(AccessConfig {
                api_keys: Some(bad.into()),
                ..config()
            })
            .is_err(),
            "{bad}"
        );
    }
}
