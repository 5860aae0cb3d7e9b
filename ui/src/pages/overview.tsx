// Overview: the gateway's version, uptime, listeners and health, the caller, and what the server says needs attention.
import { api, loadOverview, useSession, type Overview as Answer } from '../api';
import { Badge, List, Show, Time, Title, span, useLoad } from '../components';
import { Link, seg, withQuery } from '../router';

interface Gateway {
  overview: Answer;
  health: string;
  ready: string;
}

/** Health and readiness answer without a token; the rest is the shared overview, asked again when older than 5 s. */
async function loadGateway(): Promise<Gateway> {
  const [overview, health, ready] = await Promise.all([
    loadOverview(5000),
    api.GET('/healthz').catch(() => null),
    api.GET('/readyz').catch(() => null),
  ]);
  const readyBody = (ready?.data ?? ready?.error ?? {}) as Record<string, unknown>;
  return {
    overview,
    health: health?.response.ok ? String((health.data as Record<string, unknown>)?.status ?? 'ok') : 'unreachable',
    ready: ready ? String(readyBody.status ?? (ready.response.ok ? 'ready' : 'not ready')) : 'unreachable',
  };
}

type Item = Answer['attention'][number];

/** Leases stuck revoking are reported on their CredentialRole: they link to its leases. */
const isLease = (a: Item) => a.kind === 'CredentialRole';

function AttentionItem({ a }: { a: Item }) {
  const ns = seg(a.namespace);
  return (
    <li>
      <Badge tone={isLease(a) ? 'warn' : 'bad'}>{isLease(a) ? 'revoking' : 'error'}</Badge>{' '}
      {a.kind === 'AccessLog' ? (
        <Link href="/ui/logs">Access log</Link>
      ) : isLease(a) ? (
        <Link href={withQuery(`/ui/namespaces/${ns}/leases`, { role: a.name })}>
          Leases of {a.kind} {a.namespace}/{a.name}
        </Link>
      ) : (
        <Link href={`/ui/namespaces/${ns}/${seg(a.plural)}/${seg(a.name)}`}>
          {a.kind} {a.namespace}/{a.name}
        </Link>
      )}
      : {a.message}
    </li>
  );
}

export function Overview() {
  const { token, whoami } = useSession();
  const gateway = useLoad(loadGateway, [token]);
  return (
    <>
      <Title text="Overview" />
      <div class="cards">
        <section class="card" aria-labelledby="gw-heading">
          <h2 id="gw-heading">Gateway</h2>
          <Show state={gateway}>
            {(g) => (
              <dl class="facts">
                <dt>Version</dt>
                <dd>{g.overview.version}</dd>
                <dt>Health</dt>
                <dd>
                  <Badge tone={g.health === 'ok' ? 'ok' : 'bad'}>{g.health}</Badge>
                </dd>
                <dt>Readiness</dt>
                <dd>
                  <Badge tone={g.ready === 'ready' ? 'ok' : 'bad'}>{g.ready}</Badge>
                </dd>
                <dt>Up for</dt>
                <dd>
                  {span((Date.now() - Date.parse(g.overview.startedAt)) / 1000)} (since <Time value={g.overview.startedAt} />)
                </dd>
                <dt>Proxy listener</dt>
                <dd>
                  <code>{g.overview.listeners.proxy}</code>
                </dd>
                <dt>Admin listener</dt>
                <dd>
                  <code>{g.overview.listeners.admin}</code>
                </dd>
              </dl>
            )}
          </Show>
        </section>
        <section class="card" aria-labelledby="you-heading">
          <h2 id="you-heading">You</h2>
          <dl class="facts">
            <dt>Name</dt>
            <dd>{whoami!.name}</dd>
            <dt>Account roles</dt>
            <dd>
              <List items={whoami!.accountRoles} />
            </dd>
            <dt>Namespaces</dt>
            <dd>{whoami!.namespaces.length}</dd>
            <dt>Token expires</dt>
            <dd>{whoami!.expiresAt ? <Time value={whoami!.expiresAt} /> : 'never (bootstrap token)'}</dd>
          </dl>
          <p>
            <Link href="/ui/signin">Your roles in detail</Link>
          </p>
        </section>
      </div>
      <section aria-labelledby="attention-heading">
        <h2 id="attention-heading">Needs attention</h2>
        {gateway.error ? (
          <p class="muted">Unknown: the overview did not load.</p>
        ) : (
          <Show state={gateway} what="Checking intents, plugins and leases">
          {({ overview }) =>
            overview.attention.length ? (
              <ul class="attention">
                {overview.attention.map((a, i) => (
                  <AttentionItem key={i} a={a} />
                ))}
              </ul>
            ) : (
              <p>Nothing needs attention.</p>
            )
          }
          </Show>
        )}
      </section>
    </>
  );
}
