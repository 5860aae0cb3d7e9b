// "Desired vs actual": the grant reconciler's dry run for a namespace (the SQL that would make its managed roles match the Intents).
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, api, call, type Schemas } from '../api';
import { CliCommand, CopyButton, ErrorText, Loading, messageOf } from '../components';

type Plan = Schemas['ReconcilePlan'];

/** The statements in the order the reconciler gave them, one group per `namespace/target/database`. */
function byPlace(statements: Plan['statements']): [string, string[]][] {
  const groups = new Map<string, string[]>();
  for (const s of statements) {
    const lines = groups.get(s.place) ?? [];
    // As `postern reconcile --dry-run` prints them: one statement a line, each ending in a semicolon.
    lines.push(`${s.sql.replace(/;\s*$/, '')};`);
    groups.set(s.place, lines);
  }
  return [...groups];
}

const count = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

/** The plan panel; `intent` (on one Intents' page) only changes what the panel says about its scope. */
export function ReconcilePlan({ ns, intent }: { ns: string; intent?: string }) {
  const [plan, setPlan] = useState<Plan>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  // Another namespace is another question: forget the last answer, and ignore one still on its way.
  const asked = useRef(0);
  useEffect(() => {
    asked.current++;
    setPlan(undefined);
    setError(undefined);
    setBusy(false);
  }, [ns]);
  const run = async () => {
    const round = ++asked.current;
    setBusy(true);
    setError(undefined);
    setPlan(undefined);
    try {
      const answer = await call(api.POST('/api/v1/namespaces/{namespace}/reconcile-plan', { params: { path: { namespace: ns } } }));
      if (round === asked.current) setPlan(answer);
    } catch (e) {
      if (round !== asked.current) return;
      setError(e instanceof ApiError && e.status === 502 ? `A target's catalog cannot be read: ${messageOf(e)}` : messageOf(e));
    } finally {
      if (round === asked.current) setBusy(false);
    }
  };
  const groups = plan ? byPlace(plan.statements) : [];
  const problems = plan?.problems ?? [];
  return (
    <section aria-labelledby="plan-heading">
      <h2 id="plan-heading">Desired vs actual</h2>
      <p class="muted">
        A dry run of the grant reconciler: it reads the targets' catalogs and lists the SQL that would make the managed roles' privileges match the
        Intents. It changes nothing. The CLI's dry run covers every namespace.
      </p>
      {intent && (
        <p class="muted">
          The plan is per target and database, not per Intents: this is the plan for every Intents in {ns}.
        </p>
      )}
      <div class="actions">
        <button type="button" class="primary" onClick={run} disabled={busy}>
          Plan (dry run)
        </button>
        <CliCommand command="postern reconcile --dry-run" />
      </div>
      {busy && <Loading what="Reading the targets' catalogs" />}
      {(plan || error) && (
        <div class="plan" data-testid="reconcile-plan">
          <ErrorText message={error} />
          {plan && (
            <>
              <p role="status">
                {groups.length
                  ? `${count(plan.statements.length, 'statement', 'statements')} to run in ${count(groups.length, 'database', 'databases')}:`
                  : problems.length
                    ? `Nothing to run for the Intents that could be planned; ${count(problems.length, 'problem', 'problems')} below.`
                    : 'Actual privileges match the Intents: nothing to run.'}
              </p>
              {groups.map(([place, lines], i) => (
                <div class="plan-place" role="group" aria-labelledby={`plan-place-${i}`} key={place}>
                  <div class="plan-head">
                    <h3 id={`plan-place-${i}`}>
                      <code>{place}</code>
                    </h3>
                    <CopyButton text={`-- ${place}\n${lines.join('\n')}\n`} label="Copy SQL" />
                  </div>
                  <div class="sql" role="region" aria-label={`SQL for ${place}`} tabIndex={0}>
                    <pre>
                      <code>{lines.join('\n')}</code>
                    </pre>
                  </div>
                </div>
              ))}
              {problems.length > 0 && (
                <>
                  <h3 id="plan-problems">Problems</h3>
                  <ul class="error problems" aria-labelledby="plan-problems">
                    {problems.map((problem, i) => (
                      <li key={i}>{problem}</li>
                    ))}
                  </ul>
                </>
              )}
            </>
          )}
        </div>
      )}
    </section>
  );
}
