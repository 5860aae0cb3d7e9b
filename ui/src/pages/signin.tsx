// Sign-in with an access token or client credentials, and who the current token belongs to.
import { useState } from 'preact/hooks';
import { signIn, signInWithClient, useSession, type Whoami } from '../api';
import { ErrorText, List, ScrollTable, Time, Title, messageOf } from '../components';
import { Link, navigate, useLocation } from '../router';

/** Only paths of this UI, so a crafted link cannot send the user elsewhere after sign-in. */
function safeNext(next: string | null): string {
  return next && next.startsWith('/ui/') && !next.startsWith('/ui/signin') ? next : '/ui/';
}

export function Caller({ whoami }: { whoami: Whoami }) {
  return (
    <section aria-labelledby="caller-heading">
      <h2 id="caller-heading">Signed in as {whoami.name}</h2>
      <dl class="facts">
        <dt>Account roles</dt>
        <dd>
          <List items={whoami.accountRoles} />
        </dd>
        <dt>Token expires</dt>
        <dd>{whoami.expiresAt ? <Time value={whoami.expiresAt} /> : 'never (bootstrap token)'}</dd>
        <dt>May create namespaces</dt>
        <dd>{whoami.mayCreateNamespaces ? 'yes' : 'no'}</dd>
      </dl>
      {whoami.namespaces.length ? (
        <ScrollTable label="Your roles per namespace">
          <thead>
            <tr>
              <th scope="col">Namespace</th>
              <th scope="col">Roles</th>
              <th scope="col">May</th>
            </tr>
          </thead>
          <tbody>
            {whoami.namespaces.map((ns) => (
              <tr key={ns.name}>
                <td>
                  <Link href={`/ui/namespaces/${encodeURIComponent(ns.name)}/services`}>{ns.name}</Link>
                </td>
                <td>
                  <List items={ns.roles} />
                </td>
                <td>
                  <List items={[ns.read && 'read', ns.write && 'write', ns.connect && 'connect']} />
                </td>
              </tr>
            ))}
          </tbody>
        </ScrollTable>
      ) : (
        <p>You may not read any namespace.</p>
      )}
    </section>
  );
}

export function SignIn() {
  const { whoami } = useSession();
  const { query } = useLocation();
  const next = safeNext(query.get('next'));
  const [keep, setKeep] = useState(false);
  const [token, setToken] = useState('');
  const [clientId, setClientId] = useState('');
  const [clientSecret, setClientSecret] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();

  const run = async (attempt: () => Promise<unknown>) => {
    setBusy(true);
    setError(undefined);
    try {
      await attempt();
      setToken('');
      setClientSecret('');
      navigate(next);
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <Title text="Sign in" />
      {whoami && (
        <>
          <Caller whoami={whoami} />
          <p>
            <Link href={next}>Continue</Link>
          </p>
          <h2>Use another token</h2>
        </>
      )}
      <ErrorText message={error} />
      <p class="check">
        <input id="keep" type="checkbox" checked={keep} onChange={(e) => setKeep(e.currentTarget.checked)} />
        <label for="keep">Keep me signed in for this tab</label>
      </p>
      <p class="muted">Otherwise the token is held in memory only: reloading the page signs you out. It is never stored beyond this tab.</p>
      <div class="cards">
        <form
          class="card"
          onSubmit={(e) => {
            e.preventDefault();
            run(() => signIn(token.trim(), keep));
          }}
        >
          <h2>With a token</h2>
          <label for="token">Access token</label>
          <textarea id="token" rows={3} required autoComplete="off" spellcheck={false} value={token} onInput={(e) => setToken(e.currentTarget.value)} />
          <p class="muted">The bootstrap admin token from the state directory, or one from <code>postern token issue</code>.</p>
          <button type="submit" class="primary" disabled={busy}>
            Sign in
          </button>
        </form>
        <form
          class="card"
          onSubmit={(e) => {
            e.preventDefault();
            run(() => signInWithClient(clientId.trim(), clientSecret, keep));
          }}
        >
          <h2>With a workload's client credentials</h2>
          <label for="client-id">Client ID</label>
          <input id="client-id" type="text" required autoComplete="username" value={clientId} onInput={(e) => setClientId(e.currentTarget.value)} />
          <label for="client-secret">Client secret</label>
          <input
            id="client-secret"
            type="password"
            required
            autoComplete="current-password"
            value={clientSecret}
            onInput={(e) => setClientSecret(e.currentTarget.value)}
          />
          <button type="submit" class="primary" disabled={busy}>
            Use client credentials
          </button>
        </form>
      </div>
    </>
  );
}
