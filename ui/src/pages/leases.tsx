// A namespace's leases of issued credentials: URL-synced filters, renew and revoke per lease, revoke all that match after a dry run.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, call, may, specOf, useSession, type Lease, type Schemas } from '../api';
import { Badge, CliCommand, ConfirmButton, ErrorText, ScrollTable, Show, Time, Title, When, messageOf, shellQuote, useLoad, type Tone } from '../components';
import { Link, navigate, seg, useLocation, withQuery } from '../router';
import { KindTabs, listAll, type CredentialRoleSpec } from './resources';

const FILTERS = ['role', 'identity', 'expiringWithin', 'all'] as const;
type Filters = Record<(typeof FILTERS)[number], string>;
const WITHIN = [
  ['', 'Any time'],
  ['15m', '15 minutes'],
  ['1h', '1 hour'],
  ['24h', '24 hours'],
];
const INCREMENTS = ['15m', '1h', '8h'];
const TONES: Record<Lease['state'], Tone> = { creating: 'info', active: 'ok', revoking: 'warn', revoked: 'info', 'rolled-back': 'info' };
const dash = <span class="muted">—</span>;

function filtersOf(query: URLSearchParams): Filters {
  const f = {} as Filters;
  for (const key of FILTERS) f[key] = query.get(key) ?? '';
  if (f.all !== '1') f.all = '';
  return f;
}

/** The filters a bulk revoke takes (ended leases are never revoked again). */
function selection(f: Filters) {
  return { role: f.role || undefined, identity: f.identity || undefined, expiringWithin: f.expiringWithin || undefined };
}

