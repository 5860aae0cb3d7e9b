// A namespace's resources, one tab per kind, each a table of the spec fields that matter; creating identities.
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { api, call, may, useSession, type Resource, specOf } from '../api';
import { Badge, CliCommand, CopyButton, ErrorText, List, ScrollTable, Show, Title, messageOf, useLoad, useOverview } from '../components';
import { Link, navigate } from '../router';
import { ReconcilePlan } from './plan';

// The spec shapes as resource files write them (crates/postern-model); the API types specs only as objects.
export interface ServiceSpec {
  target: string;
  database: string;
  upstream: {
    mode: 'static' | 'dynamic' | 'intents' | 'dynamicConfig';
    user?: string;
    passwordSecret?: string;
    staticRole?: string;
    credentialRole?: string;
    configs?: { name: string; target?: string; database?: string; user: string }[];
    rules?: { condition?: string; matchAny?: boolean; config: string }[];
  };
  pool?: { enabled?: boolean; maxIdle?: number; idleTimeoutSecs?: number; maxLifetimeSecs?: number };
  timeouts?: { idleSecs?: number; idleInTransactionSecs?: number };
  authorization?: { rules?: { name: string; effect: 'ALLOW' | 'DENY'; condition?: string; matchAny?: boolean }[]; plugins?: string[] };
  auth?: { providers?: string[] };
}
export interface IdentitySpec {
  type?: 'human' | 'workload';
  groups?: string[];
  attributes?: Record<string, string>;
  clientCertificate?: { commonName: string };
}
interface TargetSpec {
  address: string;
  sslMode?: string;
  admin?: { user: string };
  maxConnections?: number;
  maxConnectionsPerUser?: number;
}
interface RoleBindingSpec {
  role: string;
  subject: { identity?: string; group?: string };
}
export interface CredentialRoleSpec {
  target: string;
  database: string;
  defaultTtl?: string;
  maxTtl?: string;
  usernameTemplate?: string;
}
interface StaticRoleSpec {
  target: string;
  username: string;
  rotationPeriod: string;
}
interface IntentsSpec {
  identity: string;
  access: { service?: string; target?: string; database?: string; table?: string; sequence?: string; operations?: string[] }[];
}
interface PluginSpec {
  type: string;
  source: { path?: string; sha256?: string };
  failure?: string;
  limits?: { memoryMib?: number; callTimeoutMs?: number };
}

const dash = <span class="muted">—</span>;

/** Where clients reach the wire proxy: its listener, or this page's host when it listens on every address. */
export interface ProxyEndpoint {
  /** As a URI writes it (IPv6 in brackets). */
  host: string;
  port: number;
  /** The listener as the overview gave it; absent while unknown (6432 is assumed). */
  listen?: string;
}

export function proxyEndpoint(listen?: string): ProxyEndpoint {
  const m = listen ? /^(?:\[([^\]]*)\]|([^:]*)):(\d+)$/.exec(listen) : null;
  if (!m) return { host: location.hostname, port: 6432 };
  const address = m[1] ?? m[2];
  const any = !address || address === '0.0.0.0' || address === '::';
  return { host: any ? location.hostname : address.includes(':') ? `[${address}]` : address, port: Number(m[3]), listen };
}

/** The proxy's endpoint from the shared overview; undefined until it answers (6432 if it cannot). */
export function useProxy(): ProxyEndpoint | undefined {
  const overview = useOverview();
  return overview.data || overview.error ? proxyEndpoint(overview.data?.listeners.proxy) : undefined;
}

/** How clients name things at the wire proxy: `dbname=<service>.<ns> user=<identity>.<ns>` (README). */
export function connectionStrings(service: string, ns: string, identity: string, proxy: ProxyEndpoint) {
  const { host, port } = proxy;
  const db = `${service}.${ns}`;
  return {
    psql: `psql "host=${host.replace(/^\[(.*)\]$/, '$1')} port=${port} dbname=${db} user=${identity}"`,
    // Identity and service names are DNS labels joined by a dot: nothing in them needs escaping.
    uri: `postgresql://${identity}@${host}:${port}/${db}`,
    jdbc: `jdbc:postgresql://${host}:${port}/${db}?user=${identity}`,
  };
}

