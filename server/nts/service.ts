// NTS as the server runs it: the cookie keys, the SNTP side's responder, and the KE service.

import type { AccessList } from "../access.ts";
import type { Logger } from "../../lib/log.ts";
import { RateLimiter, type RateLimitOptions } from "../udp/rate_limit.ts";
import type { ServerStats } from "../stats.ts";
import { CertificateStore } from "../../nts/certificate.ts";
import { CookieKeys } from "../../nts/cookies.ts";
import { NtsResponder } from "../../nts/nts_responder.ts";
import { type KeHost, NtsKeService } from "./key_establishment.ts";
import type { NtsOptions } from "../server_options.ts";

/** What NTS needs of the server. */
export interface NtsHost {
  readonly stats: ServerStats;
  readonly logger: Logger;
  readonly access: AccessList;
  /** Whether NTS-KE's sessions are shared fairly when all are busy (`ServerOptions.fairness`). */
  readonly fairness: boolean;
  /** Wall clock, ms since the epoch (cookie key periods, certificate expiry). */
  readonly now: () => number;
}

/** A type whose fields may be set. */
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** NTS-KE's per-address limits at `keRate` establishments a second, in bursts of twice that. */
function keLimits(keRate: number): RateLimitOptions {
  return {
    interval: 1 / keRate,
    burst: 2 * keRate,
    leak: 0,
    kissOfDeath: false,
    maxClients: 16384,
  };
}

/** NTS-KE's per-address limiter; null for no limit (`keRate` 0). */
function keLimiter(keRate: number): RateLimiter | null {
  return keRate === 0 ? null : new RateLimiter(keLimits(keRate));
}

/** How often the certificate files are looked at, by default. */
const CERTIFICATE_CHECK_SECONDS = 10;

/**
 * NTS on one server: the {@linkcode NtsResponder} that the SNTP service (either UDP
 * engine) calls, and, where `ke` is on, the KE service with its certificate.
 */
export class NtsService {
  readonly responder: NtsResponder;
  readonly #keys: CookieKeys;
  readonly #options: NtsOptions;
  readonly #host: NtsHost;
  #certificate: CertificateStore | null = null;
  #ke: NtsKeService | null = null;
  /** What KE reads at each use; a reload changes it. */
  #keHost: Mutable<KeHost> | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;

  constructor(options: NtsOptions, host: NtsHost) {
    this.#options = options;
    this.#host = host;
    this.#keys = new CookieKeys(options.masterKey, host.now);
    this.responder = new NtsResponder(this.#keys, host.stats);
  }

  /**
   * Starts NTS-KE on `hostname` where this server runs it, its answers sending NTP to
   * `ntpPort`; throws as a listener would, or saying what is wrong with the certificate.
   */
  listen(hostname: string, ntpPort: number): void {
    const options = this.#options, host = this.#host;
    if (options.ke === false) return;
    const certificate = this.#certificate = new CertificateStore(
      options.certFile,
      options.keyFile,
      host.logger,
      host.now,
    );
    const keHost = this.#keHost = {
      stats: host.stats,
      logger: host.logger,
      access: host.access,
      fairness: host.fairness,
      limiter: keLimiter(options.keRate),
      keys: this.#keys,
      destination: { server: options.ntpServer ?? null, port: ntpPort === 123 ? null : ntpPort },
      timeoutMs: options.keTimeout === undefined ? undefined : options.keTimeout * 1000,
      credentials: () => this.#certificate!.credentials,
    };
    try {
      this.#ke = new NtsKeService(hostname, options.kePort, keHost);
    } catch (error) {
      certificate.close();
      this.#certificate = null;
      throw error;
    }
    this.#refresh();
    const seconds = options.certificateCheck ?? CERTIFICATE_CHECK_SECONDS;
    this.#timer = setInterval(() => {
      this.#certificate?.check();
      this.#refresh();
    }, seconds * 1000);
    Deno.unrefTimer(this.#timer);
  }

  /**
   * Takes new settings while serving (a reload): the KE rate, where answers send NTP,
   * fairness, and the certificate, loaded anew when its files are others or have
   * changed. A certificate that does not load throws before anything changes; the one
   * in force stays. Sessions in progress finish with the certificate they began with.
   */
  reconfigure(options: NtsOptions, fairness: boolean): void {
    const keHost = this.#keHost;
    const certificate = this.#certificate;
    if (keHost === null || certificate === null) return;
    if (certificate.files[0] !== options.certFile || certificate.files[1] !== options.keyFile) {
      const host = this.#host;
      this.#certificate = new CertificateStore(
        options.certFile,
        options.keyFile,
        host.logger,
        host.now,
      );
      certificate.close();
      host.logger.info("NTS certificate loaded", { cert: options.certFile });
    } else certificate.check();
    keHost.fairness = fairness;
    keHost.destination = { ...keHost.destination, server: options.ntpServer ?? null };
    if (keHost.limiter !== null && options.keRate !== 0) {
      keHost.limiter.configure(keLimits(options.keRate));
    } else keHost.limiter = keLimiter(options.keRate);
    this.#refresh();
  }

  /** The KE port bound, or null where this server does not run KE. */
  get kePort(): number | null {
    return this.#ke?.port ?? null;
  }

  /** Brings the gauges up to date: key rotations, the certificate's expiry. */
  #refresh(): void {
    const stats = this.#host.stats;
    stats.ntsKeyRotations = this.#keys.rotations;
    if (this.#certificate !== null) {
      stats.ntsCertificateExpiry = Math.floor(this.#certificate.notAfter / 1000);
    }
  }

  /** Stops KE (sessions in progress are shut down at once) and the certificate checks. */
  async close(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    await this.#ke?.close();
    this.#certificate?.close();
  }
}
