/** Probe results shared by the Hosts and New run views (kept for the window's lifetime). */
import { useSyncExternalStore } from 'react';
import type { HostProbe } from '../shared/api';

let probes: Record<string, HostProbe> = {};
const listeners = new Set<() => void>();

export function setProbe(alias: string, p: HostProbe): void {
  probes = { ...probes, [alias]: p };
  for (const l of listeners) l();
}

export function useProbes(): Record<string, HostProbe> {
  return useSyncExternalStore(
    (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    () => probes,
  );
}
