/**
 * The batch script of a Slurm run or sweep. One script serves a whole job array: each element
 * picks its run folder and agent options by SLURM_ARRAY_TASK_ID.
 *
 * Remote layout (shared filesystem, seen by the login node and the compute nodes):
 *   <run dir>/job.sh, slurm-<job>.out      the script and Slurm's own output (a single run)
 *   <sweep dir>/job.sh, slurm-<A>_<a>.out  the same for a job array
 *   <run dir>/attempt-<N>/                 one folder per start of the job (N = SLURM_RESTART_COUNT,
 *                                          so a requeued or preempted job starts over in a new one)
 *       events.jsonl, agent.stderr, agent.stdout   the agent's log and output
 *       placement.json                     node, job and GPUs this attempt ran on
 *       exit                               the agent's exit status, written last (empty: the job
 *                                          ended without one, written by the follower)
 *
 * Every value in the script is a single-quoted shell word (shell-quote.ts). The user's set-up
 * line is one of them: it is evaluated exactly once, by `command eval` in the job's own shell
 * before the agent starts (so `module load` and `source venv/bin/activate` change the agent's
 * environment), never by the login node's shell and never as a #SBATCH line. `command` keeps a
 * syntax error in it from ending the script, so the run still records why it did not start.
 */
import { shellCommand, shellQuote } from '../shell-quote';

/** One element of the job: where its run lives and the agent's options (agentRunArgs). */
export interface JobElement {
  runDir: string;
  agentArgs: string[];
}

export interface JobScriptSpec {
  python: string;
  /** Folder holding kvscope_agent/ (on the shared filesystem). */
  agentDir: string;
  setup?: string;
  /** Extra sbatch options (checked by checkClusterOptions: one line each, an option each). */
  sbatch?: string[];
  /** One element for a run; a job array's elements in index order. */
  elements: JobElement[];
  array: boolean;
}

/** Where and on what an attempt runs (stdlib only; nvidia-smi when the node has it). */
export const PLACEMENT_PY = String.raw`
import json, os, socket, subprocess, time
e = os.environ
gpus = []
try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,uuid", "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
    for line in out.splitlines():
        p = [x.strip() for x in line.split(",")]
        if len(p) >= 3:
            gpus.append({"index": p[0], "name": p[1], "uuid": p[2]})
except Exception:
    pass
print(json.dumps({
    "node": e.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0],
    "hostname": socket.gethostname(),
    "job_id": e.get("SLURM_JOB_ID"),
    "array_job_id": e.get("SLURM_ARRAY_JOB_ID"),
    "array_task_id": e.get("SLURM_ARRAY_TASK_ID"),
    "restart_count": int(e.get("SLURM_RESTART_COUNT") or 0),
    "partition": e.get("SLURM_JOB_PARTITION"),
    "job_gpus": e.get("SLURM_JOB_GPUS") or e.get("SLURM_STEP_GPUS"),
    "cuda_visible_devices": e.get("CUDA_VISIBLE_DEVICES"),
    "gpus": gpus,
    "started_unix": time.time(),
}))
`;

/** The element's folder and options as shell words (`kvscope_dir=…; kvscope_args=(…)`). */
function elementLines(el: JobElement): string {
  return `kvscope_dir=${shellQuote(el.runDir)}; kvscope_args=(${shellCommand(el.agentArgs)})`;
}

export function jobScript(spec: JobScriptSpec): string {
  if (spec.elements.length === 0) throw new Error('a job needs at least one run');
  const lines = ['#!/bin/bash'];
  // sbatch reads #SBATCH lines up to the first command, so they come first.
  for (const l of spec.sbatch ?? []) lines.push(`#SBATCH ${l}`);
  lines.push(
    '# KV Scope: the multi-user multi-round KV-cache benchmark as a Slurm job. Generated: every value',
    '# below is one quoted word; the set-up line runs once, through eval, where it says so.',
    `kvscope_python=${shellQuote(spec.python)}`,
    `kvscope_agent_dir=${shellQuote(spec.agentDir)}`,
    `kvscope_setup=${shellQuote(spec.setup ?? '')}`,
  );
  if (spec.array) {
    lines.push('case "${SLURM_ARRAY_TASK_ID-}" in');
    spec.elements.forEach((el, i) => lines.push(`  ${i}) ${elementLines(el)} ;;`));
    lines.push('  *) echo "kvscope: no run for array task ${SLURM_ARRAY_TASK_ID-}" >&2; exit 2 ;;', 'esac');
  } else {
    lines.push(elementLines(spec.elements[0]!));
  }
  lines.push(
    'kvscope_attempt="$kvscope_dir/attempt-${SLURM_RESTART_COUNT:-0}"',
    'mkdir -p "$kvscope_attempt" && cd "$kvscope_attempt" || { echo "kvscope: cannot use $kvscope_attempt" >&2; exit 1; }',
    // TERM (scancel, requeue, time limit) goes to the agent too: it ends its log with run.end
    // "cancelled" and exits 143; this shell only waits for it, then records the status.
    'trap : TERM INT HUP',
    'kvscope_status=0',
    'if [ -n "$kvscope_setup" ]; then',
    '  command eval "$kvscope_setup" < /dev/null >> agent.stderr 2>&1',
    '  kvscope_status=$?',
    '  [ "$kvscope_status" -eq 0 ] || echo "kvscope: the set-up line failed with status $kvscope_status; the agent was not started" >> agent.stderr',
    'fi',
    `"$kvscope_python" -c ${shellQuote(PLACEMENT_PY.trim())} > placement.json.tmp 2> /dev/null && mv placement.json.tmp placement.json`,
    'if [ "$kvscope_status" -eq 0 ]; then',
    '  PYTHONPATH="$kvscope_agent_dir${PYTHONPATH:+:$PYTHONPATH}" "$kvscope_python" -m kvscope_agent run "${kvscope_args[@]}" --out "$kvscope_attempt" < /dev/null > agent.stdout 2>> agent.stderr',
    '  kvscope_status=$?',
    'fi',
    'echo "$kvscope_status" > exit.tmp && mv exit.tmp exit',
    'exit "$kvscope_status"',
  );
  return lines.join('\n') + '\n';
}
