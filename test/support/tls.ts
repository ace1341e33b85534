// TLS for tests: a private certificate authority made on the spot with the `openssl` CLI, the
// certificates it signs (servers and clients, for host names and IP addresses), and an HTTPS
// upstream on port 0 that records the SNI name of each request. Nothing is read from or left on
// disk: each certificate is made in its own temporary directory, removed before the call returns.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type ServerOptions } from 'node:https';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { listen } from '../helpers.ts';

function findOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Whether the `openssl` CLI is on the PATH; tests that need certificates skip without it: `test(name, { skip: NO_OPENSSL }, ...)`. */
export const NO_OPENSSL: string | false = findOpenssl() ? false : 'the openssl CLI is not installed';

/** A private key and its certificate, PEM. */
export interface KeyPair {
  key: string;
  cert: string;
}

/** What a certificate is for. */
export interface IssueOptions {
  /** Host names and IP addresses it is valid for (subjectAltName); the first is also its CN. */
  names: string[];
  /** A client certificate (for mutual TLS) instead of a server certificate. @default false */
  client?: boolean | undefined;
}

/** A private certificate authority: trust `ca` and it signs certificates with `issue()`. */
export interface TestCa {
  /** The CA's certificate (PEM): give it as `ca` to whoever verifies. */
  ca: string;
  /** A key and a certificate signed by this CA, valid for a day. */
  issue(options: IssueOptions): KeyPair;
}

function inTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-tls-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** Makes a private CA (P-256, valid for a day). Throws when `openssl` is missing (see {@link NO_OPENSSL}). */
export function createTestCa(name = 'switchyard test CA'): TestCa {
  const root = inTempDir((dir) => {
    openssl(dir, [
      'req',
      '-x509',
      ...NEW_KEY,
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
      '-days',
      '1',
      '-subj',
      `/CN=${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    return { key: readFileSync(join(dir, 'ca.key'), 'utf8'), cert: readFileSync(join(dir, 'ca.crt'), 'utf8') };
  });
  let serial = 0;
  return {
    ca: root.cert,
    issue(options: IssueOptions): KeyPair {
      const names = options.names;
      if (names.length === 0) throw new TypeError('issue(): at least one name');
      const san = names.map((n) => (isIP(n) === 0 ? `DNS:${n}` : `IP:${n}`)).join(',');
      const usage = options.client === true ? 'clientAuth' : 'serverAuth';
      return inTempDir((dir) => {
        writeFileSync(join(dir, 'ca.key'), root.key, { mode: 0o600 });
        writeFileSync(join(dir, 'ca.crt'), root.cert);
        writeFileSync(
          join(dir, 'ext.cnf'),
          `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${usage}\nsubjectAltName=${san}\n`,
        );
        openssl(dir, ['req', '-new', ...NEW_KEY, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', `/CN=${names[0]}`]);
        openssl(dir, [
          'x509',
          '-req',
          '-in',
          'leaf.csr',
          '-CA',
          'ca.crt',
          '-CAkey',
          'ca.key',
          '-set_serial',
          String(Date.now() * 1000 + ++serial),
          '-days',
          '1',
          '-extfile',
          'ext.cnf',
          '-out',
          'leaf.crt',
        ]);
        return { key: readFileSync(join(dir, 'leaf.key'), 'utf8'), cert: readFileSync(join(dir, 'leaf.crt'), 'utf8') };
      });
    },
  };
}

/** An HTTPS upstream on 127.0.0.1, port 0. */
export interface TlsUpstream {
  /** `https://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** Requests received, in order, with the SNI name the client sent (`undefined`: none). */
  seen: Array<{ method: string; url: string; servername: string | undefined; authorized: boolean }>;
  close(): Promise<void>;
}

/**
 * Starts an HTTPS upstream with `options` (`key`, `cert`, and for mutual TLS `ca`, `requestCert`...),
 * answering 200 with `name` (or with `handler`); closed by the test's `after` hook.
 */
export async function tlsUpstream(
  t: TestContext | undefined,
  name: string,
  options: ServerOptions,
  handler?: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<TlsUpstream> {
  const seen: TlsUpstream['seen'] = [];
  const server = createServer(options, (req, res) => {
    const socket = req.socket as TLSSocket;
    const sni = socket.servername;
    seen.push({
      method: req.method ?? '',
      url: req.url ?? '',
      servername: typeof sni === 'string' && sni !== '' ? sni : undefined,
      authorized: socket.authorized,
    });
    req.resume();
    if (handler !== undefined) return handler(req, res);
    res.setHeader('x-upstream', name);
    res.end(name);
  });
  // A failed handshake (a test proving that verification fails) is not an error of the test.
  server.on('tlsClientError', () => undefined);
  // listen() takes an http.Server: an https.Server listens and closes the same way
  const { port, close } = await listen(t, server as unknown as HttpServer);
  return { url: `https://127.0.0.1:${port}`, port, seen, close };
}
