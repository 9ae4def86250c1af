/**
 * Run summary: per round TTFT mean/p50/p99 and E2E, blocks and bytes moved, the bandwidth the
 * copies achieved against the host's link, and the run's settings beside them (as a profiler shows
 * its capture settings with its results, so two runs' differences have their cause in view).
 */
import { formatBandwidth, formatBytes, formatNs } from '../../../shared/format';
import { OP_BY_CODE, OP_NAMES } from '../../../shared/replay';
import { useRunData } from '../../hooks';
import type { RunData } from '../../run-data';
import { RunHeader } from '../live/LiveView';
import { ExportButton } from '../export/ExportButton';
import { busyTime, linkOf } from '../../model/link-bandwidth';
import { runSettings } from '../../model/run-settings';
import { TTFT_QUEUED_TITLE, TTFT_SERVICE_TITLE } from '../../model/ttft-names';
import { STARTUP_COPIES_LABEL } from '../../../shared/startup-copies';
import type { TimelineModel, XferLane } from '../../../shared/timeline-model';
import { RunOpening } from '../run-opening/RunOpening';
import { roundBreakdowns, ttftBreakdown } from '../../../shared/ttft-breakdown';
import { RoundBreakdownChart } from '../ttft/TtftBreakdownView';
import { useVizTheme } from '../../hooks';
import { poolWord } from '../../../shared/protocol';

/** The start-up copy check, named apart from the KV copies above (none of its bytes is a KV block). */
export function StartupCopiesNote({ copies }: { copies: TimelineModel['startupCopies'] }) {
  const dirs = (['h2d', 'd2h'] as const).filter((d) => copies[d].count > 0);
  if (dirs.length === 0) return null;
  return (
    <p className="muted" data-testid="startup-copies">
      Not counted above, the {STARTUP_COPIES_LABEL} before the workload:{' '}
      {dirs.map((d) => `${d.toUpperCase()} ${copies[d].count.toLocaleString()} ${copies[d].count === 1 ? 'copy' : 'copies'} (${formatBytes(copies[d].bytes)})`).join(', ')}.
    </p>
  );
}

/** Moves between two pools other than GPU ↔ host (a spill to disk, a promotion from it), with their block counts. */
function tierMoves(moves: Record<string, number> | undefined): Array<[string, number]> {
  return Object.entries(moves ?? {}).filter(([k, n]) => n > 0 && k !== 'gpu>host' && k !== 'host>gpu');
}

/**
 * Transfers per direction (a lane of the timeline each): how many, their bytes, the rate they
 * achieved over the time the direction was busy, and a last column against a reference (the link,
 * the disk's plain sequential rate).
 */
