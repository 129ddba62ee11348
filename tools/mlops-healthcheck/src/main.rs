//! `mlops-healthcheck [URL]`: GETs `URL` (default: `$HEALTHCHECK_URL`) and exits 0 on a 2xx
//! answer, 1 otherwise, printing why. Plain `http://host:port/path` only: it probes a
//! service's own admin port from inside its container, where images carry no curl or shell.
//! Std only, so it adds ~400 KB to the image.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("HEALTHCHECK_URL").ok());
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        eprintln!("usage: mlops-healthcheck http://host:port/path (or set HEALTHCHECK_URL)");
        return ExitCode::from(2);
    };
    match probe(&url) {
        Ok(status) if (200..300).contains(&status) => {
            println!("{url}: {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("{url}: HTTP {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Splits `http://authority/path` into (authority, path).
fn parse(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported, got {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    Ok((authority, path))
}

/// The status code of `GET url`, with a connect and read timeout.
fn probe(url: &str) -> Result<u16, String> {
    let (authority, path) = parse(url)?;
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to nothing"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    // One write: `write!` on the socket would send each formatted piece as its own segment.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: mlops-healthcheck\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 || head.len() > 8192 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_code(&head)
        .ok_or_else(|| format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&head)))
}

/// The code from an HTTP/1.x status line (`HTTP/1.1 200 OK`).
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse("http://127.0.0.1:9101/healthz"),
            Ok(("127.0.0.1:9101", "/healthz"))
        );
        assert_eq!(parse("http://gateway:8080"), Ok(("gateway:8080", "/")));
        assert!(parse("https://x/").is_err());
        assert!(parse("http:///x").is_err());
    }

    #[test]
    fn reads_status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    /// A one-shot server answering `answer`, on port 0; returns its URL.
    fn serve_once(answer: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/readyz", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // Read the whole request first: closing with unread bytes would reset the
            // connection under the client.
            let (mut req, mut buf) = (Vec::new(), [0u8; 1024]);
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            s.write_all(answer.as_bytes()).unwrap();
        });
        url
    }

    #[test]
    fn probes_a_real_socket() {
        assert_eq!(
            probe(&serve_once(
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            )),
            Ok(200)
        );
        assert_eq!(
            probe(&serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n")),
            Ok(503)
        );
        // A port nobody listens on: bind, learn the port, close.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(
            probe(&format!("http://127.0.0.1:{port}/healthz"))
                .unwrap_err()
                .starts_with("connect")
        );
    }
}
