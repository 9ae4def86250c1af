/**
 * Hash routes, so every view is addressable and survives reloads:
 * #/hosts, #/new, #/runs (?pick=live when asked for a run view with none open), #/runs/<id>/live, #/runs/<id>/timeline, #/runs/<id>/summary, #/compare?runs=a,b
 */
import { useEffect, useState } from 'react';

export type Route =
  | { view: 'hosts' }
  /** pick: the run view the user asked for (nav Live/Timeline) before any run was open. */
  | { view: 'runs'; pick?: 'live' | 'timeline' | 'summary' }
  | { view: 'live'; runId: string }
  | { view: 'timeline'; runId: string }
  | { view: 'summary'; runId: string }
  | { view: 'compare'; runIds: string[] }
  | { view: 'new'; host?: string }
  | { view: 'settings' };

export function parseRoute(hash: string): Route {
  const [path = '', query = ''] = hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query);
  if (parts[0] === 'hosts') return { view: 'hosts' };
  if (parts[0] === 'settings') return { view: 'settings' };
  if (parts[0] === 'new') return params.get('host') ? { view: 'new', host: params.get('host')! } : { view: 'new' };
  if (parts[0] === 'compare') return { view: 'compare', runIds: (params.get('runs') ?? '').split(',').filter(Boolean) };
  if (parts[0] === 'runs' && parts[1]) {
    const v = parts[2];
    if (v === 'timeline') return { view: 'timeline', runId: parts[1] };
    if (v === 'summary') return { view: 'summary', runId: parts[1] };
    return { view: 'live', runId: parts[1] };
  }
  const pick = params.get('pick');
  return pick === 'live' || pick === 'timeline' || pick === 'summary' ? { view: 'runs', pick } : { view: 'runs' };
}

export function routeHref(route: Route): string {
  switch (route.view) {
    case 'hosts':
    case 'settings':
      return `#/${route.view}`;
    case 'runs':
      return route.pick ? `#/runs?pick=${route.pick}` : '#/runs';
    case 'compare':
      return `#/compare?runs=${route.runIds.map(encodeURIComponent).join(',')}`;
    case 'new':
      return route.host ? `#/new?host=${encodeURIComponent(route.host)}` : '#/new';
    default:
      return `#/runs/${encodeURIComponent(route.runId)}/${route.view}`;
  }
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const onHash = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  return route;
}
