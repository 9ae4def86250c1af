/**
 * Questions the core asks while connecting (pushed as `prompt`): an unknown host key, shown with
 * its fingerprint for the user to accept or refuse (ssh(1)'s StrictHostKeyChecking=ask), or a key
 * passphrase / password. Secrets go straight back to the core and are not kept here.
 */
import { useEffect, useRef, useState } from 'react';
import type { HostPrompt } from '../../../shared/api';
import { useApi } from '../../bridge/api-context';

export function PromptDialog() {
  const api = useApi();
  const [queue, setQueue] = useState<HostPrompt[]>([]);
  const secret = useRef<HTMLInputElement>(null);
  useEffect(() => api.onPush((m) => m.kind === 'prompt' && setQueue((q) => [...q, m.prompt])), [api]);
  // "Remember" only where the OS keychain can encrypt it (Settings reports whether it can).
  const remember = useRef<HTMLInputElement>(null);
  const [keychain, setKeychain] = useState<{ available: boolean; reason: string | null }>({ available: false, reason: null });
  useEffect(() => {
    void api.getSettings().then((r) => r.ok && setKeychain({ available: r.value.secrets.rememberAvailable, reason: r.value.secrets.reason }));
  }, [api]);
  const p = queue[0];
  if (!p) return null;
  const done = () => setQueue((q) => q.slice(1));
  const answerKey = (accept: boolean) => void api.answerHostKey(p.id, accept).then(done);
  const answerSecret = (value: string | null) => {
    void api.providePassphrase(p.id, value, value !== null && remember.current?.checked ? { remember: true } : undefined).then(done);
    if (secret.current) secret.current.value = '';
  };
  // Escape answers no, as closing ssh(1)'s prompt does: refuse the key, cancel the secret. The
  // dialog is modal, and without it the keyboard had no way out but Tab to a button.
  const onKeyDown = (e: React.KeyboardEvent) => {
    if (e.key !== 'Escape') return;
    e.preventDefault();
    if (p.type === 'host-key') answerKey(false);
    else answerSecret(null);
  };
  return (
    <div className="modal-backdrop" onKeyDown={onKeyDown}>
      <div className="modal" role="dialog" aria-modal="true" aria-labelledby="prompt-title" data-testid="prompt">
        {p.type === 'host-key' ? (
          <>
            <h2 id="prompt-title">Unknown host key for {p.host}</h2>
            <p>{p.message}</p>
            <p>
              {p.hop} offers a {p.keyType} key with fingerprint
              <br />
              <code className="fingerprint">{p.fingerprint}</code>
            </p>
            <p className="muted">Accept only if this matches the host's key (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the host). Accepting records it in known_hosts.</p>
            <div className="modal-actions">
              <button type="button" onClick={() => answerKey(false)} autoFocus>
                Refuse
              </button>
              <button type="button" className="primary" onClick={() => answerKey(true)}>
                Accept and remember
              </button>
            </div>
          </>
        ) : (
          <form
            onSubmit={(e) => {
              e.preventDefault();
              answerSecret(secret.current?.value ?? '');
            }}
          >
            <h2 id="prompt-title">{p.type === 'passphrase' ? `Passphrase for ${p.keyFile}` : `Password for ${p.user}@${p.host}`}</h2>
            <p>{p.message}</p>
            <input ref={secret} type="password" autoFocus autoComplete="off" aria-label={p.type === 'passphrase' ? 'Key passphrase' : 'Password'} />
            <label className="muted" title={keychain.available ? 'Encrypted by the OS keychain' : (keychain.reason ?? 'No OS keychain')}>
              <input ref={remember} type="checkbox" name="remember-secret" disabled={!keychain.available} /> Remember in the OS keychain
              {!keychain.available && ' (unavailable: kept for this session only)'}
            </label>
            <div className="modal-actions">
              <button type="button" onClick={() => answerSecret(null)}>
                Cancel
              </button>
              <button type="submit" className="primary">
                OK
              </button>
            </div>
          </form>
        )}
      </div>
    </div>
  );
}
