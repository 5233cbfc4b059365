// The NTS-KE service (RFC 8915 §4): TLS 1.3 on TCP, one request, cookies, close_notify.

import type { AccessList } from "../access.ts";
import { FairShares } from "../fairness.ts";
import { Epoll, EPOLLIN } from "../../lib/epoll.ts";
import { errno, type Libc, loadLibc } from "../../lib/libc.ts";
import type { Logger } from "../../lib/log.ts";
import { clientHost, delay } from "../../lib/net.ts";
import { concernsOneConnection } from "../tcp/accept_errors.ts";
import {
  ERRNO,
  errnoError,
  listenTcp,
  SHUT_RDWR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCKADDR_SLOT,
  sockaddrHost,
} from "../../lib/sockets.ts";
import { type RateLimiter, RateVerdict } from "../udp/rate_limit.ts";
import { PoolSlots, SESSION_DATA, SocketWaits } from "./session_io.ts";
import { COOKIE_LENGTH, type CookieKeys, SESSION_KEYS_LENGTH } from "../../nts/cookies.ts";
import { describeTlsError, type TlsCredentials, TlsSession } from "../../nts/gnutls.ts";
import { OncePerAddress } from "./once_per_address.ts";
import {
  AEAD_AES_SIV_CMAC_256,
  MAX_REQUEST_LENGTH,
  type NtpDestination,
  readKeRequest,
  writeKeAnswer,
  writeKeError,
} from "../../nts/ke_records.ts";

/** Cookies given in one key establishment, as chrony gives and keeps (RFC 8915 suggests 8). */
export const KE_COOKIES = 8;
/** How long one key establishment may take, end to end: chrony's 2 s. */
export const KE_TIMEOUT_MS = 2000;
/**
 * Key establishments served at once (chrony's default too); more are refused before TLS,
 * or make room by fairness. A session holds no thread while its client takes its time.
 */
export const MAX_KE_SESSIONS = 100;
/**
 * Handshake calls on Deno's blocking pool at once. The pool has 32 threads, shared with
 * every engine's wait; a burst of handshakes past this waits its turn here instead.
 */
const KE_POOL_CALLS = 8;

/** How long accepting first pauses when it fails (descriptors run out), doubling up to the most. */
const FIRST_BACKOFF_MS = 5;
const MAX_BACKOFF_MS = 1000;

/** How key establishments end, as the metrics label them. */
export type KeResult = "ok" | "bad_request" | "tls_error" | "timeout" | "refused" | "made_room";

/** What the KE service counts. */
export interface KeCounters {
  /** Sessions that ended with cookies given. */
  keOk: number;
  /** Sessions answered with an Error record. */
  keBadRequest: number;
  /** Sessions that failed in TLS, or closed before their request. */
  keTlsError: number;
  /** Sessions cut off at {@linkcode KE_TIMEOUT_MS}. */
  keTimeout: number;
  /** Refused before TLS: denied, over the per-address rate, or at {@linkcode MAX_KE_SESSIONS}. */
  keRefused: number;
  /** Sessions cut off before their answer, to make room for a newcomer (fairness). */
  keMadeRoom: number;
  /** Gauge: sessions in progress. */
  keSessions: number;
  /** Cookies given, 8 a session. */
  ntsCookiesIssued: number;
}

const RESULT_COUNTER = {
  ok: "keOk",
  bad_request: "keBadRequest",
  tls_error: "keTlsError",
  timeout: "keTimeout",
  refused: "keRefused",
  made_room: "keMadeRoom",
} as const satisfies Record<KeResult, keyof KeCounters>;

/** What the KE service needs of the server. */
export interface KeHost {
  readonly stats: KeCounters;
  readonly logger: Logger;
  readonly access: AccessList;
  /**
   * Whether a newcomer finding every session busy may have the oldest session of the
   * address holding the most cut off for it (per-address max-min fairness, as for TCP).
   */
  readonly fairness: boolean;
  /** Key establishments per client address; null = no limit. */
  /** Read at each use, as are `fairness` and `destination`: a reload may change them. */
  readonly limiter: RateLimiter | null;
  readonly keys: CookieKeys;
  /** Where the answer sends NTP. */
  readonly destination: NtpDestination;
  /** How long one key establishment may take, in ms. @default {KE_TIMEOUT_MS} */
  readonly timeoutMs?: number;
  /** The certificate in force now (it may be replaced while the service runs). */
  credentials(): TlsCredentials;
}

/**
 * Serves NTS-KE on a TCP listener of its own: one epoll wait on Deno's pool for new
 * connections and for every session's socket, non-blocking. Each session's handshake runs
 * on the pool ({@linkcode KE_POOL_CALLS} at once), its record calls (the request, the
 * answer, `close_notify`) on the event loop, and none of them waits for a client (see
 * `nts/gnutls.ts`). So handshakes cost the SNTP service only their bookkeeping, and no
 * client can block the event loop or hold a thread. Each session is bounded by
 * {@linkcode KE_TIMEOUT_MS} (`timeoutMs`): at the deadline its socket is shut down and
 * its wait ended.
 */