function CopyPsql({ service, ns, me }: { service: string; ns: string; me?: string }) {
  const proxy = useProxy();
  return proxy ? <CopyButton text={connectionStrings(service, ns, callerIdentity(me, ns), proxy).psql} label="Copy psql command" /> : null;
}

/** The caller's own identity when it is one (`alice.team-a`), else a placeholder to fill in. */
export function callerIdentity(name: string | undefined, ns: string): string {
  return name && /^[a-z0-9-]+\.[a-z0-9-]+$/.test(name) ? name : `<identity>.${ns}`;
}

export function upstreamSummary(spec: ServiceSpec): string {
  const u = spec.upstream;
  switch (u.mode) {
    case 'static':
      return u.staticRole ? `static (static role ${u.staticRole})` : `static (user ${u.user ?? '?'})`;
    case 'dynamic':
      return `dynamic (credential role ${u.credentialRole})`;
    case 'dynamicConfig':
      return `dynamicConfig (${u.rules?.length ?? 0} routes to ${(u.configs ?? []).map((c) => c.name).join(', ') || 'no configs'})`;
    default:
      return u.mode;
  }
}

export function accessSummary(a: IntentsSpec['access'][number]): string {
  const where = a.service ? `service ${a.service}` : `${a.target ?? '?'}/${a.database ?? '?'}`;
  const what = a.table ? `table ${a.table}` : a.sequence ? `sequence ${a.sequence}` : 'all tables';
  return `${where}: ${a.operations?.length ? a.operations.join(', ') : 'all privileges'} on ${what}`;
}

export function statusBadge(status: Resource['status']) {
  if (!status) return dash;
  const tone = status.state === 'applied' || status.state === 'loaded' ? 'ok' : status.state === 'error' ? 'bad' : 'warn';
  return <Badge tone={tone}>{status.state}</Badge>;
}

interface KindView {
  label: string;
  kind: string;
  columns: [string, (r: Resource, ns: string, me: string | undefined) => ComponentChildren][];
}

const nameLink = (plural: string) => (r: Resource, ns: string) => (
  <Link href={`/ui/namespaces/${encodeURIComponent(ns)}/${plural}/${encodeURIComponent(r.metadata.name)}`}>{r.metadata.name}</Link>
);

