/**
 * Applies the Settings theme to the page. "system" removes the attribute so app.css's
 * prefers-color-scheme rules follow the OS (and its changes, live); dark and light pin it.
 */
import type { Theme } from '../../../shared/api';
import './theme.css';

export function applyTheme(theme: Theme, root: HTMLElement = document.documentElement): void {
  if (theme === 'system') delete root.dataset.theme;
  else root.dataset.theme = theme;
}

/** Fired on window after settings are saved, so open views can pick up new defaults. */
export const SETTINGS_CHANGED_EVENT = 'kvscope:settings-changed';
