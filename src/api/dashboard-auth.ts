// Who may use the dashboard: the random token in `dashboard.token` (0600), the cookie a browser trades it for, and the per-request check.

import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { DataDirError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';

/** 32 random bytes as base64url (43 characters). */
const tokenPattern = /^[A-Za-z0-9_-]{43}$/;

export function dashboardTokenFile(dataDir: string): string {
  return join(dataDir, 'dashboard.token');
}

/**
 * The dashboard's secret. A request is let in with the cookie (browsers, after trading the token at
 * `POST /auth`) or `Authorization: Bearer TOKEN` (scripts). The cookie holds an HMAC of the token,
 * not the token, and is named after the token, so two daemons on one host (cookies ignore ports) do
 * not overwrite each other's cookie.
 */
export class DashboardAuth {
  readonly token: string;
  readonly cookieName: string;
  private readonly cookieValue: Buffer;
  private readonly tokenBytes: Buffer;

  constructor(token: string) {
    this.token = token;
    this.tokenBytes = Buffer.from(token, 'utf8');
    this.cookieValue = Buffer.from(
      createHmac('sha256', token).update('meshd dashboard cookie v1').digest('base64url'),
    );
    this.cookieName = `meshd_dashboard_${createHash('sha256').update(token).digest('hex').slice(0, 12)}`;
  }

  /**
   * Reads the token file, or creates it (mode 0600, never readable by others even for an instant).
   * A file with a malformed token is replaced; one readable by group or others is tightened.
   */
  static loadOrCreate(dataDir: string, logger: Logger): DashboardAuth {
    const file = dashboardTokenFile(dataDir);
    try {
      const existing = fs.readFileSync(file, 'utf8').trim();
      if (tokenPattern.test(existing)) {
        if ((fs.statSync(file).mode & 0o077) !== 0) {
          fs.chmodSync(file, 0o600);
          logger.warn('dashboard token file was readable by others; made it 0600', { file });
        }
        return new DashboardAuth(existing);
      }
      logger.warn('dashboard token file is malformed; writing a new token', { file });
      fs.rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw tokenFileError(file, err);
    }
    const token = randomBytes(32).toString('base64url');
    try {
      // 'wx': fails rather than follow a file (or symlink) someone put there since the read.
      fs.writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      throw tokenFileError(file, err);
    }
    return new DashboardAuth(token);
  }

  tokenMatches(candidate: unknown): boolean {
    if (typeof candidate !== 'string') return false;
    const given = Buffer.from(candidate, 'utf8');
    return given.byteLength === this.tokenBytes.byteLength && timingSafeEqual(given, this.tokenBytes);
  }

  /** True when the request carries the session cookie or the bearer token. */
  isAuthorized(headers: IncomingHttpHeaders): boolean {
    const bearer = /^Bearer ([^\s]+)$/.exec(headers.authorization ?? '');
    if (bearer !== null && this.tokenMatches(bearer[1])) return true;
    const value = cookieValue(headers.cookie, this.cookieName);
    if (value === undefined) return false;
    const given = Buffer.from(value, 'utf8');
    return given.byteLength === this.cookieValue.byteLength && timingSafeEqual(given, this.cookieValue);
  }

  /** HttpOnly (page scripts never see it), SameSite=Strict (never sent by another site's request). */
  setCookieHeader(): string {
    return `${this.cookieName}=${this.cookieValue.toString('utf8')}; Path=/; HttpOnly; SameSite=Strict`;
  }
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function tokenFileError(file: string, err: unknown): DataDirError {
  return new DataDirError('E_DASHBOARD_TOKEN', `cannot read or create ${file}: ${(err as Error).message}`, {
    hint: `Check the permissions of ${file} (it must belong to the user running meshd).`,
    cause: err,
  });
}
