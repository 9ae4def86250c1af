/**
 * The preload: the renderer's only door to the app (window.kvscope). contextIsolation keeps this
 * object separate from the page; the sandbox keeps Node out of it. Its keys are exactly the
 * KvScopeApi members (test/unit/preload-surface.test.ts).
 */
import { contextBridge, ipcRenderer, webUtils } from 'electron';
import { createPreloadApi } from './api';

contextBridge.exposeInMainWorld('kvscope', createPreloadApi(ipcRenderer, webUtils));