/** The tabs, in the order an operator usually looks. */
export const KINDS: Record<string, KindView> = {
  services: {
    label: 'Services',
    kind: 'Service',
    columns: [
      ['Name', nameLink('services')],
      ['Target', (r) => specOf<ServiceSpec>(r).target],
      ['Database', (r) => specOf<ServiceSpec>(r).database],
      ['Upstream', (r) => upstreamSummary(specOf<ServiceSpec>(r))],
      [
        'Rules',
        (r) => {
          const rules = specOf<ServiceSpec>(r).authorization?.rules ?? [];
          return rules.length ? rules.map((rule) => `${rule.effect} ${rule.name}`).join(', ') : dash;
        },
      ],
      [
        'Pool',
        (r) => {
          const pool = specOf<ServiceSpec>(r).pool;
          return pool?.enabled === false ? 'off' : `on (${pool?.maxIdle ?? 20} idle)`;
        },
      ],
      [
        'Connect',
        (r, ns, me) => <CopyPsql service={r.metadata.name} ns={ns} me={me} />,
      ],
    ],
  },
  identities: {
    label: 'Identities',
    kind: 'Identity',
    columns: [
      ['Name', nameLink('identities')],
      ['Type', (r) => specOf<IdentitySpec>(r).type ?? 'human'],
      ['Groups', (r) => <List items={specOf<IdentitySpec>(r).groups} />],
      [
        'Attributes',
        (r) => (
          <List
            items={Object.entries(specOf<IdentitySpec>(r).attributes ?? {}).map(([key, value]) => `${key}=${value}`)}
          />
        ),
      ],
      ['Client certificate', (r) => specOf<IdentitySpec>(r).clientCertificate?.commonName ?? dash],
    ],
  },
  rolebindings: {
    label: 'Role bindings',
    kind: 'RoleBinding',
    columns: [
      ['Name', nameLink('rolebindings')],
      ['Role', (r) => specOf<RoleBindingSpec>(r).role],
      [
        'Subject',
        (r) => {
          const s = specOf<RoleBindingSpec>(r).subject;
          return s.identity ? `identity ${s.identity}` : `group ${s.group}`;
        },
      ],
    ],
  },
  targets: {
    label: 'Targets',
    kind: 'Target',
    columns: [
      ['Name', nameLink('targets')],
      ['Address', (r) => specOf<TargetSpec>(r).address],
      ['SSL mode', (r) => specOf<TargetSpec>(r).sslMode ?? 'prefer'],
      ['Admin user', (r) => specOf<TargetSpec>(r).admin?.user ?? dash],
      [
        'Max connections',
        (r) => {
          const t = specOf<TargetSpec>(r);
          return `${t.maxConnections ?? 'auto'}${t.maxConnectionsPerUser ? ` (${t.maxConnectionsPerUser} per user)` : ''}`;
        },
      ],
    ],
  },
  credentialroles: {
    label: 'Credential roles',
    kind: 'CredentialRole',
    columns: [
      ['Name', nameLink('credentialroles')],
      ['Target', (r) => specOf<CredentialRoleSpec>(r).target],
      ['Database', (r) => specOf<CredentialRoleSpec>(r).database],
      ['Default TTL', (r) => specOf<CredentialRoleSpec>(r).defaultTtl ?? dash],
      ['Max TTL', (r) => specOf<CredentialRoleSpec>(r).maxTtl ?? dash],
      ['Username template', (r) => specOf<CredentialRoleSpec>(r).usernameTemplate ?? dash],
    ],
  },
  intents: {
    label: 'Intents',
    kind: 'Intents',
    columns: [
      ['Name', nameLink('intents')],
      ['Identity', (r) => specOf<IntentsSpec>(r).identity],
      [
        'Access',
        (r) => (
          <ul class="plain">
            {specOf<IntentsSpec>(r).access.map((a, i) => (
              <li key={i}>{accessSummary(a)}</li>
            ))}
          </ul>
        ),
      ],
      ['Status', (r) => statusBadge(r.status)],
      ['Message', (r) => r.status?.message ?? dash],
    ],
  },
  staticroles: {
    label: 'Static roles',
    kind: 'StaticRole',
    columns: [
      ['Name', nameLink('staticroles')],
      ['Target', (r) => specOf<StaticRoleSpec>(r).target],
      ['Username', (r) => specOf<StaticRoleSpec>(r).username],
      ['Rotation period', (r) => specOf<StaticRoleSpec>(r).rotationPeriod],
    ],
  },
  plugins: {
    label: 'Plugins',
    kind: 'Plugin',
    columns: [
      ['Name', nameLink('plugins')],
      ['Type', (r) => specOf<PluginSpec>(r).type],
      ['Source', (r) => specOf<PluginSpec>(r).source.path ?? specOf<PluginSpec>(r).source.sha256?.slice(0, 12) ?? dash],
      ['On failure', (r) => specOf<PluginSpec>(r).failure ?? 'closed'],
      ['Status', (r) => statusBadge(r.status)],
      ['Message', (r) => r.status?.message ?? dash],
    ],
  },
};

/** Lists one kind in a namespace (every page of it). */
export async function listAll(ns: string, plural: string): Promise<Resource[]> {
  const items: Resource[] = [];
  let next: string | undefined;
  do {
    const page = await call(
      // One typed path stands for every resource collection: they share the ResourceList shape.
      api.GET(`/api/v1/namespaces/{namespace}/${plural}` as '/api/v1/namespaces/{namespace}/services', {
        params: { path: { namespace: ns }, query: { limit: 500, continue: next } },
      }),
    );
    items.push(...page.items);
    next = page.continue ?? undefined;
  } while (next);
  return items;
}

