import { useEffect, useState } from 'react';
import type { RunListing } from '../../../shared/api';
import { formatNs } from '../../../shared/format';
import { useApi } from '../../bridge/api-context';
import { routeHref } from '../../router';

export function RunsView() {
  const api = useApi();
  const [runs, setRuns] = useState<RunListing[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    void api.listRuns().then((r) => (r.ok ? setRuns(r.value) : setError(r.error.message)));
  }, [api]);

  if (error) return <p role="alert" className="error">Could not list runs: {error}</p>;
  if (!runs) return <p>Loading runs…</p>;
  return (
    <section>
      <h1>Runs</h1>
      <table className="runs-table">
        <thead>
          <tr>
            <th>Name</th>
            <th>Host</th>
            <th>GPU</th>
            <th>Model</th>
            <th>Users</th>
            <th>Status</th>
            <th>TTFT mean</th>
            <th>E2E</th>
          </tr>
        </thead>
        <tbody>
          {runs.map((r) => (
            <tr key={r.id} data-run-id={r.id}>
              <td>
                <a href={routeHref({ view: 'live', runId: r.id })}>{r.name}</a>
              </td>
              <td>{r.host}</td>
              <td>{r.gpu ?? '–'}</td>
              <td>{r.model ?? '–'}</td>
              <td>{r.users ?? '–'}</td>
              <td>{r.status}</td>
              <td>{formatNs(r.ttft_ns_mean)}</td>
              <td>{formatNs(r.e2e_ns)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {runs.length === 0 && <p>No runs yet.</p>}
    </section>
  );
}
