/**
 * The interpreter a host runs the agent, its tail and its probe with. It is the one part of every
 * command that names a program (the rest is the bundled agent and fixed scripts, with quoted,
 * validated arguments), and it can come from the window (a run's or probe's `python`, Settings),
 * so it must name a Python: a path whose file name starts with `python` (`python3`,
 * `/opt/venv/bin/python`, `python3.11`), never `/usr/bin/tee`, `sh` or `env`, which would turn the
 * same fixed arguments into a write to a chosen file or a shell.
 */
import { CodedError } from '../../shared/result';

/** A file name `python…`, optionally after a folder; no control characters anywhere. */
// eslint-disable-next-line no-control-regex
export const PYTHON_PATH_RE = /^(?:[^\0-\x1f\x7f]*\/)?python[A-Za-z0-9._+-]*$/;

/** Returns `python` when it names a Python interpreter; throws `invalid_argument` otherwise. */
export function checkPythonPath(python: unknown, field = 'python'): string {
  if (typeof python !== 'string' || python.length === 0 || python.length > 4096 || !PYTHON_PATH_RE.test(python)) {
    throw new CodedError(
      'invalid_argument',
      `${field} must be a Python interpreter: a path whose file name starts with "python" (python3, /opt/venv/bin/python), not ${JSON.stringify(python)}`,
      { field },
    );
  }
  return python;
}
