/**
 * Types for functions that Playwright runs inside the page. The test project compiles without the
 * DOM library, so page-side functions reach the page's globals through `globalThis as PageGlobal`.
 * Functions, not strings: the window's CSP forbids eval, and Playwright evaluates string
 * predicates with it (a console error the tests would rightly catch).
 */
export interface PageElement {
  dataset: Record<string, string | undefined>;
  value: string;
  width: number;
  height: number;
  dispatchEvent(e: unknown): boolean;
  getContext(kind: '2d'): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } };
}

export interface PageGlobal {
  document: { querySelector(selector: string): PageElement | null };
  location: { hash: string };
  Event: new (type: string, init?: { bubbles?: boolean }) => unknown;
}
