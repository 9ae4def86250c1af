/**
 * What a run view shows while its run opens: nothing for the first 200 ms (most opens are done by
 * then, and a flash of "loading" is noise), then a progress bar — with how far the core is through
 * indexing the log when it has to build the index first (docs/run-index.md), else indeterminate.
 */
import { useEffect, useState } from 'react';
import { useRunCache } from '../../hooks';

/** Opens shorter than this show no indicator. */
export const OPENING_INDICATOR_MS = 200;

export function RunOpening({ runId }: { runId: string }) {
  const cache = useRunCache();
  const [shown, setShown] = useState(false);
  const [fraction, setFraction] = useState<number | null>(() => cache.openingProgress(runId) ?? null);
  useEffect(() => {
    const timer = setTimeout(() => setShown(true), OPENING_INDICATOR_MS);
    const off = cache.listenOpening((id) => {
      if (id === runId) setFraction(cache.openingProgress(id) ?? null);
    });
    return () => {
      clearTimeout(timer);
      off();
    };
  }, [cache, runId]);
  if (!shown) return null;
  const pct = fraction === null ? null : Math.round(fraction * 100);
  return (
    <div className="run-opening" role="status" data-testid="run-opening">
      <p className="loading">{pct === null ? 'Opening run…' : `Opening run… indexing its log (once): ${pct}%`}</p>
      <progress max={1} value={fraction ?? undefined} aria-label="Opening run" />
    </div>
  );
}
