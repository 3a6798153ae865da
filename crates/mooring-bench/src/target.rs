//! Where a scenario sends its requests: a plain-HTTP base URL and the path prefix of streams.

use std::fmt;

use anyhow::{bail, Context as _};
use hyper::Uri;

/// A plain-HTTP server: host, port and the path prefix under which streams are named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
    stream_prefix: String,
}

impl Target {
    /// Parses `http://host[:port][/base]` and joins the base path with `stream_path`
    /// (`/v1/stream/` for every Durable Streams server we know).
    pub fn parse(url: &str, stream_path: &str) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("{url:?}: only plain http:// is supported, not {other}://"),
            None => bail!("{url:?}: the URL needs a scheme, as in http://127.0.0.1:7420"),
        }
        let host = uri
            .host()
            .with_context(|| format!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if uri.query().is_some() {
            bail!("{url:?}: the base URL cannot carry a query");
        }
        let port = uri.port_u16().unwrap_or(80);
        let base = uri.path().trim_end_matches('/');
        let tail = stream_path.trim_matches('/');
        let stream_prefix = if tail.is_empty() {
            format!("{base}/")
        } else {
            format!("{base}/{tail}/")
        };
        Ok(Self {
            host,
            port,
            stream_prefix,
        })
    }

    /// Host name or address to connect to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Value of the `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Request path of the stream called `name`.
    pub fn stream_path(&self, name: &str) -> String {
        format!("{}{name}", self.stream_prefix)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.stream_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_base_and_stream_path() -> anyhow::Result<()> {
        let t = Target::parse("http://127.0.0.1:7420", "/v1/stream/")?;
        assert_eq!(t.host(), "127.0.0.1");
        assert_eq!(t.port(), 7420);
        assert_eq!(t.authority(), "127.0.0.1:7420");
        assert_eq!(t.stream_path("a"), "/v1/stream/a");
        let t = Target::parse("http://localhost/base/", "v1/stream")?;
        assert_eq!(t.port(), 80);
        assert_eq!(t.stream_path("a"), "/base/v1/stream/a");
        let t = Target::parse("http://[::1]:9/", "")?;
        assert_eq!(t.host(), "::1");
        assert_eq!(t.authority(), "[::1]:9");
        assert_eq!(t.stream_path("a"), "/a");
        Ok(())
    }

    #[test]
    fn refuses_what_it_cannot_speak() {
        assert!(Target::parse("https://127.0.0.1:1", "/").is_err());
        assert!(Target::parse("127.0.0.1:7420", "/").is_err());
        assert!(Target::parse("http://h:1/?q=1", "/").is_err());
        assert!(Target::parse("not a url", "/").is_err());
    }
}
