// Delays between reconnect attempts: exponential, capped, with full jitter, so a fleet of
// clients that lost one server does not come back in step.

/** How the client reconnects after losing its connection. */
export interface ReconnectPolicy {
  /** The first delay's ceiling, ms (default 250). */
  initialMs?: number;
  /** The largest delay, ms (default 10,000). */
  maxMs?: number;
  /** Draw each delay between 0 and its ceiling (default true). */
  jitter?: boolean;
  /** Attempts in a row before giving up; unlimited by default. */
  maxAttempts?: number;
}

/** A connection that stayed up this long resets the backoff. */
export const STABLE_CONNECTION_MS = 5_000;

export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  readonly #jitter: boolean;
  readonly #maxAttempts: number;
  #failures = 0;

  constructor(
    policy: ReconnectPolicy = {},
    readonly random: () => number = Math.random,
  ) {
    this.#initial = policy.initialMs ?? 250;
    this.#max = policy.maxMs ?? 10_000;
    this.#jitter = policy.jitter ?? true;
    this.#maxAttempts = policy.maxAttempts ?? Infinity;
  }

  /** Whether another attempt is allowed. */
  mayRetry(): boolean {
    return this.#failures < this.#maxAttempts;
  }

  /** Records a failed attempt and returns the delay before the next one, ms. */
  nextDelay(): number {
    const ceiling = Math.min(this.#max, this.#initial * 2 ** Math.min(this.#failures, 30));
    this.#failures += 1;
    return this.#jitter ? Math.floor(this.random() * (ceiling + 1)) : ceiling;
  }

  /** Records a connection that lasted `livedMs`; a stable one resets the backoff. */
  connectionEnded(livedMs: number): void {
    if (livedMs >= STABLE_CONNECTION_MS) this.#failures = 0;
  }

  failures(): number {
    return this.#failures;
  }
}
