//! `mooring token`: mint an HS256 token on the command line.

use anyhow::Context;
use mooring_core::auth::Capabilities;
use mooring_core::clock::{Clock, SystemClock};

use crate::cli::TokenArgs;

pub(crate) fn run(args: TokenArgs) -> anyhow::Result<()> {
    let mut caps = Capabilities::default();
    for cap in &args.caps {
        caps.add_text(cap)
            .with_context(|| format!("reading --cap {cap:?}"))?;
    }
    let (token, _) = mooring_server::auth::jwt::mint_hs256(
        args.secret.as_bytes(),
        &args.client_id,
        &caps,
        args.ttl,
        SystemClock.now_ms(),
    )
    .context("minting the token")?;
    println!("{token}");
    Ok(())
}
