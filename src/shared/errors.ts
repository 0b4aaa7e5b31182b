// Typed errors: every failure a user can meet has a stable code and a hint naming the next step.

/** Base of every expected error. The CLI prints `message` and `hint`; anything else is a bug. */
export class MeshdError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  /** Extra structured facts (file, field, peer...) for `-o json` output and logs. */
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: string,
    message: string,
    opts: { hint?: string; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = opts.hint;
    this.details = opts.details;
  }

  toJSON(): { code: string; message: string; hint?: string; details?: Record<string, unknown> } {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint === undefined ? {} : { hint: this.hint }),
      ...(this.details === undefined ? {} : { details: this.details }),
    };
  }
}

/** The command line was not understood. */
export class UsageError extends MeshdError {
  constructor(message: string, hint = 'Run `meshd --help` for usage.') {
    super('E_USAGE', message, { hint });
  }
}

/** A join token that cannot be used: truncated, mistyped, foreign, stale. */
export class TokenError extends MeshdError {}

/** The data directory is missing, foreign, locked or unwritable. */
export class DataDirError extends MeshdError {}

/** The daemon is not running, not answering, or refused the request. */
export class DaemonError extends MeshdError {}

/** A spec, config file or request body failed validation. `details.path` names the field. */
export class ValidationError extends MeshdError {}

/** Something named does not exist (node, pod, revision). */
export class NotFoundError extends MeshdError {}

/** A peer sent something meshd refuses (malformed, oversized, unverifiable). */
export class PeerProtocolError extends MeshdError {}

/** A write was refused because another controller owns the field. */
export class OwnershipError extends MeshdError {}

/** The disk is full or unwritable; nothing was changed. */
export class StorageError extends MeshdError {}

/** Shape used to carry an error over the local API and rebuild it in the client. */
export interface ErrorBody {
  code: string;
  message: string;
  hint?: string;
  details?: Record<string, unknown>;
}

export function isMeshdError(err: unknown): err is MeshdError {
  return err instanceof MeshdError;
}

/** Rebuilds a typed error from an API error body (class is lost; code, message and hint are kept). */
export function errorFromBody(body: ErrorBody): MeshdError {
  return new MeshdError(body.code, body.message, {
    ...(body.hint === undefined ? {} : { hint: body.hint }),
    ...(body.details === undefined ? {} : { details: body.details }),
  });
}

/** A short string for logs from anything thrown. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
