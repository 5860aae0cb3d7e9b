// One identity: its spec, how it connects, its API keys and client credentials (created secrets are shown once).
import { useState } from 'preact/hooks';
import { api, call, may, useSession, type Schemas, specOf } from '../api';
import { CliCommand, ConfirmButton, CopyButton, ErrorText, List, Loading, ScrollTable, SecretOnce, Show, Time, Title, messageOf, useLoad } from '../components';
import { Link } from '../router';
import { connectionStrings, listAll, useProxy, type IdentitySpec } from './resources';
import { getResource } from './resource';

type Path = { namespace: string; name: string };

function ApiKeys({ path, write }: { path: Path; write: boolean }) {
  const { namespace: ns, name } = path;
  const keys = useLoad(() => call(api.GET('/api/v1/namespaces/{namespace}/identities/{name}/keys', { params: { path } })), [ns, name]);
  const [created, setCreated] = useState<Schemas['ApiKeyCreated']>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const create = async () => {
    setBusy(true);
    setError(undefined);
    try {
      setCreated(await call(api.POST('/api/v1/namespaces/{namespace}/identities/{name}/keys', { params: { path } })));
      keys.reload();
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };
  const revoke = async (id: string) => {
    setError(undefined);
    try {
      await call(api.DELETE('/api/v1/namespaces/{namespace}/identities/{name}/keys/{id}', { params: { path: { ...path, id } } }));
      if (created?.id === id) setCreated(undefined);
      keys.reload();
    } catch (e) {
      setError(messageOf(e));
    }
  };
  return (
    <section aria-labelledby="keys-heading">
      <h2 id="keys-heading">API keys</h2>
      <p class="muted">An API key is the password for the wire proxy (SCRAM-SHA-256); only its verifier is stored.</p>
      <ErrorText message={error} />
      {created && <SecretOnce label={`New API key ${created.id}`} value={created.key} />}
      <Show state={keys} what="Loading API keys">
        {(page) =>
          page.items.length ? (
            <ScrollTable label="API keys">
              <thead>
                <tr>
                  <th scope="col">ID</th>
                  <th scope="col">Created</th>
                  {write && <th scope="col">Actions</th>}
                </tr>
              </thead>
              <tbody>
                {page.items.map((key) => (
                  <tr key={key.id} data-testid="key-row">
                    <td>
                      <code>{key.id}</code>
                    </td>
                    <td>
                      <Time value={key.createdAt} />
                    </td>
                    {write && (
                      <td class="actions">
                        <ConfirmButton label="Revoke" confirm={`Revoke API key ${key.id}?`} onConfirm={() => revoke(key.id)} />
                        <CliCommand command={`postern identity key revoke ${name} ${key.id} -n ${ns}`} />
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </ScrollTable>
          ) : (
            <p>No API keys.</p>
          )
        }
      </Show>
      {write && (
        <div class="actions">
          <button type="button" class="primary" onClick={create} disabled={busy}>
            Create API key
          </button>
          <CliCommand command={`postern identity key create ${name} -n ${ns}`} />
        </div>
      )}
    </section>
  );
}

function Clients({ path, write }: { path: Path; write: boolean }) {
  const { namespace: ns, name } = path;
  const clients = useLoad(() => call(api.GET('/api/v1/namespaces/{namespace}/identities/{name}/clients', { params: { path } })), [ns, name]);
  const [created, setCreated] = useState<Schemas['ClientCreated']>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const create = async () => {
    setBusy(true);
    setError(undefined);
    try {
      setCreated(await call(api.POST('/api/v1/namespaces/{namespace}/identities/{name}/clients', { params: { path } })));
      clients.reload();
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };
  const remove = async (clientId: string) => {
    setError(undefined);
    try {
      await call(
        api.DELETE('/api/v1/namespaces/{namespace}/identities/{name}/clients/{client_id}', { params: { path: { ...path, client_id: clientId } } }),
      );
      if (created?.clientId === clientId) setCreated(undefined);
      clients.reload();
    } catch (e) {
      setError(messageOf(e));
    }
  };
  return (
    <section aria-labelledby="clients-heading">
      <h2 id="clients-heading">Client credentials</h2>
      <p class="muted">
        A workload exchanges a client ID and secret for an access token at <code>POST /api/v1/token</code>.
      </p>
      <ErrorText message={error} />
      {created && (
        <div class="secret-pair">
          <p>
            Client ID <code>{created.clientId}</code> <CopyButton text={created.clientId} label="Copy client ID" />
          </p>
          <SecretOnce label={`Client secret for ${created.clientId}`} value={created.clientSecret} />
        </div>
      )}
      <Show state={clients} what="Loading client credentials">
        {(page) =>
          page.items.length ? (
            <ScrollTable label="Client credentials">
              <thead>
                <tr>
                  <th scope="col">Client ID</th>
                  <th scope="col">Created</th>
                  {write && <th scope="col">Actions</th>}
                </tr>
              </thead>
              <tbody>
                {page.items.map((client) => (
                  <tr key={client.clientId} data-testid="client-row">
                    <td>
                      <code>{client.clientId}</code>
                    </td>
                    <td>
                      <Time value={client.createdAt} />
                    </td>
                    {write && (
                      <td class="actions">
                        <ConfirmButton label="Delete" confirm={`Delete client ${client.clientId}?`} onConfirm={() => remove(client.clientId)} />
                        <CliCommand command={`postern identity client delete ${name} ${client.clientId} -n ${ns}`} />
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </ScrollTable>
          ) : (
            <p>No client credentials.</p>
          )
        }
      </Show>
      {write && (
        <div class="actions">
          <button type="button" class="primary" onClick={create} disabled={busy}>
            Create client credentials
          </button>
          <CliCommand command={`postern identity client create ${name} -n ${ns}`} />
        </div>
      )}
    </section>
  );
}

/** psql lines for this identity against each service of its namespace. */
function Connect({ ns, name }: { ns: string; name: string }) {
  const services = useLoad(() => listAll(ns, 'services'), [ns]);
  const proxy = useProxy();
  return (
    <section aria-labelledby="connect-heading">
      <h2 id="connect-heading">Connect as {name}</h2>
      {!proxy ? (
        <Loading what="Loading the proxy's address" />
      ) : (
        <Show state={services} what="Loading services">
          {(items) =>
            items.length ? (
              <ul class="plain strings">
                {items.map((s) => {
                  const psql = connectionStrings(s.metadata.name, ns, `${name}.${ns}`, proxy).psql;
                  return (
                    <li key={s.metadata.name}>
                      <code>{psql}</code> <CopyButton text={psql} label={`Copy psql for ${s.metadata.name}`} />
                    </li>
                  );
                })}
              </ul>
            ) : (
              <p>No services in {ns} yet.</p>
            )
          }
        </Show>
      )}
    </section>
  );
}

export function Identity({ ns, name }: { ns: string; name: string }) {
  const { whoami } = useSession();
  const identity = useLoad(() => getResource(ns, 'identities', name), [ns, name]);
  const write = may(whoami, ns, 'write');
  const path = { namespace: ns, name };
  return (
    <>
      <p class="crumbs">
        <Link href="/ui/namespaces">Namespaces</Link> / <Link href={`/ui/namespaces/${encodeURIComponent(ns)}/identities`}>{ns}</Link> / Identities
      </p>
      <Title text={`Identity ${name}`} />
      <Show state={identity}>
        {(r) => {
          const spec = specOf<IdentitySpec>(r);
          return (
            <dl class="facts">
              <dt>Full name</dt>
              <dd>
                <code>
                  {name}.{ns}
                </code>
              </dd>
              <dt>Type</dt>
              <dd>{spec.type ?? 'human'}</dd>
              <dt>Groups</dt>
              <dd>
                <List items={spec.groups} />
              </dd>
              <dt>Attributes</dt>
              <dd>
                <List items={Object.entries(spec.attributes ?? {}).map(([key, value]) => `${key}=${value}`)} />
              </dd>
              <dt>Client certificate</dt>
              <dd>{spec.clientCertificate?.commonName ?? 'none'}</dd>
            </dl>
          );
        }}
      </Show>
      {identity.data && (
        <>
          <Connect ns={ns} name={name} />
          <ApiKeys path={path} write={write} />
          <Clients path={path} write={write} />
        </>
      )}
    </>
  );
}
