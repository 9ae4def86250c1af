/**
 * Results that cross IPC or the WebSocket bridge. Rejections lose their fields across Electron IPC,
 * so every bridge call resolves to a Result with a stable error `code` instead of throwing.
 */
export type ErrorCode =
  | 'not_found'
  | 'invalid_argument'
  | 'io_error'
  | 'bad_run'
  | 'ssh_error'
  | 'host_key_unknown'
  | 'host_key_changed'
  | 'auth_failed'
  | 'cancelled'
  | 'unsupported'
  /** A batch scheduler (Slurm) refused or failed a command: sbatch, squeue, scancel. */
  | 'scheduler_error'
  /** More data than a limit allows (a host's output, a line, a file to import): refused, nothing kept. */
  | 'too_large'
  | 'internal';

export interface AppError {
  code: ErrorCode;
  message: string;
  /** Extra structured detail (fingerprints, the field a form error names, ...). */
  detail?: Record<string, unknown>;
}

export type Result<T> = { ok: true; value: T } | { ok: false; error: AppError };

export const ok = <T>(value: T): Result<T> => ({ ok: true, value });
export const err = (code: ErrorCode, message: string, detail?: Record<string, unknown>): Result<never> => ({
  ok: false,
  error: detail ? { code, message, detail } : { code, message },
});

/** Error subclass carrying a code, for core code that throws internally. */
export class CodedError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'CodedError';
  }
}

/** Runs `fn` and turns a throw into an error Result (the one place exceptions become Results). */
export async function toResult<T>(fn: () => Promise<T> | T): Promise<Result<T>> {
  try {
    return ok(await fn());
  } catch (e) {
    if (e instanceof CodedError) return err(e.code, e.message, e.detail);
    const code = (e as NodeJSErrnoLike)?.code === 'ENOENT' ? 'not_found' : 'internal';
    return err(code, (e as Error)?.message ?? String(e));
  }
}

interface NodeJSErrnoLike {
  code?: string;
}
