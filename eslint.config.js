import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

const noElectron = {
  paths: [{ name: 'electron', message: 'src/main/core, src/shared and src/cli are framework-free: no electron here.' }],
  patterns: [{ group: ['electron/*'], message: 'framework-free folder: no electron here.' }],
};

export default tseslint.config(
  {
    ignores: ['out/**', 'dist/**', 'dist-cli/**', 'node_modules/**', 'test-artifacts/**', 'resources/**', '**/*.d.ts'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['src/main/core/**', 'src/shared/**', 'src/cli/**'],
    rules: { 'no-restricted-imports': ['error', noElectron] },
  },
  {
    // Only the preload may touch ipcRenderer; the renderer sees the typed bridge alone.
    files: ['src/renderer/**'],
    languageOptions: { globals: { ...globals.browser } },
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [{ name: 'electron', message: 'The renderer talks to main only through the typed bridge (window.kvscope).' }],
          patterns: [{ group: ['node:*'], message: 'The renderer has no Node.' }],
        },
      ],
      'no-restricted-syntax': ['error', { selector: "Identifier[name='ipcRenderer']", message: 'ipcRenderer belongs to the preload only.' }],
    },
  },
  {
    // ipcMain is used by src/main/ipc only.
    files: ['src/main/**'],
    ignores: ['src/main/ipc/**'],
    rules: {
      'no-restricted-syntax': ['error', { selector: "Identifier[name='ipcMain']", message: 'Only src/main/ipc touches ipcMain.' }],
    },
  },
);
