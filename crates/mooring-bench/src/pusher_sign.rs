//! Signing requests to the HTTP API of a Pusher server (Pusher Channels, Sockudo, Soketi).
//!
//! The server authenticates a request by its query: `auth_key`, `auth_timestamp`,
//! `auth_version=1.0`, `body_md5` (the hex MD5 of a non-empty body), and `auth_signature`, the
//! hex HMAC-SHA256, keyed by the app's secret, of `METHOD\nPATH\nQUERY` where QUERY is the
//! other parameters sorted by name and joined as `name=value&…`, unescaped.

use anyhow::{bail, Context as _};
use hmac::{Hmac, Mac as _};
use md5::{Digest as _, Md5};
use sha2::Sha256;

/// An app of a Pusher server: its id (in API paths), key (public) and secret (signs).
#[derive(Clone)]
pub struct Credentials {
    /// The app id.
    pub app_id: String,
    /// The app key: subscribers connect to `/app/{key}`.
    pub key: String,
    /// The app secret.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs and error messages.
        f.debug_struct("Credentials")
            .field("app_id", &self.app_id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Checks that the id and key can go into a path and a query as they are: the signature
    /// covers them unescaped, so a character that needs escaping would be signed one way and
    /// read another.
    pub fn new(app_id: String, key: String, secret: String) -> anyhow::Result<Self> {
        for (what, value) in [("app id", &app_id), ("key", &key)] {
            let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if value.is_empty() || !value.chars().all(plain) {
                bail!("the Pusher {what} {value:?} must be letters, digits, '-', '_' or '.'");
            }
        }
        if secret.is_empty() {
            bail!("the Pusher app secret is empty");
        }
        Ok(Self {
            app_id,
            key,
            secret,
        })
    }

    /// The path and signed query of `method path` carrying `body`, signed at `timestamp`
    /// (seconds since the Unix epoch; the server refuses one more than ten minutes off).
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        timestamp: u64,
    ) -> anyhow::Result<String> {
        let mut query = format!(
            "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0",
            self.key
        );
        if !body.is_empty() {
            // body_md5 sorts after auth_version, so appending keeps the parameters in order.
            query.push_str("&body_md5=");
            query.push_str(&hex::encode(Md5::digest(body)));
        }
        let signed = format!("{}\n{path}\n{query}", method.to_ascii_uppercase());
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes())
            .context("keying HMAC-SHA256 with the app secret")?;
        mac.update(signed.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        Ok(format!("{path}?{query}&auth_signature={signature}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Credentials {
        Credentials::new(
            "3".into(),
            "278d425bdf160c739803".into(),
            "7ad3773142a6692b25b8".into(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The worked example of Pusher's HTTP API reference. The expected signature was computed
    /// apart from this code:
    /// `printf 'POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f' | openssl dgst -sha256 -hmac 7ad3773142a6692b25b8`
    /// (and the MD5 with `md5sum` of the body).
    #[test]
    fn signs_the_reference_example() -> anyhow::Result<()> {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let url = example().sign("POST", "/apps/3/events", body, 1_353_088_179)?;
        assert_eq!(
            url,
            "/apps/3/events?auth_key=278d425bdf160c739803&auth_timestamp=1353088179\
             &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        Ok(())
    }

    #[test]
    fn the_signature_covers_the_body_the_path_and_the_time() -> anyhow::Result<()> {
        let c = example();
        let base = c.sign("POST", "/apps/3/events", b"{}", 1)?;
        assert_ne!(base, c.sign("POST", "/apps/3/events", b"{ }", 1)?);
        assert_ne!(base, c.sign("POST", "/apps/3/batch_events", b"{}", 1)?);
        assert_ne!(base, c.sign("POST", "/apps/3/events", b"{}", 2)?);
        let other = Credentials::new("3".into(), c.key.clone(), "another".into())?;
        assert_ne!(base, other.sign("POST", "/apps/3/events", b"{}", 1)?);
        Ok(())
    }

    #[test]
    fn an_empty_body_has_no_md5() -> anyhow::Result<()> {
        let url = example().sign("get", "/apps/3/channels", b"", 1)?;
        assert!(!url.contains("body_md5"));
        assert!(url.starts_with("/apps/3/channels?auth_key="));
        Ok(())
    }

    #[test]
    fn names_that_would_need_escaping_are_refused() {
        assert!(Credentials::new("a b".into(), "k".into(), "s".into()).is_err());
        assert!(Credentials::new("1".into(), "k&x=y".into(), "s".into()).is_err());
        assert!(Credentials::new("1".into(), "k".into(), String::new()).is_err());
        let c = Credentials::new("1".into(), "k".into(), "hidden".into());
        assert!(c.is_ok_and(|c| !format!("{c:?}").contains("hidden")));
    }
}
