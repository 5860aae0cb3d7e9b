// One resource: its spec (services in detail, with connection strings), its status, and delete for writers.
import { useState } from 'preact/hooks';
import { ApiError, api, call, may, useSession, type Resource, type Schemas, specOf } from '../api';
import { Badge, CliCommand, ConfirmButton, CopyButton, ErrorText, Loading, ScrollTable, Show, Title, messageOf, useLoad } from '../components';
import { Link, navigate } from '../router';
import { ReconcilePlan } from './plan';
import { PluginRuntime } from './plugin';
import { KINDS, callerIdentity, connectionStrings, statusBadge, upstreamSummary, useProxy, type ServiceSpec } from './resources';

type ItemPath = '/api/v1/namespaces/{namespace}/services/{name}';

/** One item of any collection; they share the Resource shape, so one typed path stands for all. */
export function getResource(ns: string, plural: string, name: string) {
  return call(api.GET(`/api/v1/namespaces/{namespace}/${plural}/{name}` as ItemPath, { params: { path: { namespace: ns, name } } }));
}

/** psql, libpq and JDBC lines for the caller (or a placeholder identity), once the proxy's address is known. */
function ConnectStrings({ service, ns, me }: { service: string; ns: string; me?: string }) {
  const proxy = useProxy();
  if (!proxy) return <Loading what="Loading the proxy's address" />;
  const strings = connectionStrings(service, ns, callerIdentity(me, ns), proxy);
  return (
    <>
      <p class="muted">
        {proxy.listen ? `The gateway's proxy listens on ${proxy.listen}.` : "The gateway's proxy port is 6432 unless it was configured otherwise."} The
        password is an API key or an access token.
      </p>
      <ul class="plain strings">
        {(
          [
            ['psql', strings.psql],
            ['libpq URI', strings.uri],
            ['JDBC', strings.jdbc],
          ] as const
        ).map(([label, text]) => (
          <li key={label}>
            <span class="label">{label}</span> <code>{text}</code> <CopyButton text={text} label={`Copy ${label}`} />
          </li>
        ))}
      </ul>
    </>
  );
}