function CreateIdentity({ ns }: { ns: string }) {
  const [name, setName] = useState('');
  const [type, setType] = useState<'human' | 'workload'>('human');
  const [groups, setGroups] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const groupList = groups
    .split(',')
    .map((g) => g.trim())
    .filter(Boolean);
  const file = `identity-${name || 'NAME'}.yaml`;
  const yaml =
    `kind: Identity\nmetadata:\n  name: ${name || 'NAME'}\n  namespace: ${ns}\nspec:\n  type: ${type}\n` +
    (groupList.length ? `  groups: [${groupList.join(', ')}]\n` : '');
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await call(
        api.POST('/api/v1/namespaces/{namespace}/identities', {
          params: { path: { namespace: ns } },
          body: { kind: 'Identity', metadata: { name, namespace: ns }, spec: { type, ...(groupList.length ? { groups: groupList } : {}) } },
        }),
      );
      navigate(`/ui/namespaces/${encodeURIComponent(ns)}/identities/${encodeURIComponent(name)}`);
    } catch (e) {
      setError(messageOf(e));
      setBusy(false);
    }
  };
  return (
    <form class="card" aria-labelledby="create-identity-heading" onSubmit={submit}>
      <h2 id="create-identity-heading">Create identity</h2>
      <ErrorText message={error} />
      <label for="identity-name">Name</label>
      <input id="identity-name" required pattern="[a-z0-9]([\-a-z0-9]{0,61}[a-z0-9])?" value={name} onInput={(e) => setName(e.currentTarget.value)} />
      <label for="identity-type">Type</label>
      <select id="identity-type" value={type} onChange={(e) => setType(e.currentTarget.value as 'human' | 'workload')}>
        <option value="human">human</option>
        <option value="workload">workload</option>
      </select>
      <label for="identity-groups">Groups (comma-separated, optional)</label>
      <input id="identity-groups" value={groups} onInput={(e) => setGroups(e.currentTarget.value)} />
      <div class="actions">
        <button type="submit" class="primary" disabled={busy}>
          Create identity
        </button>
        <CliCommand command={`cat > ${file} <<'EOF'\n${yaml}EOF\npostern apply -f ${file}`} />
      </div>
    </form>
  );
}

/** The tabs: every kind, and the leases of credential roles right after those. */
const TABS = Object.entries(KINDS).flatMap(([key, view]) => (key === 'credentialroles' ? [[key, view.label], ['leases', 'Leases']] : [[key, view.label]]));

/** The kind tabs of a namespace: links, so each tab is a deep link. */
export function KindTabs({ ns, plural }: { ns: string; plural: string }) {
  return (
    <nav aria-label="Resource kinds" class="tabs">
      <ul>
        {TABS.map(([key, label]) => (
          <li key={key}>
            <Link href={`/ui/namespaces/${encodeURIComponent(ns)}/${key}`} aria-current={key === plural ? 'page' : undefined}>
              {label}
            </Link>
          </li>
        ))}
      </ul>
    </nav>
  );
}

export function Resources({ ns, plural }: { ns: string; plural: string }) {
  const { whoami } = useSession();
  const view = KINDS[plural];
  const list = useLoad(() => listAll(ns, plural), [ns, plural]);
  return (
    <>
      <p class="crumbs">
        <Link href="/ui/namespaces">Namespaces</Link> / {ns}
      </p>
      <Title text={`${view.label} in ${ns}`} />
      <KindTabs ns={ns} plural={plural} />
      <Show state={list} what={`Loading ${view.label.toLowerCase()}`}>
        {(items) =>
          items.length ? (
            <ScrollTable label={`${view.label} in ${ns}`}>
              <thead>
                <tr>
                  {view.columns.map(([header]) => (
                    <th scope="col" key={header}>
                      {header}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {items.map((r) => (
                  <tr key={r.metadata.name}>
                    {view.columns.map(([header, cell]) => (
                      <td key={header}>{cell(r, ns, whoami?.name)}</td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </ScrollTable>
          ) : (
            <p>No {view.label.toLowerCase()} in {ns}.</p>
          )
        }
      </Show>
      {plural === 'identities' && may(whoami, ns, 'write') && <CreateIdentity ns={ns} />}
      {plural === 'intents' && may(whoami, ns, 'read') && <ReconcilePlan ns={ns} />}
    </>
  );
}
