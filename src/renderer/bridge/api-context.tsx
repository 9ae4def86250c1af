import { createContext, useContext } from 'react';
import type { KvScopeApi } from '../../shared/api';

export const ApiContext = createContext<KvScopeApi | null>(null);

export function useApi(): KvScopeApi {
  const api = useContext(ApiContext);
  if (!api) throw new Error('useApi outside ApiContext');
  return api;
}
