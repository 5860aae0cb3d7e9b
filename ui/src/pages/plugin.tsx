// A Plugin's life in this gateway: loaded or not, healthy, calls, denials, traps, timeouts and call times (the /metrics counters), beside its limits.
import { Fragment } from 'preact';
import { api, call, type Schemas } from '../api';
import { Badge, Show, useLoad } from '../components';

type Runtime = Schemas['PluginRuntime'];

/** Counters in the order an operator reads them, with their labels. */
const COUNTERS: [string, string][] = [
  ['calls', 'Calls'],
  ['denials', 'Denials'],
  ['traps', 'Traps'],
  ['timeouts', 'Timeouts'],
  ['unhealthy_refusals', 'Refused while resting'],
  ['verdict_cache_hits', 'Kept verdicts used'],
  ['instances_created', 'Instances made'],
  ['events_lost', 'Events lost'],
];

function seconds(value?: number): string {
  if (value === undefined) return '—';
  return value < 0.001 ? `${(value * 1e6).toFixed(0)} µs` : `${(value * 1e3).toFixed(1)} ms`;
}

export function PluginRuntime({ ns, name, generation, limits }: { ns: string; name: string; generation?: number; limits?: unknown }) {
  const runtime = useLoad(
    () => call(api.GET('/api/v1/namespaces/{namespace}/plugins/{name}/runtime', { params: { path: { namespace: ns, name } } })),
    [ns, name],
  );
  return (
    <section aria-labelledby="runtime-heading">
      <h2 id="runtime-heading">In this gateway</h2>
      <Show state={runtime} what="Reading the plugin's counters">
        {(r: Runtime) =>
          r.loaded ? (
            <dl class="facts" data-testid="plugin-runtime">
              <dt>Health</dt>
              <dd>{r.counters.healthy === 0 ? <Badge tone="bad">resting after failures</Badge> : <Badge tone="ok">healthy</Badge>}</dd>
              <dt>Type</dt>
              <dd>{r.type ?? '—'}</dd>
              <dt>Generation loaded</dt>
              <dd>
                {r.counters.generation ?? '—'}
                {generation !== undefined && r.counters.generation !== undefined && r.counters.generation !== generation && (
                  <> (the resource is at {generation}; the new one loads shortly)</>
                )}
              </dd>
              {COUNTERS.filter(([key]) => r.counters[key] !== undefined && (key !== 'events_lost' || r.type === 'logSink')).map(([key, label]) => (
                <Fragment key={key}>
                  <dt>{label}</dt>
                  <dd>{r.counters[key]}</dd>
                </Fragment>
              ))}
              <dt>Call time p50 / p99</dt>
              <dd>
                {seconds(r.counters.call_seconds_p50)} / {seconds(r.counters.call_seconds_p99)}
              </dd>
              <dt>Limits</dt>
              <dd>{limits ? <code>{JSON.stringify(limits)}</code> : 'the defaults'}</dd>
            </dl>
          ) : (
            <p>This gateway has not loaded it: no service names it, or it failed to load (see Status).</p>
          )
        }
      </Show>
    </section>
  );
}
