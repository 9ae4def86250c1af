import type { Route } from '../router';

/** Shown for views whose feature module is not mounted yet. */
export function PlaceholderView({ route }: { route: Route }) {
  return (
    <section className="placeholder">
      <h1>{route.view}</h1>
      <p>This view is not available in this build.</p>
    </section>
  );
}
