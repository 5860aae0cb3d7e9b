// Namespaces the caller can see, with its roles in each; creating one when the API says the caller may.
import { useState } from 'preact/hooks';
import { api, call, loadWhoami, useSession } from '../api';
import { CliCommand, ErrorText, List, ScrollTable, Show, Title, messageOf, useLoad } from '../components';
import { Link } from '../router';

function CreateNamespace({ done }: { done: () => void }) {
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const yaml = `kind: Namespace\nmetadata:\n  name: ${name || 'NAME'}\n${description ? `spec:\n  description: ${JSON.stringify(description)}\n` : ''}`;
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await call(
        api.POST('/api/v1/namespaces', {
          body: { kind: 'Namespace', metadata: { name }, spec: description ? { description } : {} },
        }),
      );
      setName('');
      setDescription('');
      // The new namespace changes what whoami reports.
      await loadWhoami();
      done();
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card" aria-labelledby="create-ns-heading" onSubmit={submit}>
      <h2 id="create-ns-heading">Create namespace</h2>
      <ErrorText message={error} />
      <label for="ns-name">Name</label>
      <input id="ns-name" required pattern="[a-z0-9]([\-a-z0-9]{0,61}[a-z0-9])?" value={name} onInput={(e) => setName(e.currentTarget.value)} />
      <p class="muted">Lowercase letters, digits and dashes.</p>
      <label for="ns-description">Description (optional)</label>
      <input id="ns-description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      <div class="actions">
        <button type="submit" class="primary" disabled={busy}>
          Create namespace
        </button>
        <CliCommand command={`cat > namespace-${name || 'NAME'}.yaml <<'EOF'\n${yaml}EOF\npostern apply -f namespace-${name || 'NAME'}.yaml`} />
      </div>
    </form>
  );
}

export function Namespaces() {
  const { whoami } = useSession();
  const list = useLoad(() => call(api.GET('/api/v1/namespaces', { params: { query: { limit: 500 } } })), []);
  return (
    <>
      <Title text="Namespaces" />
      <Show state={list}>
        {(page) =>
          page.items.length ? (
            <ScrollTable label="Namespaces">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Description</th>
                  <th scope="col">Your roles</th>
                  <th scope="col">You may</th>
                </tr>
              </thead>
              <tbody>
                {page.items.map((ns) => {
                  const mine = whoami!.namespaces.find((n) => n.name === ns.metadata.name);
                  const spec = ns.spec as { description?: string };
                  return (
                    <tr key={ns.metadata.name}>
                      <td>
                        <Link href={`/ui/namespaces/${encodeURIComponent(ns.metadata.name)}/services`}>{ns.metadata.name}</Link>
                      </td>
                      <td>{spec.description ?? <span class="muted">—</span>}</td>
                      <td>
                        <List items={[...(mine?.roles ?? []), ...whoami!.accountRoles]} />
                      </td>
                      <td>
                        <List items={[mine?.read && 'read', mine?.write && 'write', mine?.connect && 'connect']} />
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </ScrollTable>
          ) : (
            <p>No namespace is visible to you.</p>
          )
        }
      </Show>
      {whoami!.mayCreateNamespaces && <CreateNamespace done={list.reload} />}
    </>
  );
}