function LeaseRow({
  lease,
  ns,
  index,
  write,
  defaultTtl,
  done,
}: {
  lease: Lease;
  ns: string;
  index: number;
  write: boolean;
  defaultTtl?: string;
  done: (notice: ComponentChildren) => void;
}) {
  const [increment, setIncrement] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const path = { namespace: ns, id: lease.id };
  const act = async (work: () => Promise<ComponentChildren>) => {
    setBusy(true);
    setError(undefined);
    try {
      done(await work());
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };
  // openapi-fetch percent-encodes path values, so the id's slashes stay inside one segment.
  const renew = () =>
    act(async () => {
      const r = await call(api.POST('/api/v1/namespaces/{namespace}/leases/{id}/renew', { params: { path }, body: increment ? { increment } : {} }));
      return (
        <>
          Lease <code>{lease.id}</code> renewed until <Time value={r.expiresAt} />
          {r.capped ? ", capped at its role's maximum TTL" : ''}.
        </>
      );
    });
  const revoke = () =>
    act(async () => {
      const r = await call(api.DELETE('/api/v1/namespaces/{namespace}/leases/{id}', { params: { path } }));
      return (
        <>
          Lease <code>{r.id}</code>: {r.outcome}.
        </>
      );
    });
  const live = lease.state === 'active' || lease.state === 'creating' || lease.state === 'revoking';
  const inc = `lease-increment-${index}`;
  return (
    <tr data-testid="lease-row">
      <td>
        <code>{lease.id}</code>
      </td>
      <td>{lease.credentialRole}</td>
      <td>
        <code>{lease.username}</code>
      </td>
      <td>
        <Badge tone={TONES[lease.state] ?? 'info'}>{lease.state}</Badge>
      </td>
      <td>{lease.issuedFor}</td>
      <td>
        <Time value={lease.issuedAt} />
      </td>
      <td class="nowrap">{live ? <When value={lease.expiresAt} /> : <Time value={lease.expiresAt} />}</td>
      <td class="wide">
        {lease.lastError ?? dash}
        {lease.attempts > 0 && <span class="muted"> ({lease.attempts} attempts)</span>}
      </td>
      {write && (
        <td class="row-actions">
          <ErrorText message={error} />
          {lease.state === 'active' && (
            <div class="actions" role="group" aria-label={`Renew ${lease.id}`}>
              <label for={inc}>Increment</label>
              <select id={inc} value={increment} onChange={(e) => setIncrement(e.currentTarget.value)}>
                <option value="">Role default{defaultTtl ? ` (${defaultTtl})` : ''}</option>
                {INCREMENTS.map((value) => (
                  <option key={value} value={value}>
                    {value}
                  </option>
                ))}
              </select>
              <button type="button" class="small" onClick={renew} disabled={busy}>
                Renew
              </button>
              <CliCommand command={`postern lease renew ${shellQuote(lease.id)}${increment ? ` --increment ${increment}` : ''}`} />
            </div>
          )}
          {live ? (
            <div class="actions" role="group" aria-label={`Revoke ${lease.id}`}>
              <ConfirmButton label="Revoke" confirm={`Revoke lease ${lease.id}?`} onConfirm={revoke} busy={busy} />
              <CliCommand command={`postern lease revoke ${shellQuote(lease.id)}`} />
            </div>
          ) : (
            <span class="muted">ended</span>
          )}
        </td>
      )}
    </tr>
  );
}

/** "Revoke all matching…": a dry run names the leases, a second button revokes them, then each one's outcome. */
function RevokeMatching({ ns, filters, done }: { ns: string; filters: Filters; done: () => void }) {
  const [plan, setPlan] = useState<Schemas['BulkRevoke']>();
  const [result, setResult] = useState<Schemas['BulkRevoke']>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const chosen = selection(filters);
  const key = JSON.stringify(chosen);
  // Other filters make another question: forget the last answer.
  useEffect(() => {
    setPlan(undefined);
    setResult(undefined);
    setError(undefined);
  }, [ns, key]);
  const ask = async (dryRun: boolean) => {
    setBusy(true);
    setError(undefined);
    try {
      const answer = await call(api.POST('/api/v1/namespaces/{namespace}/leases/revoke', { params: { path: { namespace: ns } }, body: dryRun ? { ...chosen, dryRun } : { ...chosen, ids: plan?.ids ?? [] } }));
      setPlan(dryRun ? answer : undefined);
      setResult(dryRun ? undefined : answer);
      if (!dryRun) done();
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };
  const n = plan?.count ?? 0;
  const leases = (count: number) => `${count} ${count === 1 ? 'lease' : 'leases'}`;
  // `postern lease revoke --prefix ROLE` is the CLI's only bulk form: every live lease of one role.
  const cli = chosen.role && !chosen.identity && !chosen.expiringWithin ? `postern lease revoke --prefix ${shellQuote(chosen.role)} -n ${ns}` : null;
  return (
    <div class="bulk">
      <div class="actions">
        <button type="button" onClick={() => ask(true)} disabled={busy}>
          Revoke all matching…
        </button>
      </div>
      <ErrorText message={error} />
      {plan && (
        <div class="card">
          <p role="status">{n ? `This revokes ${leases(n)}:` : 'No live lease matches these filters: nothing to revoke.'}</p>
          {n > 0 && (
            <>
              <ul class="plain ids" tabIndex={0} aria-label="Leases to revoke">
                {plan.ids.map((id) => (
                  <li key={id}>
                    <code>{id}</code>
                  </li>
                ))}
              </ul>
              <div class="actions">
                <button type="button" class="danger" onClick={() => ask(false)} disabled={busy}>
                  Revoke {leases(n)}
                </button>
                <button type="button" onClick={() => setPlan(undefined)}>
                  Cancel
                </button>
                {cli && <CliCommand command={cli} />}
              </div>
              {!cli && (
                <p class="muted">
                  No CLI equivalent: <code>postern lease revoke</code> takes one lease ID, or <code>--prefix ROLE</code> for every lease of one
                  credential role; it cannot select by identity or expiry.
                </p>
              )}
            </>
          )}
        </div>
      )}
      {result && (
        <>
          <p role="status">
            Revoked {leases(result.results.filter((r) => !r.error).length)}
            {result.results.some((r) => r.error) ? `; ${leases(result.results.filter((r) => r.error).length)} failed (the reaper retries them)` : ''}.
          </p>
          {result.results.length > 0 && (
            <ScrollTable label="Revocation results">
              <thead>
                <tr>
                  <th scope="col">Lease</th>
                  <th scope="col">Outcome</th>
                </tr>
              </thead>
              <tbody>
                {result.results.map((r) => (
                  <tr key={r.id} data-testid="revoke-result">
                    <td>
                      <code>{r.id}</code>
                    </td>
                    <td>{r.error ? <span class="error">{r.error}</span> : r.outcome}</td>
                  </tr>
                ))}
              </tbody>
            </ScrollTable>
          )}
        </>
      )}
    </div>
  );
}

export function Leases({ ns }: { ns: string }) {
  const { whoami } = useSession();
  const write = may(whoami, ns, 'write');
  const loc = useLocation();
  const base = `/ui/namespaces/${seg(ns)}/leases`;
  const applied = filtersOf(loc.query);
  const key = withQuery('', applied);

  // The form edits a draft; the URL holds what is applied (as on the access log).
  const [draft, setDraft] = useState(applied);
  const draftOf = useRef(key);
  useEffect(() => {
    if (draftOf.current !== key) setDraft(applied);
    draftOf.current = key;
  }, [key]);

  const roles = useLoad(() => listAll(ns, 'credentialroles'), [ns]);
  const ttl = new Map((roles.data ?? []).map((r) => [r.metadata.name, specOf<CredentialRoleSpec>(r).defaultTtl]));
  const list = useLoad(
    () =>
      call(
        api.GET('/api/v1/namespaces/{namespace}/leases', {
          params: { path: { namespace: ns }, query: { ...selection(applied), all: applied.all ? true : undefined } },
        }),
      ),
    [ns, key],
  );
  const [notice, setNotice] = useState<ComponentChildren>();
  useEffect(() => setNotice(undefined), [ns, key]);

  const set = (field: keyof Filters) => (e: Event) => setDraft({ ...draft, [field]: (e.currentTarget as HTMLInputElement).value });
  const apply = (e: Event) => {
    e.preventDefault();
    navigate(withQuery(base, draft));
  };
  const filtered = !!(applied.role || applied.identity || applied.expiringWithin);
  const roleNames = (roles.data ?? []).map((r) => r.metadata.name);
  if (draft.role && !roleNames.includes(draft.role)) roleNames.push(draft.role);

  return (
    <>
      <p class="crumbs">
        <Link href="/ui/namespaces">Namespaces</Link> / {ns}
      </p>
      <Title text={`Leases in ${ns}`} />
      <KindTabs ns={ns} plural="leases" />
      <form class="filters" aria-label="Filter leases" onSubmit={apply}>
        <div class="field">
          <label for="l-role">Credential role</label>
          {roles.error ? (
            <input id="l-role" value={draft.role} onInput={set('role')} />
          ) : (
            <select id="l-role" value={draft.role} onChange={set('role')}>
              <option value="">Any role</option>
              {roleNames.map((name) => (
                <option key={name} value={name}>
                  {name}
                </option>
              ))}
            </select>
          )}
        </div>
        <div class="field">
          <label for="l-identity">Identity</label>
          <input
            id="l-identity"
            type="search"
            value={draft.identity}
            placeholder="alice.team-a"
            aria-describedby="l-identity-hint"
            onInput={set('identity')}
          />
        </div>
        <div class="field">
          <label for="l-within">Expiring within</label>
          <select id="l-within" value={draft.expiringWithin} onChange={set('expiringWithin')}>
            {WITHIN.map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
            {draft.expiringWithin && !WITHIN.some(([value]) => value === draft.expiringWithin) && (
              <option value={draft.expiringWithin}>{draft.expiringWithin}</option>
            )}
          </select>
        </div>
        <div class="field check">
          <input id="l-all" type="checkbox" checked={!!draft.all} onChange={(e) => setDraft({ ...draft, all: e.currentTarget.checked ? '1' : '' })} />
          <label for="l-all">Include ended leases</label>
        </div>
        <div class="actions">
          <button type="submit" class="primary">
            Apply filters
          </button>
          <button type="button" onClick={() => navigate(base)}>
            Clear
          </button>
        </div>
      </form>
      <p class="muted" id="l-identity-hint">
        Identity: who the lease was issued for, exactly: <code>name.namespace</code> for its sessions' leases, or <code>cli</code>.
      </p>
      {write && <RevokeMatching ns={ns} filters={applied} done={list.reload} />}
      <p role="status">{notice}</p>
      <Show state={list} what="Loading leases">
        {(page) =>
          page.items.length ? (
            <ScrollTable label={`Leases in ${ns}`}>
              <thead>
                <tr>
                  <th scope="col">ID</th>
                  <th scope="col">Role</th>
                  <th scope="col">Username</th>
                  <th scope="col">State</th>
                  <th scope="col">Issued for</th>
                  <th scope="col">Issued</th>
                  <th scope="col">Expires</th>
                  <th scope="col">Last error</th>
                  {write && <th scope="col">Actions</th>}
                </tr>
              </thead>
              <tbody>
                {page.items.map((lease, i) => (
                  <LeaseRow
                    key={lease.id}
                    lease={lease}
                    ns={ns}
                    index={i}
                    write={write}
                    defaultTtl={ttl.get(lease.credentialRole)}
                    done={(text) => {
                      setNotice(text);
                      list.reload();
                    }}
                  />
                ))}
              </tbody>
            </ScrollTable>
          ) : (
            <p>
              No {applied.all ? '' : 'live '}leases {filtered ? 'match these filters' : `in ${ns}`}.
            </p>
          )
        }
      </Show>
    </>
  );
}
