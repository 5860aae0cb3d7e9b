// Overview: the gateway's health and version, the caller, and resources whose status reports a problem.
import { Fragment } from 'preact';
import { api, useSession, type Resource, type Whoami } from '../api';
import { Badge, List, Loading, Show, Time, Title, useLoad } from '../components';
import { Link } from '../router';
import { listAll } from './resources';

interface Gateway {
  health: string;
  ready: string;
  version?: string;
  extra: [string, string][];
}

/** Health and readiness answer without a token; the version is the OpenAPI document's. */
async function loadGateway(): Promise<Gateway> {
  const [health, ready, doc] = await Promise.all([
    api.GET('/healthz').catch(() => null),
    api.GET('/readyz').catch(() => null),
    api.GET('/api/v1/openapi.json').catch(() => null),
  ]);
  const healthBody = (health?.data ?? {}) as Record<string, unknown>;
  const readyBody = (ready?.data ?? ready?.error ?? {}) as Record<string, unknown>;
  // Fields beyond `status` (listeners, uptime…) are shown as the gateway gives them.
  const extra = Object.entries(healthBody)
    .filter(([key]) => key !== 'status')
    .map(([key, value]): [string, string] => [key, typeof value === 'string' ? value : JSON.stringify(value)]);
  const info = (doc?.data as { info?: { version?: string } } | undefined)?.info;
  return {
    health: health?.response.ok ? String(healthBody.status ?? 'ok') : 'unreachable',
    ready: ready ? String(readyBody.status ?? (ready.response.ok ? 'ready' : 'not ready')) : 'unreachable',
    version: info?.version,
    extra,
  };
}

interface Attention {
  ns: string;
  plural: string;
  kind: string;
  name: string;
  state: string;
  message: string;
}

/** Intents and Plugins carry a status; anything not applied/loaded needs a look. */
const WATCHED = ['intents', 'plugins'] as const;
const FINE = new Set(['applied', 'loaded', 'ok']);

async function loadAttention(whoami: Whoami): Promise<Attention[]> {
  const lists = await Promise.all(
    whoami.namespaces
      .filter((ns) => ns.read)
      .flatMap((ns) =>
        WATCHED.map(async (plural) => {
          const items = await listAll(ns.name, plural);
          return items.map((item: Resource) => ({ ns: ns.name, plural, item }));
        }),
      ),
  );
  return lists
    .flat()
    .filter(({ item }) => item.status && !FINE.has(item.status.state))
    .map(({ ns, plural, item }) => ({
      ns,
      plural,
      kind: item.kind,
      name: item.metadata.name,
      state: item.status!.state,
      message: item.status!.message,
    }));
}

export function Overview() {
  const { whoami } = useSession();
  const gateway = useLoad(loadGateway, []);
  const attention = useLoad(() => loadAttention(whoami!), [whoami]);
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
                <dd>{g.version ?? <span class="muted">unknown</span>}</dd>
                <dt>Health</dt>
                <dd>
                  <Badge tone={g.health === 'ok' ? 'ok' : 'bad'}>{g.health}</Badge>
                </dd>
                <dt>Readiness</dt>
                <dd>
                  <Badge tone={g.ready === 'ready' ? 'ok' : 'bad'}>{g.ready}</Badge>
                </dd>
                {g.extra.map(([key, value]) => (
                  <Fragment key={key}>
                    <dt>{key}</dt>
                    <dd>{value}</dd>
                  </Fragment>
                ))}
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
        {attention.loading && !attention.data ? (
          <Loading what="Checking intents and plugins" />
        ) : (
          <Show state={attention}>
            {(items) =>
              items.length ? (
                <ul class="attention">
                  {items.map((a) => (
                    <li key={`${a.ns}/${a.plural}/${a.name}`}>
                      <Badge tone={a.state === 'error' ? 'bad' : 'warn'}>{a.state}</Badge>{' '}
                      <Link href={`/ui/namespaces/${encodeURIComponent(a.ns)}/${a.plural}/${encodeURIComponent(a.name)}`}>
                        {a.kind} {a.ns}/{a.name}
                      </Link>
                      : {a.message}
                    </li>
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
