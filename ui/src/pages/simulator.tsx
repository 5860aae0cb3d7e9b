// Connection simulator: would this identity reach this service, as whom, and may it run this statement? (POST /api/v1/explain)
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, call, type Explanation } from '../api';
import { Badge, CliCommand, ErrorText, Loading, Title, messageOf } from '../components';
import { navigate, useLocation, withQuery } from '../router';

function Verdict({ allowed }: { allowed: boolean }) {
  return <Badge tone={allowed ? 'ok' : 'bad'}>{allowed ? 'allowed' : 'denied'}</Badge>;
}

function Result({ x }: { x: Explanation }) {
  return (
    <section class="card result" aria-labelledby="result-heading" data-testid="explain-result">
      <h2 id="result-heading">Result</h2>
      <h3>
        Connect: <Verdict allowed={x.connect.allowed} />
      </h3>
      <dl class="facts">
        <dt>Reason</dt>
        <dd>{x.connect.reason}</dd>
        <dt>Binding</dt>
        <dd>{x.connect.binding ?? <span class="muted">none</span>}</dd>
        {x.connect.via && (
          <>
            <dt>Via</dt>
            <dd>{x.connect.via}</dd>
          </>
        )}
      </dl>
      <h3>Route</h3>
      {x.route ? (
        <dl class="facts">
          <dt>Mode</dt>
          <dd>{x.route.mode}</dd>
          <dt>Target</dt>
          <dd>{x.route.target}</dd>
          <dt>Upstream user</dt>
          <dd>{x.route.user}</dd>
          <dt>Database</dt>
          <dd>{x.route.database}</dd>
          <dt>Config</dt>
          <dd>{x.route.config ?? <span class="muted">none (not dynamicConfig)</span>}</dd>
        </dl>
      ) : (
        <p>No route: the connection would not get that far.</p>
      )}
      {x.statement && (
        <>
          <h3>
            Statement: <Verdict allowed={x.statement.allowed} />
          </h3>
          <dl class="facts">
            <dt>Reason</dt>
            <dd>{x.statement.reason}</dd>
            <dt>Rule</dt>
            <dd>{x.statement.rule ?? <span class="muted">none</span>}</dd>
            <dt>Kind</dt>
            <dd>{x.statement.kind ?? <span class="muted">—</span>}</dd>
          </dl>
        </>
      )}
      <div class="actions">
        <code class="cli">{x.cli}</code>
        <CliCommand command={x.cli} />
      </div>
    </section>
  );
}

export function Simulator() {
  const { query } = useLocation();
  const asked = { identity: query.get('identity') ?? '', service: query.get('service') ?? '', statement: query.get('statement') ?? '' };
  const key = `${asked.identity}\n${asked.service}\n${asked.statement}`;
  const [draft, setDraft] = useState(asked);
  const [answer, setAnswer] = useState<Explanation>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  // The URL is the question: a shared link asks it again as soon as it has both names.
  const asking = useRef(key);
  useEffect(() => {
    // Only a new URL resets the form; on mount the draft already is the URL, and typing may have begun.
    if (asking.current !== key) setDraft(asked);
    asking.current = key;
    setAnswer(undefined);
    setError(undefined);
    if (!asked.identity || !asked.service) return;
    let current = true;
    setBusy(true);
    call(
      api.POST('/api/v1/explain', {
        body: { identity: asked.identity, service: asked.service, ...(asked.statement ? { statement: asked.statement } : {}) },
      }),
    )
      .then(
        (x) => current && setAnswer(x),
        (e) => current && setError(messageOf(e)),
      )
      .finally(() => current && setBusy(false));
    return () => {
      current = false;
    };
  }, [key]);

  const submit = (e: Event) => {
    e.preventDefault();
    const target = withQuery('/ui/simulator', { identity: draft.identity.trim(), service: draft.service.trim(), statement: draft.statement.trim() });
    if (target === location.pathname + location.search) {
      // Same question again: ask anew (the answer may have changed since).
      navigate('/ui/simulator', true);
      navigate(target, true);
    } else navigate(target);
  };

  return (
    <>
      <Title text="Connection simulator" />
      <p class="muted">Checks, without connecting, whether an identity may connect to a service, which upstream login it gets and whether a statement would pass.</p>
      <form class="card sim" aria-label="Question" onSubmit={submit}>
        <label for="s-identity">Identity (name.namespace)</label>
        <input id="s-identity" required value={draft.identity} placeholder="e.g. alice.team-a" onInput={(e) => setDraft({ ...draft, identity: e.currentTarget.value })} />
        <label for="s-service">Service (name.namespace)</label>
        <input id="s-service" required value={draft.service} placeholder="e.g. orders.team-a" onInput={(e) => setDraft({ ...draft, service: e.currentTarget.value })} />
        <label for="s-statement">Statement (optional)</label>
        <textarea id="s-statement" rows={3} spellcheck={false} value={draft.statement} onInput={(e) => setDraft({ ...draft, statement: e.currentTarget.value })} />
        <div class="actions">
          <button type="submit" class="primary" disabled={busy}>
            Explain
          </button>
        </div>
      </form>
      {busy && <Loading what="Evaluating" />}
      <ErrorText message={error} />
      {answer && <Result x={answer} />}
    </>
  );
}
