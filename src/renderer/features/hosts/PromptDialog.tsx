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
  const p = queue[0];
  if (!p) return null;
  const done = () => setQueue((q) => q.slice(1));
  const answerKey = (accept: boolean) => void api.answerHostKey(p.id, accept).then(done);
  const answerSecret = (value: string | null) => {
    void api.providePassphrase(p.id, value).then(done);
    if (secret.current) secret.current.value = '';
  };
  return (
    <div className="modal-backdrop">
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
