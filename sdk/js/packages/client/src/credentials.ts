// Credentials: a fixed token or API key, or a callback that fetches a fresh token (from the
// application's backend, which mints them with `POST /v1/tokens`). A token's expiry is read
// from its `exp` claim so the client can renew it over the open connection before it ends.

import { BEARER_SUBPROTOCOL_PREFIX, SUBPROTOCOL } from "./protocol.js";

/** A token or API key, or a function returning a fresh token (called on every connect and renewal). */
export type TokenSource = string | (() => string | Promise<string>);

/** Renew this long before expiry, at most (a third of the token's life for short ones). */
export const RENEW_BEFORE_MS = 60_000;

/** The `exp` claim of a JWT, Unix seconds; `undefined` for an API key or an opaque token. */
export function expiryOf(token: string): number | undefined {
  const parts = token.split(".");
  if (parts.length !== 3 || parts[1] === undefined) return undefined;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const claims = JSON.parse(atob(padded)) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}

/** When to renew a token expiring at `expSeconds`, received at `nowMs`. */
export function renewAt(expSeconds: number, nowMs: number): number {
  const expMs = expSeconds * 1000;
  const life = Math.max(0, expMs - nowMs);
  return expMs - Math.min(RENEW_BEFORE_MS, life / 3);
}

/** RFC 7230 token characters: what a subprotocol may hold. A JWT always fits; `name:secret` does not. */
const SUBPROTOCOL_SAFE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

/**
 * The URL and subprotocols of an upgrade carrying `credential`: as the `mooring.bearer.`
 * subprotocol when it fits one (browsers can set no header on a WebSocket, and this keeps it
 * out of URLs and logs), as `?token=` otherwise.
 */
export function upgradeOf(url: string, credential: string | undefined): { url: string; protocols: string[] } {
  if (credential === undefined) return { url, protocols: [SUBPROTOCOL] };
  if (SUBPROTOCOL_SAFE.test(credential)) {
    return { url, protocols: [SUBPROTOCOL, BEARER_SUBPROTOCOL_PREFIX + credential] };
  }
  const u = new URL(url);
  u.searchParams.set("token", credential);
  return { url: u.toString(), protocols: [SUBPROTOCOL] };
}
