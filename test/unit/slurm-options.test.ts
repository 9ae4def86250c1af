/**
 * A cluster's submission options (checked field by field, merged, turned into sbatch's argv), and
 * what KV Scope reads back from Slurm (squeue, sacct, sinfo), on the texts those commands print.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ClusterStore } from '../../src/main/core/slurm/cluster-store';
import { checkClusterOptions, gresFor, mergeClusterOptions, sbatchArgv } from '../../src/main/core/slurm/options';
import { gpuTypesOf, parsePartitions } from '../../src/main/core/slurm/probe';
import { jobEnded, jobWaiting, parseSacct, parseSqueue, queueText } from '../../src/main/core/slurm/queue';
import { shellCommand } from '../../src/main/core/shell-quote';
import { slurmFromCli } from '../../src/cli/commands/slurm-options';

const refused = (o: unknown, field: string) => {
  let err: unknown = null;
  try {
    checkClusterOptions(o);
  } catch (e) {
    err = e;
  }
  expect(err, JSON.stringify(o)).toMatchObject({ code: 'invalid_argument', detail: { field: `slurm.${field}` } });
};

describe('cluster options', () => {
  it('keeps what Slurm accepts', () => {
    const o = checkClusterOptions({ partition: 'gpu,gpu-long', account: 'proj_42', gpus: 2, gpuTypes: ['h100', 'a100', 'h100'], timeLimit: '1-12:00:00', sbatch: ['#SBATCH --qos=high', '-C hopper', ''], setup: ' module load cuda/12.4 && source ~/venv/bin/activate ', sharedDir: '~/scratch/kvscope', arrayLimit: 4, pollSeconds: 2 });
    expect(o).toEqual({ partition: 'gpu,gpu-long', account: 'proj_42', gpus: 2, gpuTypes: ['h100', 'a100'], timeLimit: '1-12:00:00', sbatch: ['--qos=high', '-C hopper'], setup: 'module load cuda/12.4 && source ~/venv/bin/activate', sharedDir: '~/scratch/kvscope', arrayLimit: 4, pollSeconds: 2 });
    for (const t of ['30', '30:00', '02:00:00', '2-0', '2-12:30', 'UNLIMITED']) expect(checkClusterOptions({ timeLimit: t }).timeLimit).toBe(t);
    expect(checkClusterOptions({ partition: '', setup: '' })).toEqual({});
  });

  it('refuses, naming the field, anything a shell or sbatch would read as more than a value', () => {
    for (const p of ['gpu;touch x', 'gpu$(id)', 'gpu x', 'gpu\nx', "gpu'", '-p', '']) if (p) refused({ partition: p }, 'partition');
    refused({ account: 'a`id`' }, 'account');
    refused({ gpuTypes: ['h100:2'] }, 'gpuTypes');
    refused({ gpuTypes: 'h100' }, 'gpuTypes');
    refused({ gpus: 0 }, 'gpus');
    refused({ gpus: 1.5 }, 'gpus');
    refused({ timeLimit: '1h' }, 'timeLimit');
    refused({ timeLimit: '10;x' }, 'timeLimit');
    refused({ sbatch: ['--comment=a\ntouch x'] }, 'sbatch');
    refused({ sbatch: ['touch x'] }, 'sbatch');
    for (const reserved of ['--array=0-3', '-o out', '--output=x', '--wrap=id', '-D /', '--chdir=/x', '--job-name=x', '--error=x']) refused({ sbatch: [reserved] }, 'sbatch');
    refused({ setup: 'module load x\nid' }, 'setup');
    refused({ setup: 'a\u2028b' }, 'setup');
    refused({ sharedDir: 'relative/dir' }, 'sharedDir');
    refused({ sharedDir: '/scratch/%u' }, 'sharedDir');
    refused({ arrayLimit: 0 }, 'arrayLimit');
    refused({ pollSeconds: 0 }, 'pollSeconds');
    refused({ partitions: 'gpu' }, 'partitions');
  });

  it('a run\'s options go over the saved ones', () => {
    expect(mergeClusterOptions({ partition: 'gpu', account: 'a', gpus: 1 }, { partition: 'debug', timeLimit: '10' })).toEqual({ partition: 'debug', account: 'a', gpus: 1, timeLimit: '10' });
    expect(mergeClusterOptions(null, undefined)).toEqual({});
  });

  it('sbatch argv: each option fused to its value, quoted as one word each', () => {
    const o = checkClusterOptions({ partition: 'gpu', account: 'proj', timeLimit: '60', gpus: 2 });
    expect(gresFor(o, null)).toBe('gpu:2');
    expect(gresFor(o, 'h100')).toBe('gpu:h100:2');
    expect(gresFor({}, 'a100')).toBe('gpu:a100:1');
    expect(gresFor({}, null)).toBeNull();
    const argv = sbatchArgv(o, { jobName: 'kvscope-sweep-1', output: "/shared fs/it's/slurm-%A_%a.out", chdir: "/shared fs/it's", script: "/shared fs/it's/job.sh", gpuType: 'h100', array: { count: 3, limit: 1 } });
    expect(argv).toEqual(['sbatch', '--parsable', '--job-name=kvscope-sweep-1', "--output=/shared fs/it's/slurm-%A_%a.out", "--chdir=/shared fs/it's", '--partition=gpu', '--account=proj', '--time=60', '--gres=gpu:h100:2', '--array=0-2%1', "/shared fs/it's/job.sh"]);
    expect(shellCommand(argv)).toContain(`'--output=/shared fs/it'\\''s/slurm-%A_%a.out'`);
    expect(sbatchArgv({}, { jobName: 'j', output: '/o', chdir: '/d', script: '/s', gpuType: null })).toEqual(['sbatch', '--parsable', '--job-name=j', '--output=/o', '--chdir=/d', '/s']);
  });

  it('the CLI: no --slurm option means no cluster options; any of them means some', () => {
    expect(slurmFromCli({})).toBeUndefined();
    expect(slurmFromCli({ slurm: true })).toEqual({});
    expect(slurmFromCli({ slurmPartition: 'gpu', slurmGpus: '2', slurmGpuType: ['h100', 'a100'], slurmSbatch: ['--qos=high'], slurmArrayLimit: '1', slurmPoll: '0.5' })).toEqual({ partition: 'gpu', gpus: 2, gpuTypes: ['h100', 'a100'], sbatch: ['--qos=high'], arrayLimit: 1, pollSeconds: 0.5 });
    expect(() => slurmFromCli({ slurmGpus: 'two' })).toThrow(/--slurm-gpus/);
  });

  it('clusters.json: saved per alias, checked on the way in and out, Local refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvscope-clusters-'));
    const store = new ClusterStore(dir);
    expect(await store.get('hpc')).toBeNull();
    await store.save('hpc', { partition: 'gpu' });
    await store.save('other', { account: 'x' });
    expect(await store.get('hpc')).toEqual({ partition: 'gpu' });
    await expect(store.save('hpc', { partition: 'a;b' })).rejects.toMatchObject({ code: 'invalid_argument' });
    await expect(store.save('local', {})).rejects.toMatchObject({ code: 'invalid_argument' });
    await store.save('other', null);
    expect(JSON.parse(readFileSync(store.file, 'utf8'))).toEqual({ hpc: { partition: 'gpu' } });
    // A hand-edited entry that no longer checks is not used half-checked.
    writeFileSync(store.file, JSON.stringify({ hpc: { partition: 'gpu;id' }, ok: { gpus: 1 } }));
    expect(await store.all()).toEqual({ ok: { gpus: 1 } });
  });
});

describe('reading Slurm', () => {
  it('squeue -O lines: array elements, reasons, nodes, restarts', () => {
    const text = ['3_1|PENDING|JobArrayTaskLimit||0|', '3_0|RUNNING|None|gpu-a07|0|', '8|COMPLETING|None|vm|1|', '9|PENDING|BeginTime||1|', ''].join('\n');
    const m = parseSqueue(text);
    expect([...m.keys()]).toEqual(['3_1', '3_0', '8', '9']);
    expect(m.get('3_0')).toEqual({ id: '3_0', state: 'RUNNING', reason: null, nodes: 'gpu-a07', restarts: 0 });
    expect(queueText(m.get('3_1')!)).toBe('pending: JobArrayTaskLimit');
    expect(queueText(m.get('3_0')!)).toBe('running on gpu-a07');
    expect(queueText(m.get('8')!)).toBe('completing on vm');
    expect(queueText({ id: '1', state: 'PENDING', reason: 'Resources', nodes: null, restarts: 0 })).toBe('pending: Resources');
    expect(queueText(null)).toBe('left the queue');
    expect(jobWaiting(m.get('9')!)).toBe(true);
    expect(jobWaiting(m.get('8')!)).toBe(false);
    expect(jobEnded(m.get('8')!)).toBe(false);
    expect(jobEnded({ id: '1', state: 'TIMEOUT', reason: null, nodes: null, restarts: 0 })).toBe(true);
    expect(jobEnded(null)).toBe(true);
  });

  it('sacct -P lines (for jobs squeue has forgotten)', () => {
    const m = parseSacct('12|CANCELLED by 0|gpu-a07\n13_2|TIMEOUT|None assigned\n');
    expect(m.get('12')).toMatchObject({ state: 'CANCELLED', nodes: 'gpu-a07' });
    expect(m.get('13_2')).toMatchObject({ state: 'TIMEOUT', nodes: null });
  });

  it('sinfo partitions and the GPU types in their gres', () => {
    expect(gpuTypesOf('gpu:h100:8(S:0-1),gpu:a100:4')).toEqual(['h100', 'a100']);
    expect(gpuTypesOf('gpu:4')).toEqual([]);
    const parts = parsePartitions(['gpu*|up|10|2-00:00:00|gpu:h100:8(S:0-1)', 'gpu*|up|4|2-00:00:00|gpu:a100:4', 'cpu|up|32|infinite|(null)', ''].join('\n'));
    expect(parts).toEqual([
      { name: 'gpu', default: true, available: 'up', nodes: 14, timeLimit: '2-00:00:00', gpuTypes: ['h100', 'a100'], gres: ['gpu:h100:8(S:0-1)', 'gpu:a100:4'] },
      { name: 'cpu', default: false, available: 'up', nodes: 32, timeLimit: 'infinite', gpuTypes: [], gres: [] },
    ]);
  });
});
