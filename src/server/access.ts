// Who may talk to the server, checked before anything else in a request (as Ollama does against DNS
// rebinding, where a web page makes the browser send requests to a name that now resolves to us):
//   Host    while the server listens on a loopback address, the Host header must name it
//           (localhost, 127.0.0.1, [::1] or the bound address, with the bound port). Listening on
//           any other address (--host 0.0.0.0, a LAN address) means clients reach us by names we
//           cannot know (a LAN address, the machine's name, a reverse proxy's name), so Host is not
//           checked there, like Ollama; the Origin rule and the API key still apply.
//   Origin  a request without Origin (curl, SDKs, servers) is not a browser page's: allowed. With
//           one, it must be a same-host origin (http://localhost:PORT, http://127.0.0.1:PORT,
//           http://[::1]:PORT, http://BOUND:PORT: pages this server itself would serve) or be listed
//           in allowedOrigins ('*' allows every origin). Browsers send Origin with every POST, even
//           same-origin ones, so a rebound page cannot start a generation.
//   CORS    Access-Control-* headers only for an allowed Origin; an OPTIONS preflight from one is
//           answered 204, from any other origin 403.
import type * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApiError } from './errors.js';

const CORS_HEADERS = 'Authorization, Content-Type';
/** Seconds a browser may cache a preflight answer. */
const CORS_MAX_AGE = '600';

