// NTS as the server runs it: the cookie keys, the SNTP side's responder, and the KE service.

import type { AccessList } from "../access.ts";
import type { Logger } from "../../lib/log.ts";
import { RateLimiter } from "../udp/rate_limit.ts";
import type { ServerStats } from "../stats.ts";
import { CertificateStore } from "../../nts/certificate.ts";
import { CookieKeys } from "../../nts/cookies.ts";
import { NtsResponder } from "../../nts/nts_responder.ts";
import { NtsKeService } from "./key_establishment.ts";
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
    const certificate = new CertificateStore(
      options.certFile,
      options.keyFile,
      host.logger,
      host.now,
    );
    try {
      this.#ke = new NtsKeService(hostname, options.kePort, {
        stats: host.stats,
        logger: host.logger,
        access: host.access,
        fairness: host.fairness,
        limiter: options.keRate === 0 ? null : new RateLimiter({
          interval: 1 / options.keRate,
          burst: 2 * options.keRate,
          leak: 0,
          kissOfDeath: false,
          maxClients: 16384,
        }),
        keys: this.#keys,
        destination: { server: options.ntpServer ?? null, port: ntpPort === 123 ? null : ntpPort },
        timeoutMs: options.keTimeout === undefined ? undefined : options.keTimeout * 1000,
        credentials: () => certificate.credentials,
      });
    } catch (error) {
      certificate.close();
      throw error;
    }
    this.#certificate = certificate;
    this.#refresh();
    const seconds = options.certificateCheck ?? CERTIFICATE_CHECK_SECONDS;
    this.#timer = setInterval(() => {
      certificate.check();
      this.#refresh();
    }, seconds * 1000);
    Deno.unrefTimer(this.#timer);
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
