import { useEffect, useMemo, useState } from 'react';
import type { AppInfo } from '../shared/api';
import { useApi } from './bridge/api-context';
import { routeHref, useRoute, type Route } from './router';
import { RunsView } from './features/runs/RunsView';
import { SettingsView } from './features/settings/SettingsView';
import { ShellIntegration } from './features/shell/ShellIntegration';
import { LiveView } from './features/live/LiveView';
import { TimelineView } from './features/timeline/TimelineView';
import { SummaryView } from './features/summary/SummaryView';
import { CompareView } from './features/compare/CompareView';
import { HostsView } from './features/hosts/HostsView';
import { PromptDialog } from './features/hosts/PromptDialog';
import { NewRunView } from './features/newrun/NewRunView';
import { RunCacheContext } from './hooks';
import { RunDataCache } from './run-data';

const NAV: Array<{ label: string; view: Route['view']; key: string }> = [
  { label: 'Hosts', view: 'hosts', key: '1' },
  { label: 'Runs', view: 'runs', key: '2' },
  { label: 'Live', view: 'live', key: '3' },
  { label: 'Timeline', view: 'timeline', key: '4' },
  { label: 'Compare', view: 'compare', key: '5' },
  { label: 'Settings', view: 'settings', key: '6' },
];

/** The last run opened, so Live/Timeline in the nav go somewhere useful. */
function useCurrentRun(route: Route): string | null {
  const [runId, setRunId] = useState<string | null>(null);
  useEffect(() => {
    if ('runId' in route) setRunId(route.runId);
  }, [route]);
  return runId;
}

function hrefFor(view: Route['view'], runId: string | null): string {
  // No run open yet: the library, saying why the user landed there (it was a silent detour).
  if (view === 'live' || view === 'timeline' || view === 'summary') return routeHref(runId ? { view, runId } : { view: 'runs', pick: view });
  if (view === 'compare') return '#/compare';
  return routeHref({ view } as Route);
}

export function App() {
  const api = useApi();
  const route = useRoute();
  const runId = useCurrentRun(route);
  const [info, setInfo] = useState<AppInfo | null>(null);
  // `?open=log` opens runs from their logs instead of their indexes (the reference path: tests, bench).
  const cache = useMemo(() => new RunDataCache(api, new URLSearchParams(window.location.search).get('open') === 'log' ? 'log' : 'index'), [api]);

  useEffect(
    () =>
      // Menu commands from the desktop shell arrive as pushes: navigation here; open,
      // export and engine dumps (files and dialogs) in ShellIntegration.
      api.onPush((m) => {
        if (m.kind !== 'menu') return;
        const go: Partial<Record<typeof m.action, string>> = {
          'new-run': '#/new',
          settings: '#/settings',
          'view-compare': '#/compare',
          'view-live': hrefFor('live', m.runId ?? runId),
          'view-timeline': hrefFor('timeline', m.runId ?? runId),
          'show-run': m.runId ? routeHref({ view: 'live', runId: m.runId }) : '#/runs',
        };
        const to = go[m.action];
        if (to) window.location.hash = to;
      }),
    [api, runId],
  );

  useEffect(() => {
    void api.getAppInfo().then((r) => r.ok && setInfo(r.value));
  }, [api]);

  useEffect(() => {
    // Alt+1..6 switch views from anywhere (keyboard-first, like the profilers this mirrors).
    const onKey = (e: KeyboardEvent) => {
      if (!e.altKey) return;
      const item = NAV.find((n) => n.key === e.key);
      if (item) {
        window.location.hash = hrefFor(item.view, runId);
        e.preventDefault();
      }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [runId]);

  return (
    <div className="app">
      <nav className="nav" aria-label="Views">
        <span className="brand">KV Scope</span>
        {NAV.map((n) => (
          <a
            key={n.view}
            href={hrefFor(n.view, runId)}
            className={route.view === n.view ? 'active' : ''}
            aria-current={route.view === n.view ? 'page' : undefined}
            title={`${n.label} (Alt+${n.key})`}
            data-nav={n.view}
          >
            {n.label}
          </a>
        ))}
        <span className="spacer" />
        <span className="shell-info">{info ? `v${info.version} · ${info.shell}` : ''}</span>
      </nav>
      <RunCacheContext.Provider value={cache}>
        <main className="content" data-view={route.view}>
          {route.view === 'runs' && <RunsView pick={route.pick} />}
          {route.view === 'hosts' && <HostsView />}
          {route.view === 'new' && <NewRunView key={route.host ?? ''} host={route.host} />}
          {route.view === 'live' && <LiveView key={route.runId} runId={route.runId} />}
          {route.view === 'timeline' && <TimelineView key={route.runId} runId={route.runId} />}
          {route.view === 'summary' && <SummaryView key={route.runId} runId={route.runId} />}
          {route.view === 'compare' && <CompareView runIds={route.runIds} />}
          {route.view === 'settings' && <SettingsView />}
        </main>
        <ShellIntegration runId={runId} />
        <PromptDialog />
      </RunCacheContext.Provider>
    </div>
  );
}