/** An origin as browsers serialize it: scheme://host[:port], lower case, no default port, no path. */
const ORIGIN_RE = /^([a-z][a-z0-9+.-]*):\/\/([^/?#\s@]+)$/;
/** A comma list of header names (RFC 9110 tokens), as Access-Control-Request-Headers carries. */
const HEADER_LIST_RE = /^[!#$%&'*+.^_`|~0-9a-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9a-z-]+)*$/i;

/**
 * One allowed origin in the form browsers send: lower case, trailing slash and the scheme's default
 * port removed. Returns null for anything that is not an origin.
 */
export function normalizeOrigin(origin: string): string | null {
  let o = origin.trim().toLowerCase();
  if (o.endsWith('/')) o = o.slice(0, -1);
  const m = ORIGIN_RE.exec(o);
  if (!m) return null;
  const [, scheme, hostPort] = m;
  if (scheme === 'http' && hostPort.endsWith(':80')) return `${scheme}://${hostPort.slice(0, -3)}`;
  if (scheme === 'https' && hostPort.endsWith(':443')) return `${scheme}://${hostPort.slice(0, -4)}`;
  return o;
}

/**
 * Checks and normalizes the allowedOrigins list: each entry '*' or an origin such as
 * http://localhost:3000 (no path). `name` names the option or flag in the error.
 */
export function parseAllowedOrigins(list: readonly string[], name = 'allowedOrigins'): string[] {
  if (!Array.isArray(list)) throw new TypeError(`${name} must be a list of origins, got ${typeof list}`);
  return list.map((entry, i) => {
    if (typeof entry !== 'string') throw new TypeError(`${name}[${i}] must be a string, got ${typeof entry}`);
    if (entry.trim() === '*') return '*';
    const o = normalizeOrigin(entry);
    if (o === null)
      throw new TypeError(
        `${name}[${i}] must be '*' or an origin such as http://localhost:3000 (scheme://host[:port], no path), got ${JSON.stringify(entry)}`,
      );
    return o;
  });
}

export function isLoopbackAddress(address: string): boolean {
  const a = address.toLowerCase();
  if (a === '::1' || a === 'localhost') return true;
  const v4 = a.startsWith('::ffff:') ? a.slice('::ffff:'.length) : a;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

/** How the bound address is written in a Host header or URL. */
const hostForm = (address: string) => (address.includes(':') ? `[${address.toLowerCase()}]` : address.toLowerCase());

export const hostNotAllowed = (host: string, allowed: string[]): ApiError =>
  new ApiError(
    403,
    `Host ${JSON.stringify(host)} is not allowed: this server listens on a loopback address and answers only ` +
      `Host ${allowed.join(', ')} (a guard against DNS rebinding). Reach it by one of those names.`,
    'request_forbidden',
    null,
    'host_not_allowed',
  );

export const originNotAllowed = (origin: string): ApiError =>
  new ApiError(
    403,
    `Origin ${JSON.stringify(origin)} is not allowed: browser pages from other origins may call this server only ` +
      `when it is started with --allowed-origins ${origin} (library: the allowedOrigins option).`,
    'request_forbidden',
    null,
    'origin_not_allowed',
  );

export class AccessPolicy {
  private readonly allowAll: boolean;
  private readonly listed: Set<string>;

  constructor(allowedOrigins: readonly string[] = []) {
    const origins = parseAllowedOrigins(allowedOrigins);
    this.allowAll = origins.includes('*');
    this.listed = new Set(origins);
  }

  /** Host names (with port) accepted while bound to `bound`; null: any Host (not bound to loopback). */
  allowedHosts(bound: AddressInfo): string[] | null {
    if (!isLoopbackAddress(bound.address)) return null;
    const names = new Set(['localhost', '127.0.0.1', '[::1]', hostForm(bound.address)]);
    return [...names].map((n) => `${n}:${bound.port}`);
  }

  /** Origins of pages this server itself would serve: always allowed. */
  private sameHost(origin: string, bound: AddressInfo): boolean {
    const names = ['localhost', '127.0.0.1', '[::1]'];
    if (bound.address !== '0.0.0.0' && bound.address !== '::') names.push(hostForm(bound.address));
    const port = bound.port === 80 ? '' : `:${bound.port}`;
    return names.some((n) => origin === `http://${n}${port}`);
  }

  /**
   * Checks Host and Origin (throws the 403) and, for an allowed Origin, sets the CORS headers on
   * `res`: on every response, plus the preflight ones when the request is an OPTIONS to a route
   * (`allow`: its methods). The caller answers the OPTIONS itself.
   */
  check(req: http.IncomingMessage, res: http.ServerResponse, bound: AddressInfo | null, allow: string[] | null): void {
    if (bound) {
      const hosts = this.allowedHosts(bound);
      const host = req.headers.host;
      // No Host at all is HTTP/1.0 from a tool, never a browser: nothing to rebind.
      if (hosts && host !== undefined && !this.hostMatches(host, hosts, bound.port)) throw hostNotAllowed(host, hosts);
    }
    const origin = req.headers.origin;
    if (origin === undefined) return;
    const normalized = normalizeOrigin(origin) ?? origin;
    const allowed =
      this.allowAll || this.listed.has(normalized) || (bound !== null && this.sameHost(normalized, bound));
    if (!allowed) throw originNotAllowed(origin);
    res.setHeader('Access-Control-Allow-Origin', origin);
    res.setHeader('Vary', 'Origin');
    if (req.method !== 'OPTIONS' || !allow) return;
    // A preflight: which method and headers the page may use. The OpenAI SDKs send x-stainless-*
    // headers, so echo the requested list (when it is a valid one) rather than a fixed set.
    const asked = req.headers['access-control-request-headers'];
    res.setHeader('Access-Control-Allow-Methods', [...allow, 'OPTIONS'].join(', '));
    res.setHeader('Access-Control-Allow-Headers', asked && HEADER_LIST_RE.test(asked) ? asked : CORS_HEADERS);
    res.setHeader('Access-Control-Max-Age', CORS_MAX_AGE);
  }

  private hostMatches(host: string, allowed: string[], port: number): boolean {
    let h = host.trim().toLowerCase();
    // Port 80 may be left out of Host (it is the scheme's default).
    if (port === 80 && !/:\d+$/.test(h)) h += ':80';
    return allowed.includes(h);
  }
}