function LaneRateTable({ testid, lanes, headers, name, busyTitle, last, lastTitle }: { testid: string; lanes: XferLane[]; headers: [string, string]; name: (l: XferLane) => string; busyTitle: string; last: (bw: number | null, l: XferLane) => string; lastTitle?: string }) {
  return (
    <table data-testid={testid}>
      <thead>
        <tr>
          <th>Direction</th>
          <th className="num">{headers[0]}</th>
          <th className="num">Bytes</th>
          <th className="num">Achieved</th>
          <th className="num" title={lastTitle}>
            {headers[1]}
          </th>
        </tr>
      </thead>
      <tbody>
        {lanes.map((l) => {
          const busy = busyTime(l.start, l.end, l.length);
          const bw = busy > 0 ? (l.totalBytes / busy) * 1e9 : null;
          return (
            <tr key={l.dir} data-dir={l.dir}>
              <th>{name(l)}</th>
              <td className="num">{l.length.toLocaleString()}</td>
              <td className="num">{formatBytes(l.totalBytes)}</td>
              <td className="num" title={busyTitle}>
                {formatBandwidth(bw)}
              </td>
              <td className="num">{last(bw, l)}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/**
 * A disk tier's reads and writes (the engine's timings): count, bytes, the rate they achieved
 * over the time the disk was busy, against the disk's own sequential rate measured in the same run
 * (run.end summary.disk, the tier's I/O method).
 */
function DiskIoTable({ data }: { data: RunData }) {
  const tm = data.timeline();
  const lanes = tm.lanes.filter((l) => l.dir === 'f2h' || l.dir === 'h2f');
  if (lanes.length === 0) return null;
  const disk = data.loaded.analysis.endSummary?.disk;
  const plain = (dir: string) => (dir === 'f2h' ? disk?.plain_read_bytes_per_s : disk?.plain_write_bytes_per_s) ?? null;
  return (
    <>
      <h2>Disk I/O</h2>
      <p className="muted">
        Timed by the engine (CUPTI cannot see file I/O){disk?.io ? ` · ${disk.io === 'o_direct' ? 'O_DIRECT' : 'buffered'}` : ''}
        {disk?.path_fs ? ` on ${disk.path_fs}` : ''}
      </p>
      <LaneRateTable
        testid="disk-io-table"
        lanes={lanes}
        headers={['Transfers', 'Plain sequential']}
        lastTitle="the disk's own sequential rate, measured in the same run's setup by the tier's I/O method"
        name={(l) => (l.dir === 'f2h' ? 'read (file → host)' : 'write (host → file)')}
        busyTitle="bytes over the time the disk was busy in this direction"
        last={(_bw, l) => formatBandwidth(plain(l.dir))}
      />
    </>
  );
}

export function SummaryView({ runId }: { runId: string }) {
  const { data, error } = useRunData(runId, 1000);
  if (error) return <p role="alert" className="error">Could not open run {runId}: {error}</p>;
  if (!data) return <RunOpening runId={runId} />;
  return <Summary data={data} />;
}

function Summary({ data }: { data: RunData }) {
  const theme = useVizTheme();
  const a = data.loaded.analysis;
  const r = data.replay;
  const tm = data.timeline();
  const bb = r.pools.gpu?.block_bytes ?? 0;
  // Blocks moved per round and op, from the replay's move columns; moves between the host pool
  // and a tier below it (a disk) get a column of their own, in runs that have them.
  const ops = OP_BY_CODE.filter((op, code) => code < OP_NAMES.length || (op === 'move' && tierMoves(a.moves).length > 0));
  const perRound = new Map<number, number[]>();
  for (let i = 0; i < r.moveCount; i++) {
    const rd = r.round.data[i]!;
    const row = perRound.get(rd) ?? ops.map(() => 0);
    const code = r.op.data[i]!;
    if (code < ops.length) row[code]!++;
    perRound.set(rd, row);
  }
  const rounds = roundBreakdowns(a.requests.map((q) => ttftBreakdown(q, a.pools.gpu?.block_bytes ?? null)));
  const link = linkOf(a.start?.host.gpus[0]);
  const dirs = tm.lanes.filter((l) => l.dir === 'h2d' || l.dir === 'd2h');
  const settings = runSettings(a.start, a.endSummary, r.pools);
  return (
    <section className="summary-view">
      <RunHeader data={data} view="summary" />
      <div className="transport">
        <span className="spacer" />
        <ExportButton runId={data.id} />
      </div>
      {a.error && (
        <p role="alert" className="error">
          The run ended with an error ({a.error.code}): {a.error.message}
        </p>
      )}
      <div className="summary-grid">
        <div>
          <h2>Rounds</h2>
          {a.roundRows.length === 0 ? (
            <p className="empty">No requests in this run.</p>
          ) : (
            <table data-testid="rounds-table">
              <thead>
                {/* Two TTFTs, named as everywhere in the app and the README: queued (the seed's: queued →
                    first token, waiting for admission included) and service (admitted → first token). */}
                <tr>
                  <th rowSpan={2}>Round</th>
                  <th rowSpan={2} className="num">Users</th>
                  <th colSpan={3} className="group" title={TTFT_QUEUED_TITLE}>queued TTFT</th>
                  <th colSpan={3} className="group" title={TTFT_SERVICE_TITLE}>service TTFT</th>
                  <th rowSpan={2} className="num">E2E</th>
                  <th colSpan={ops.length} className="group">blocks</th>
                </tr>
                <tr>
                  {['mean', 'p50', 'p99', 'mean', 'p50', 'p99'].map((k, i) => (
                    <th key={i} className="num" title={i < 3 ? TTFT_QUEUED_TITLE : TTFT_SERVICE_TITLE}>
                      {k}
                    </th>
                  ))}
                  {/* One column per op, named as in the Blocks table: one cell of "2004 / 922 / 0 / 0 / 0"
                      under "s/off/on/ev/hit" had no thousands separators and had to be decoded. */}
                  {ops.map((op) => (
                    <th key={op} className="num" title={op === 'move' ? 'blocks: moved between the host pool and a tier below it (a disk)' : `blocks: ${op}`}>
                      {op}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {a.roundRows.map((row) => {
                  const m = perRound.get(row.round) ?? ops.map(() => 0);
                  return (
                    <tr key={row.round}>
                      <td>{row.round === 0 ? '0 (context)' : row.round}</td>
                      <td className="num">{row.users}</td>
                      <td className="num">{formatNs(row.ttft.mean)}</td>
                      <td className="num">{formatNs(row.ttft.p50)}</td>
                      <td className="num">{formatNs(row.ttft.p99)}</td>
                      <td className="num">{formatNs(row.serviceTtft.mean)}</td>
                      <td className="num">{formatNs(row.serviceTtft.p50)}</td>
                      <td className="num">{formatNs(row.serviceTtft.p99)}</td>
                      <td className="num">{formatNs(row.e2e_ns)}</td>
                      {m.map((n, op) => (
                        <td key={op} className="num">
                          {n.toLocaleString()}
                        </td>
                      ))}
                    </tr>
                  );
                })}
              </tbody>
              <tfoot>
                <tr>
                  {/* The foot mixes a mean (TTFT over every timed request) with a sum (E2E over rounds
                      1..R, the seed's E2E): "252.2 s" under rows of ~25 s read as a misprint unlabelled. */}
                  <th title="TTFTs: over every request of rounds 1..R; E2E: rounds 1..R end to end">Timed rounds (E2E total)</th>
                  <th className="num">{a.users.length}</th>
                  <th className="num">{formatNs(a.ttft.mean)}</th>
                  <th className="num">{formatNs(a.ttft.p50)}</th>
                  <th className="num">{formatNs(a.ttft.p99)}</th>
                  <th className="num">{formatNs(a.serviceTtft.mean)}</th>
                  <th className="num">{formatNs(a.serviceTtft.p50)}</th>
                  <th className="num">{formatNs(a.serviceTtft.p99)}</th>
                  <th className="num">{formatNs(a.e2e_ns)}</th>
                  <th colSpan={ops.length} />
                </tr>
              </tfoot>
            </table>
          )}
        </div>
        <div>
          <h2>Blocks</h2>
          <table>
            <tbody>
              {OP_NAMES.map((op) => {
                const n = a.blocks[op === 'store' ? 'stored' : op === 'offload' ? 'offloaded' : op === 'onboard' ? 'onboarded' : op === 'evict' ? 'evicted' : 'hit'];
                return (
                  <tr key={op}>
                    <th>{op}</th>
                    <td className="num">{n.toLocaleString()}</td>
                    <td className="num">{bb && (op === 'offload' || op === 'onboard') ? formatBytes(n * bb) : ''}</td>
                  </tr>
                );
              })}
              {/* Moves between the host pool and a tier below it: spills to disk, promotions from it. */}
              {tierMoves(a.moves).map(([key, n]) => {
                const [from, to] = key.split('>') as [string, string];
                return (
                  <tr key={key} data-move={key}>
                    <th>
                      {from} → {to}
                    </th>
                    <td className="num">{n.toLocaleString()}</td>
                    <td className="num">{r.pools[from]?.block_bytes ? formatBytes(n * r.pools[from]!.block_bytes) : ''}</td>
                  </tr>
                );
              })}
              <tr>
                <th>peak GPU pool</th>
                <td className="num">{a.peakOccupancy.gpu.toLocaleString()}</td>
                <td>of {r.pools.gpu?.capacity_blocks.toLocaleString() ?? '–'}</td>
              </tr>
              <tr>
                <th>peak host pool</th>
                <td className="num">{a.peakOccupancy.host.toLocaleString()}</td>
                <td>of {r.pools.host?.capacity_blocks.toLocaleString() ?? '–'}</td>
              </tr>
              {r.gridPools.slice(2).map((p) => (
                <tr key={p} data-peak={p}>
                  <th>peak {poolWord(p)} pool</th>
                  <td className="num">{(a.peakOccupancy[p] ?? 0).toLocaleString()}</td>
                  <td>of {r.pools[p]?.capacity_blocks.toLocaleString() ?? '–'}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <DiskIoTable data={data} />
          <h2>Copies against the link</h2>
          <p>
            Link: <strong>{link.name}</strong>
            {link.bytesPerS ? ` · ${formatBandwidth(link.bytesPerS)} each way` : ''}
          </p>
          <LaneRateTable
            testid="bandwidth-table"
            lanes={dirs}
            headers={['Copies', 'of link']}
            name={(l) => l.dir.toUpperCase()}
            busyTitle="bytes over the time the link was busy in this direction"
            last={(bw) => (bw && link.bytesPerS ? `${((bw / link.bytesPerS) * 100).toFixed(0)}%` : '–')}
          />
          {dirs.every((l) => l.length === 0) && <p className="muted">No copies were traced in this run (tracing off, or no CUPTI on the host).</p>}
          <StartupCopiesNote copies={tm.startupCopies} />
        </div>
        {rounds.length > 0 && (
          <div>
            <h2>Where TTFT went</h2>
            <RoundBreakdownChart rounds={rounds} theme={theme} />
          </div>
        )}
        <div className="run-settings">
          <h2>Run settings</h2>
          {settings.length === 0 ? (
            <p className="empty">This log records no settings (no run.start line).</p>
          ) : (
            <table data-testid="settings-table">
              {settings.map((section) => (
                <tbody key={section.title}>
                  <tr className="settings-group">
                    <th colSpan={2} scope="colgroup">{section.title}</th>
                  </tr>
                  {section.rows.map((row) => (
                    <tr key={row.key} data-setting={row.key}>
                      <th scope="row">{row.label}</th>
                      <td title={row.title}>{row.value}</td>
                    </tr>
                  ))}
                </tbody>
              ))}
            </table>
          )}
        </div>
      </div>
    </section>
  );
}
