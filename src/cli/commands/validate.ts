/** `kvscope validate <run-folder | events.jsonl[.gz]>`: summary, or each broken rule with its seq. */
import type { Command } from 'commander';
import { RULE_TEXT, type RuleCode, type Violation } from '../../shared/ledger';
import type { BadLine } from '../../shared/events-reader';
import { RunAnalyzer, type RunAnalysis } from '../../shared/run-analysis';
import { readEventFile, resolveEventLog } from '../../main/core/event-files';
import { formatBytes, formatNs } from '../../shared/format';
import { STARTUP_COPIES_LABEL } from '../../shared/startup-copies';
import { PROTOCOL_VERSION } from '../../shared/protocol';
import { writeStdout } from '../terminal';

export interface ValidationReport {
  file: string;
  analysis: RunAnalysis;
  badLines: BadLine[];
  badLineTotal: number;
  violations: Violation[];
  violationCounts: Partial<Record<RuleCode, number>>;
  valid: boolean;
}

const KEEP_BAD_LINES = 1000;

/** Reads and checks a whole log in one streaming pass. */
export async function validateLog(path: string): Promise<ValidationReport> {
  const file = await resolveEventLog(path);
  const analyzer = new RunAnalyzer();
  const badLines: BadLine[] = [];
  let badLineTotal = 0;
  await readEventFile(file, {
    onEvent: (e) => analyzer.push(e),
    onBadLine: (b) => {
      badLineTotal++;
      if (badLines.length < KEEP_BAD_LINES) badLines.push(b);
    },
  });
  analyzer.finish();
  const analysis = analyzer.result();
  const ledger = analyzer.ledger;
  return {
    file,
    analysis,
    badLines,
    badLineTotal,
    violations: ledger.violations,
    violationCounts: { ...ledger.violationCounts },
    valid: badLineTotal === 0 && ledger.violationTotal === 0,
  };
}

function printSummary(r: ValidationReport, out: (s: string) => void): void {
  const a = r.analysis;
  const byType = Object.entries(a.eventsByType)
    .map(([t, n]) => `${t} ${n}`)
    .join(', ');
  out(`file: ${r.file}`);
  out(`run: ${a.runId ?? '(no run.start)'}  status: ${a.status}${a.error ? ` (${a.error.code}: ${a.error.message})` : ''}`);
  out(`events: ${a.events} (${byType})`);
  out(`users: ${a.users.length}  rounds: ${a.rounds.length}${a.rounds.length ? ` (${a.rounds[0]}..${a.rounds[a.rounds.length - 1]})` : ''}`);
  const b = a.blocks;
  out(`blocks: stored ${b.stored}, offloaded ${b.offloaded}, onboarded ${b.onboarded}, evicted ${b.evicted}, hit ${b.hit}`);
  const cap = (p: string) => a.pools[p]?.capacity_blocks ?? 0;
  // gpu and host, then any other tier the run has (a disk), in the order declared.
  const peaks = Object.entries(a.peakOccupancy).map(([p, n]) => `${p} ${n}/${cap(p)} blocks`);
  out(`peak pool occupancy: ${peaks.join(', ')}`);
  for (const source of ['cupti', 'engine'] as const) {
    const x = a.xferBytesBySource[source];
    if (x.h2d + x.d2h + x.d2d + x.h2h > 0) {
      out(`transfers (${source}): h2d ${formatBytes(x.h2d)}, d2h ${formatBytes(x.d2h)}, d2d ${formatBytes(x.d2d)}`);
      const s = a.startupXferBytesBySource[source];
      if (s.h2d + s.d2h + s.d2d + s.h2h > 0) out(`  of which the ${STARTUP_COPIES_LABEL}: h2d ${formatBytes(s.h2d)}, d2h ${formatBytes(s.d2h)}`);
    }
  }
  if (a.diskXferBytes) out(`disk I/O (engine): read ${formatBytes(a.diskXferBytes.f2h)}, written ${formatBytes(a.diskXferBytes.h2f)}`);
  const t = a.ttft;
  out(`queued TTFT (rounds 1..): mean ${formatNs(t.mean)}, p50 ${formatNs(t.p50)}, p99 ${formatNs(t.p99)} over ${t.count} requests`);
  const st = a.serviceTtft;
  out(`service TTFT (rounds 1..): mean ${formatNs(st.mean)}, p50 ${formatNs(st.p50)}, p99 ${formatNs(st.p99)} over ${st.count} requests`);
  out(`E2E (rounds 1..): ${formatNs(a.e2e_ns)}`);
}

export function registerValidate(program: Command): void {
  program
    .command('validate')
    .description(`check a run log against protocol v${PROTOCOL_VERSION} (v1 logs too) and print its summary`)
    .argument('<run>', 'a run folder, events.jsonl or events.jsonl.gz')
    .option('--json', 'print the report as JSON')
    .action(async (path: string, opts: { json?: boolean }) => {
      const report = await validateLog(path);
      const out = (s: string) => writeStdout(s + '\n');
      const { analysis } = report;
      if (opts.json) {
        out(JSON.stringify({ ...report, analysis: { ...analysis, requests: undefined } }, null, 2));
      } else {
        printSummary(report, out);
        for (const b of report.badLines) {
          out(`bad line ${b.line} (offset ${b.offset}${b.seq !== null ? `, seq ${b.seq}` : ''}): ${b.reason}: ${b.message}`);
        }
        if (report.badLineTotal > report.badLines.length) out(`... and ${report.badLineTotal - report.badLines.length} more bad lines`);
        for (const v of report.violations) {
          out(`${v.seq !== null ? `seq ${v.seq}` : 'whole run'}: ${v.rule}: ${v.message} [rule: ${RULE_TEXT[v.rule]}]`);
        }
        const total = Object.values(report.violationCounts).reduce((x, y) => x + (y ?? 0), 0);
        if (total > report.violations.length) out(`... and ${total - report.violations.length} more violations`);
        out(report.valid ? `valid: every protocol v${PROTOCOL_VERSION} rule holds` : `INVALID: ${report.badLineTotal} bad line(s), ${total} rule violation(s)`);
      }
      process.exitCode = report.valid ? 0 : 1;
    });
}
