//! Keeping secrets out of everything mongokeep prints or stores.
//!
//! Two defences: URIs are redacted where they are formatted ([`redact_uri`]), and every
//! secret the process learns (a MongoDB password, an AWS secret key) is registered so that
//! the final error text and every log line are scrubbed of it ([`scrub`]) even if a
//! library underneath quoted it.

use std::sync::{Mutex, OnceLock};

fn registry() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remember a secret so that [`scrub`] removes it from any text. Short strings are
/// ignored: scrubbing a 1- or 2-character password would mangle every message.
pub fn register_secret(secret: &str) {
    if secret.len() < 3 {
        return;
    }
    let mut s = registry().lock().unwrap_or_else(|e| e.into_inner());
    if !s.iter().any(|x| x == secret) {
        s.push(secret.to_string());
        // Longest first, so a secret that contains another is replaced whole.
        s.sort_by_key(|x| std::cmp::Reverse(x.len()));
    }
}

/// Replace every registered secret (raw or percent-encoded) in `text` with `***`.
pub fn scrub(text: &str) -> String {
    let secrets = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
        let enc = percent_encode_userinfo(s);
        if enc != *s && out.contains(enc.as_str()) {
            out = out.replace(enc.as_str(), "***");
        }
    }
    out
}

fn percent_encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A MongoDB connection string with the password replaced by `***` and the query's
/// secret-bearing options removed. The user name and hosts stay: they help find a
/// misconfiguration and are not secret.
pub fn redact_uri(uri: &str) -> String {
    let (scheme, rest) = match uri.split_once("://") {
        Some((s, r)) => (s, r),
        None => return "<invalid URI>".to_string(),
    };
    let (userinfo, after) = split_userinfo(rest);
    let authority_end = after.find('/').unwrap_or(after.len());
    let (hosts, path) = after.split_at(authority_end);
    let authority = match userinfo {
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => hosts.to_string(),
    };
    let path = match path.split_once('?') {
        Some((p, q)) => {
            let kept: Vec<String> = q
                .split('&')
                .map(|kv| {
                    let key = kv.split('=').next().unwrap_or("");
                    let lower = key.to_ascii_lowercase();
                    if lower.contains("password")
                        || lower.contains("secret")
                        || lower == "authmechanismproperties"
                    {
                        format!("{key}=***")
                    } else {
                        kv.to_string()
                    }
                })
                .collect();
            format!("{p}?{}", kept.join("&"))
        }
        None => path.to_string(),
    };
    format!("{scheme}://{authority}{path}")
}

/// The userinfo of what follows `scheme://`, and the rest after its `@`. It ends at the
/// last `@` before the query: a password must percent-encode `@`, `/`, `:` and `?`, but
/// generated ones often hold a raw `/` (base64) or `@`, and whatever the driver makes of
/// such a URI, its password must not be printed.
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    // The later of the last '@' before the first '/' and the last '@' before the first
    // '?': a raw '?' in a password hides the '@' from the second, a raw '/' from the first.
    let before = |c: char| &rest[..rest.find(c).unwrap_or(rest.len())];
    match before('/').rfind('@').max(before('?').rfind('@')) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    }
}

/// The password of a MongoDB URI, percent-decoded, if it has one.
pub fn uri_password(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let (_, pw) = split_userinfo(rest).0?.split_once(':')?;
    Some(percent_decode(pw))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_keeps_user_and_hosts() {
        assert_eq!(
            redact_uri("mongodb://app:s3cr%40t@db1:27017,db2:27017/shop?replicaSet=rs0"),
            "mongodb://app:***@db1:27017,db2:27017/shop?replicaSet=rs0"
        );
        assert_eq!(
            redact_uri("mongodb+srv://app:pw@cluster.example.net/"),
            "mongodb+srv://app:***@cluster.example.net/"
        );
        assert_eq!(
            redact_uri("mongodb://127.0.0.1:27017/"),
            "mongodb://127.0.0.1:27017/"
        );
    }

    #[test]
    fn a_password_with_a_raw_slash_at_or_question_mark_is_still_hidden() {
        for (uri, pw) in [
            (
                "mongodb://bk:Ab/cdSecretXYZ@127.0.0.1:28777/",
                "Ab/cdSecretXYZ",
            ),
            ("mongodb://bk:a/b@c@h1,h2/db?replicaSet=rs0", "a/b@c"),
            ("mongodb://bk:p/w@h/db?appName=x@y", "p/w"),
            ("mongodb://bk:p?w@h/db", "p?w"),
        ] {
            let r = redact_uri(uri);
            assert!(!r.contains(pw), "{r}");
            assert!(r.starts_with("mongodb://bk:***@"), "{r}");
            assert_eq!(uri_password(uri).as_deref(), Some(pw), "{uri}");
        }
        // An '@' only in the query is not userinfo.
        assert_eq!(
            redact_uri("mongodb://h/db?appName=x@y"),
            "mongodb://h/db?appName=x@y"
        );
        assert_eq!(uri_password("mongodb://h/db?appName=x@y"), None);
    }

    #[test]
    fn redacts_secret_query_options() {
        let r = redact_uri("mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:abc&tls=true");
        assert!(!r.contains("abc"), "{r}");
        assert!(r.contains("tls=true"));
    }

    #[test]
    fn password_is_decoded_and_scrubbed_raw_and_encoded() {
        let uri = "mongodb://app:p%40ss%2Fword@h/";
        assert_eq!(uri_password(uri).as_deref(), Some("p@ss/word"));
        register_secret("p@ss/word");
        assert_eq!(
            scrub("failed for p@ss/word and p%40ss%2Fword"),
            "failed for *** and ***"
        );
    }

    #[test]
    fn no_password_no_secret() {
        assert_eq!(uri_password("mongodb://app@h/"), None);
        assert_eq!(uri_password("mongodb://h/"), None);
    }
}