function ServiceDetails({ r, ns, me }: { r: Resource; ns: string; me?: string }) {
  const spec = specOf<ServiceSpec>(r);
  const rules = spec.authorization?.rules ?? [];
  const up = spec.upstream;
  return (
    <>
      <dl class="facts">
        <dt>Target</dt>
        <dd>
          <Link href={`/ui/namespaces/${encodeURIComponent(ns)}/targets/${encodeURIComponent(spec.target)}`}>{spec.target}</Link>
        </dd>
        <dt>Database</dt>
        <dd>{spec.database}</dd>
        <dt>Upstream</dt>
        <dd>{upstreamSummary(spec)}</dd>
        <dt>Pool</dt>
        <dd>
          {spec.pool?.enabled === false
            ? 'off'
            : `on: ${spec.pool?.maxIdle ?? 20} idle, idle timeout ${spec.pool?.idleTimeoutSecs ?? 60} s, lifetime ${spec.pool?.maxLifetimeSecs ?? 3600} s`}
        </dd>
        {spec.auth?.providers?.length ? (
          <>
            <dt>Auth providers</dt>
            <dd>{spec.auth.providers.join(', ')}</dd>
          </>
        ) : null}
      </dl>
      <h2>Connect</h2>
      <ConnectStrings service={r.metadata.name} ns={ns} me={me} />
      <h2>Authorization rules</h2>
      {rules.length ? (
        <ScrollTable label="Authorization rules">
          <thead>
            <tr>
              <th scope="col">Rule</th>
              <th scope="col">Effect</th>
              <th scope="col">Condition</th>
            </tr>
          </thead>
          <tbody>
            {rules.map((rule) => (
              <tr key={rule.name}>
                <td>{rule.name}</td>
                <td>{rule.effect}</td>
                <td>
                  <code>{rule.condition ?? (rule.matchAny ? 'matchAny' : 'always')}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </ScrollTable>
      ) : (
        <p>No rules: every statement is allowed.</p>
      )}
      {up.mode === 'dynamicConfig' && (
        <>
          <h2>Dynamic config routes</h2>
          <ScrollTable label="Dynamic config routes">
            <thead>
              <tr>
                <th scope="col">Order</th>
                <th scope="col">Condition</th>
                <th scope="col">Config</th>
              </tr>
            </thead>
            <tbody>
              {(up.rules ?? []).map((route, i) => (
                <tr key={i}>
                  <td>{i + 1}</td>
                  <td>
                    <code>{route.condition ?? (route.matchAny ? 'matchAny' : 'always')}</code>
                  </td>
                  <td>{route.config}</td>
                </tr>
              ))}
            </tbody>
          </ScrollTable>
          <ScrollTable label="Dynamic config upstream logins">
            <thead>
              <tr>
                <th scope="col">Config</th>
                <th scope="col">Target</th>
                <th scope="col">Database</th>
                <th scope="col">User</th>
              </tr>
            </thead>
            <tbody>
              {(up.configs ?? []).map((c) => (
                <tr key={c.name}>
                  <td>{c.name}</td>
                  <td>{c.target ?? spec.target}</td>
                  <td>{c.database ?? spec.database}</td>
                  <td>{c.user}</td>
                </tr>
              ))}
            </tbody>
          </ScrollTable>
        </>
      )}
    </>
  );
}

type CheckLine = Schemas['TargetCheck']['items'][number];

/** Whether the target's admin login has every right the issuer, reconciler and rotation need (namespace-admins). */
function TargetCheck({ ns, name }: { ns: string; name: string }) {
  const [lines, setLines] = useState<CheckLine[]>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const run = async () => {
    setBusy(true);
    setError(undefined);
    setLines(undefined);
    try {
      setLines((await call(api.POST('/api/v1/namespaces/{namespace}/targets/{name}/check', { params: { path: { namespace: ns, name } } }))).items);
    } catch (e) {
      const status = e instanceof ApiError ? e.status : 0;
      setError(
        status === 502
          ? `The target's admin cannot log in: ${messageOf(e)}`
          : status === 503
            ? `This gateway cannot run the check: ${messageOf(e)}`
            : messageOf(e),
      );
    } finally {
      setBusy(false);
    }
  };
  const missing = lines?.filter((line) => !line.ok).length ?? 0;
  return (
    <section aria-labelledby="check-heading">
      <h2 id="check-heading">Admin rights check</h2>
      <p class="muted">Logs in as the target's admin and reports what each feature needs, and the SQL that grants what is missing.</p>
      <div class="actions">
        <button type="button" class="primary" onClick={run} disabled={busy}>
          Run check
        </button>
        <CliCommand command={`postern target check ${name} -n ${ns}`} />
      </div>
      {busy && <Loading what="Checking the target's admin" />}
      <ErrorText message={error} />
      {lines && (
        <>
          <p role="status">
            {missing ? `${missing} of ${lines.length} requirements missing.` : `All ${lines.length} requirements met.`}
          </p>
          <ScrollTable label={`Admin rights of target ${name}`}>
            <thead>
              <tr>
                <th scope="col">Status</th>
                <th scope="col">Feature</th>
                <th scope="col">Requirement</th>
                <th scope="col">Fix</th>
              </tr>
            </thead>
            <tbody>
              {lines.map((line, i) => (
                <tr key={i} data-testid="check-row">
                  <td>
                    <Badge tone={line.ok ? 'ok' : 'bad'}>{line.ok ? 'ok' : 'missing'}</Badge>
                  </td>
                  <td>{line.feature}</td>
                  <td>{line.requirement}</td>
                  <td class="fix">
                    {line.fix ? (
                      <>
                        <code>{line.fix}</code> <CopyButton text={line.fix} label="Copy SQL" />
                      </>
                    ) : (
                      <span class="muted">—</span>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </ScrollTable>
        </>
      )}
    </section>
  );
}

export function ResourceDetail({ ns, plural, name }: { ns: string; plural: string; name: string }) {
  const { whoami } = useSession();
  const view = KINDS[plural];
  const item = useLoad(() => getResource(ns, plural, name), [ns, plural, name]);
  const [error, setError] = useState<string>();
  const remove = async () => {
    setError(undefined);
    try {
      await call(api.DELETE(`/api/v1/namespaces/{namespace}/${plural}/{name}` as ItemPath, { params: { path: { namespace: ns, name } } }));
      navigate(`/ui/namespaces/${encodeURIComponent(ns)}/${plural}`);
    } catch (e) {
      setError(messageOf(e));
    }
  };
  return (
    <>
      <p class="crumbs">
        <Link href="/ui/namespaces">Namespaces</Link> / <Link href={`/ui/namespaces/${encodeURIComponent(ns)}/${plural}`}>{ns}</Link> / {view.label}
      </p>
      <Title text={`${view.kind} ${name}`} />
      <Show state={item}>
        {(r) => (
          <>
            {r.status && (
              <section aria-labelledby="status-heading">
                <h2 id="status-heading">Status</h2>
                <p>
                  {statusBadge(r.status)} {r.status.message}
                </p>
                {r.status.statement && (
                  <pre class="code" tabIndex={0} aria-label="Failing statement">
                    {r.status.statement}
                  </pre>
                )}
              </section>
            )}
            {plural === 'services' && <ServiceDetails r={r} ns={ns} me={whoami?.name} />}
            {plural === 'targets' && may(whoami, ns, 'write') && <TargetCheck ns={ns} name={name} />}
            {plural === 'intents' && may(whoami, ns, 'read') && <ReconcilePlan ns={ns} intent={name} />}
            {plural === 'plugins' && (
              <PluginRuntime ns={ns} name={name} generation={r.metadata.generation} limits={(r.spec as { limits?: unknown }).limits} />
            )}
            <h2>Spec</h2>
            <pre class="code" tabIndex={0} aria-label={`Spec of ${view.kind} ${name}`}>
              {JSON.stringify(r.spec, null, 2)}
            </pre>
            {may(whoami, ns, 'write') && (
              <div class="actions">
                <ErrorText message={error} />
                <ConfirmButton label="Delete" confirm={`Delete ${view.kind} ${name}?`} onConfirm={remove} />
                <CliCommand command={`postern delete ${view.kind.toLowerCase()} ${name} -n ${ns}`} />
              </div>
            )}
          </>
        )}
      </Show>
    </>
  );
}
