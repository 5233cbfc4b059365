// What `--help` and `--version` print, and the command line's own defaults.

import config from "../deno.json" with { type: "json" };
import { LOG_FORMATS, LOG_LEVELS } from "../lib/log.ts";
import { DEFAULTS, ONE_ANSWER_RATE_LIMIT } from "../server/server.ts";
import { DEFAULT_KE_RATE } from "../nts/setup.ts";

/** The program's version, from `deno.json`. */
export const VERSION: string = config.version;

/** The rate limit's burst when `--rate-limit` is given without `--rate-burst` (chrony's). */
export const RATE_DEFAULTS = { burst: 8 } as const;

/** The defaults of the command line's own flags; the server's are {@linkcode DEFAULTS}. */
export const COMMAND_LINE_DEFAULTS = { logLevel: "info", logFormat: "text", workers: 1 } as const;

/** The most workers per CPU: more event loops than CPUs add memory (tens of MB each), not speed. */
export const WORKERS_PER_CPU = 2;

/** The text `--help` prints. */
export const HELP =
  `time-server ${VERSION}: a TCP time server. TIME is answered with "JAM hh:mm:ss", QUIT closes.

Usage: time-server [options]                 run the server
       time-server client [options]          ask a server for the time (see client --help)
       time-server check [options]           check a configuration and print it, with sources
       time-server status --metrics HOST:PORT   sum up a running server from its metrics
       time-server roughtime-keys FILE       make (or read) a Roughtime key; print its public key

Options:
  --config FILE               read these options from a TOML file (/etc/time-server/time-server.toml);
                              options given here override it; SIGHUP reloads it
  --host HOST                 address to listen on (default ${DEFAULTS.hostname}, every IPv4 and IPv6 address)
  -p, --port PORT             TCP port, 0 = any free port (default ${DEFAULTS.port}, or $PORT)
  --tz ZONE                   IANA time zone of the answers, e.g. UTC, Asia/Jakarta (default: local)
  --max-line BYTES            longest request line without CR LF (default ${DEFAULTS.maxLine})
  --idle-timeout SECONDS      close a connection with no request for this long, 0 = never (default ${DEFAULTS.idleTimeout})
  --max-connections N         connections served at once (default ${DEFAULTS.maxConnections}); when full, the
                              connection silent the longest makes room, else one of the address
                              holding the most (per-address fairness), else "ERR server busy"
  --evict-after SECONDS       silence after which a connection may make room when full (default ${DEFAULTS.evictAfter})
  --shutdown-timeout SECONDS  on SIGINT/SIGTERM, wait this long for owed answers (default ${DEFAULTS.shutdownTimeout})
  --log-level LEVEL           ${LOG_LEVELS.join(", ")} (default ${COMMAND_LINE_DEFAULTS.logLevel})
  --log-format FORMAT         ${LOG_FORMATS.join(", ")} (default ${COMMAND_LINE_DEFAULTS.logFormat})
  --max-connections-per-ip N  connections one client address may hold, 0 = no limit (default ${DEFAULTS.maxConnectionsPerIp})
  --no-fairness               when full, never close a busy connection for a newcomer from an
                              address holding fewer (TCP and NTS-KE; IPv6 counts by /64)
  --proxy-protocol            expect a HAProxy PROXY header (v1 or v2) on every connection
  --tcp-engine ENGINE         deno (Deno.listen) or epoll (one epoll loop, Linux, needs FFI for
                              libc; for very many connections) (default ${DEFAULTS.tcpEngine})
  --workers N|auto            event loops sharing the port, Linux only, at most ${WORKERS_PER_CPU} per CPU
                              (default ${COMMAND_LINE_DEFAULTS.workers}; auto = CPUs)
  --metrics HOST:PORT         serve Prometheus metrics at http://HOST:PORT/metrics (default off)

Standard time protocols (each off unless its port is given; 0 = any free port):
  --daytime-port PORT         Daytime (RFC 867) on TCP and UDP: "Wed Nov 25 03:05:47 2026"
  --time-port PORT            Time (RFC 868) on TCP and UDP: seconds since 1900, 4 bytes
  --ntp-port PORT             SNTP (RFC 4330) server on UDP, for ntpdate, chronyd, rdate -n
  --ntp-stratum N             stratum SNTP replies claim, 1-15, reference ID LOCL (default ${DEFAULTS.ntpStratum})
  --ntp-clock SOURCE          what SNTP says of synchronisation: local (always synchronised,
                              as chrony's local stratum) or kernel (adjtimex's state: leap
                              seconds, unsynchronised; Linux, FFI for libc) (default ${DEFAULTS.ntpClock})
  --udp-engine ENGINE         auto, mmsg (batched, Linux, needs FFI for libc) or deno (default ${DEFAULTS.udpEngine})

Network Time Security (RFC 8915; needs --ntp-port, and GnuTLS and Nettle through FFI):
  --nts-ke-port PORT          NTS key establishment on TCP (the standard is 4460); turns NTS on
  --nts-cert FILE             the TLS certificate chain, PEM, leaf first (reloaded when it changes)
  --nts-key FILE              its private key, PEM
  --nts-keys-file FILE        the master key of the cookies, 64 hex digits, mode 0600, made if
                              missing; without it, cookies die with the process (default none)
  --nts-ke-rate N             key establishments per second one address may start, 0 = no
                              limit (default ${DEFAULT_KE_RATE})
  --nts-ntp-server HOST       where NTS-KE sends NTP, when not to the address NTS-KE was reached on
                              (NTS-KE behind a TCP balancer) (default: that address)

Roughtime (RFC 10049: signed time; UDP, one signature per batch of requests):
  --roughtime-port PORT       Roughtime on UDP (2002 is customary); needs --roughtime-key
  --roughtime-key FILE        the long-term Ed25519 key, 64 hex digits, mode 0600, made if
                              missing; time-server roughtime-keys FILE prints its public key

Who is served (every listener):
  --allow CIDR[,CIDR…]        serve only these address ranges (repeatable; default everyone)
  --deny CIDR[,CIDR…]         never serve these ranges, even if allowed (repeatable)
  --rate-limit SECONDS        UDP: a client may average one request per SECONDS (default: SNTP
                              unlimited; Daytime and Time ${ONE_ANSWER_RATE_LIMIT.interval} s, burst ${ONE_ANSWER_RATE_LIMIT.burst})
  --rate-burst N              UDP: requests a client may send at once within the limit (default ${RATE_DEFAULTS.burst})
  --rate-leak N               UDP: answer 1 in 2^N requests over the limit anyway, 0 = none (default ${DEFAULTS.rateLeak})
  --kod                       NTP: tell a client over the limit to slow down (Kiss-o'-Death RATE)
  --max-clients N             UDP: client addresses the rate limit remembers (default ${DEFAULTS.maxClients})
  -h, --help                  print this help and exit
  -V, --version               print the version and exit

Exit codes: 0 stopped by a signal or --help/--version, 1 could not start, 2 bad command line
or config file.`;