export class NtsKeService {
  readonly port: number;
  readonly done: Promise<void>;
  readonly #c: Libc;
  readonly #host: KeHost;
  readonly #listenFd: number;
  readonly #epoll: Epoll;
  readonly #sessions = new Set<Promise<void>>();
  /** The sockets of the sessions in progress, shut down to end them when the service closes. */
  readonly #open = new Set<number>();
  /** The sessions counted against {@linkcode MAX_KE_SESSIONS}, by socket, per fairness group. */
  readonly #shares = new FairShares();
  /** Which clients that refused the certificate were logged. */
  readonly #refusals = new OncePerAddress();
  /** The sockets of sessions cut off to make room. */
  readonly #madeRoom = new Set<number>();
  readonly #address = new Uint8Array(SOCKADDR_SLOT);
  readonly #addressLength = new Uint32Array(1);
  readonly #closing = new AbortController();
  readonly #waits: SocketWaits;
  readonly #calls = new PoolSlots(KE_POOL_CALLS);

  /** Listens on `hostname` (an IP address) and `port`; throws as `Deno.listen` would. */
  constructor(hostname: string, port: number, host: KeHost) {
    this.#c = loadLibc();
    this.#host = host;
    const listener = listenTcp(this.#c, hostname, port, false);
    this.#listenFd = listener.fd;
    this.port = listener.port;
    try {
      this.#epoll = new Epoll(this.#c);
    } catch (error) {
      this.#c.close(listener.fd);
      throw error;
    }
    this.#epoll.add(this.#listenFd, EPOLLIN, 0);
    this.#waits = new SocketWaits(this.#epoll);
    this.done = this.#serve();
  }

  /** Stops accepting, ends the sessions in progress, and resolves when all is closed. */
  async close(): Promise<void> {
    this.#closing.abort();
    this.#epoll.wake();
    for (const fd of this.#open) this.#c.shutdown(fd, SHUT_RDWR);
    await this.done;
  }

  async #serve(): Promise<void> {
    const c = this.#c;
    const closing = this.#closing.signal;
    let backoff = 0;
    while (!closing.aborted) {
      const ready = await this.#epoll.wait(-1);
      if (closing.aborted) break;
      let listener = false;
      for (let i = 0; i < ready; i++) {
        if (this.#epoll.generation(i) === SESSION_DATA) this.#waits.woke(this.#epoll.fd(i));
        else listener = true;
      }
      if (!listener) continue;
      const failure = this.#acceptAll();
      if (failure === null) {
        backoff = 0;
        continue;
      }
      // Out of descriptors or memory, or a listener that fails every accept (EINVAL): the
      // queue stays ready, so wait before looking again instead of spinning the event
      // loop, as the TCP engines do: 5 ms, doubling to 1 s, one warning per streak.
      if (backoff === 0) {
        this.#host.logger.warn("NTS-KE: cannot accept; backing off", { error: failure.message });
      }
      backoff = Math.min(MAX_BACKOFF_MS, backoff === 0 ? FIRST_BACKOFF_MS : backoff * 2);
      await delay(backoff, closing);
    }
    this.#waits.close();
    await Promise.all(this.#sessions);
    await this.#epoll.close();
    c.close(this.#listenFd);
  }

  /**
   * Accepts until the queue is empty; returns the error when accepting fails for a
   * reason other than the connection being accepted, else null.
   */
  #acceptAll(): Error | null {
    const c = this.#c;
    for (;;) {
      this.#addressLength[0] = SOCKADDR_SLOT;
      const flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
      const fd = c.accept4(this.#listenFd, this.#address, this.#addressLength, flags);
      if (fd < 0) {
        const code = errno(c);
        if (code === ERRNO.EAGAIN) return null;
        const error = errnoError("accept", code);
        if (concernsOneConnection(error)) continue; // that connection died in the queue
        return error;
      }
      const peer = clientHost(sockaddrHost(this.#address, 0));
      const verdict = this.#admit(peer);
      if (verdict !== null) {
        c.close(fd);
        this.#count("refused");
        this.#host.logger.debug("NTS-KE refused", { peer, reason: verdict });
        continue;
      }
      this.#shares.join(fd, peer);
      const session = this.#session(fd, peer);
      this.#sessions.add(session);
      this.#host.stats.keSessions = this.#sessions.size;
      session.finally(() => {
        this.#sessions.delete(session);
        this.#host.stats.keSessions = this.#sessions.size;
      });
    }
  }

  /**
   * Why a new connection is refused before TLS, or null to serve it. With every session
   * busy, the oldest session of the address holding the most is cut off for it when the
   * newcomer would still hold fewer (`FairShares`); it ends as a timed-out one does.
   */
  #admit(peer: string): string | null {
    const host = this.#host;
    if (!host.access.allows(peer)) return "denied";
    const full = this.#shares.size >= MAX_KE_SESSIONS;
    const victim = full && host.fairness ? this.#shares.victimFor(peer) : -1;
    if (full && victim < 0) return "busy";
    if (host.limiter !== null && host.limiter.check(peer) !== RateVerdict.ANSWER) return "rate";
    if (victim >= 0) {
      this.#shares.leave(victim);
      this.#madeRoom.add(victim);
      this.#c.shutdown(victim, SHUT_RDWR);
      this.#waits.cancel(victim);
    }
    return null;
  }

  #count(result: KeResult): void {
    this.#host.stats[RESULT_COUNTER[result]]++;
  }

  /**
   * Logs, at info level, a client that refused the server's certificate (an expired or
   * untrusted one, or a name it did not ask for): once per address, within a budget a
   * minute, since anyone can send the alert. The count is `tls_error`'s.
   */
  #certificateRefused(peer: string, how: string | null): void {
    if (how === null || !this.#refusals.shouldLog(peer)) return;
    this.#host.logger.info("NTS-KE: a client refused the certificate", { peer, how });
  }

  /**
   * One key establishment, counted as soon as its answer is sent (the client may then
   * take its time over `close_notify`), or else when it ends.
   */
  async #session(fd: number, peer: string): Promise<void> {
    const c = this.#c;
    let timedOut = false;
    const deadline = setTimeout(() => {
      timedOut = true;
      c.shutdown(fd, SHUT_RDWR);
      this.#waits.cancel(fd);
    }, this.#host.timeoutMs ?? KE_TIMEOUT_MS);
    this.#open.add(fd);
    let tls: TlsSession | null = null;
    let result: KeResult | null = null;
    let detail = "";
    try {
      if (!this.#waits.watch(fd)) throw new Error("epoll refused the socket");
      tls = new TlsSession(fd, this.#host.credentials(), {
        ready: (write) => this.#waits.ready(fd, write),
        run: (call) => this.#calls.run(call),
      });
      const handshake = await tls.handshake();
      if (handshake < 0) {
        detail = `handshake: ${describeTlsError(handshake)}`;
        this.#certificateRefused(peer, tls.certificateRefusal(handshake));
      } else if (!tls.isNtsKe()) detail = "not TLS 1.3 with ALPN ntske/1";
      else {
        const [answered, why] = await exchange(tls, this.#host);
        detail = why;
        if (answered !== "tls_error") {
          this.#count(result = answered);
          await tls.close();
        }
      }
    } catch (error) {
      detail = error instanceof Error ? error.message : String(error);
      this.#host.logger.error("NTS-KE session failed", { peer, error: detail });
    } finally {
      clearTimeout(deadline);
      this.#open.delete(fd);
      this.#shares.leave(fd);
      tls?.end();
      c.close(fd);
    }
    const cutOff = this.#madeRoom.delete(fd);
    if (result === null) {
      this.#count(result = cutOff ? "made_room" : timedOut ? "timeout" : "tls_error");
    }
    if (this.#host.logger.enabled("debug")) {
      this.#host.logger.debug("NTS-KE", { peer, result, detail: detail || undefined });
    }
  }
}

/** Reads the request and sends the answer: cookies, or an Error record. */
async function exchange(tls: TlsSession, host: KeHost): Promise<[KeResult, string]> {
  const request = new Uint8Array(MAX_REQUEST_LENGTH);
  let length = 0;
  for (;;) {
    const n = await tls.receive(request.subarray(length));
    if (n <= 0) return ["tls_error", n === 0 ? "closed before the request" : `receive: ${n}`];
    length += n;
    const read = readKeRequest(request.subarray(0, length));
    if (read.kind === "incomplete") continue;
    if (read.kind === "error") {
      await tls.send(writeKeError(read.code));
      return ["bad_request", read.reason];
    }
    const keys = new Uint8Array(SESSION_KEYS_LENGTH);
    if (
      !tls.exportKey(AEAD_AES_SIV_CMAC_256, 0, keys.subarray(0, 32)) ||
      !tls.exportKey(AEAD_AES_SIV_CMAC_256, 1, keys.subarray(32))
    ) {
      return ["tls_error", "the TLS exporter failed"];
    }
    const cookies: Uint8Array[] = [];
    for (let i = 0; i < KE_COOKIES; i++) {
      const cookie = new Uint8Array(COOKIE_LENGTH);
      host.keys.seal(keys, cookie, 0);
      cookies.push(cookie);
    }
    keys.fill(0);
    if (!(await tls.send(writeKeAnswer(host.destination, cookies)))) {
      return ["tls_error", "send failed"];
    }
    host.stats.ntsCookiesIssued += KE_COOKIES;
    return ["ok", ""];
  }
}
