// The access log: URL-synced filters, paging to older events, live follow over the NDJSON stream, CSV/NDJSON export.
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, api, authedFetch, call, type LogEvent } from '../api';
import { CliCommand, ErrorText, Loading, Title, messageOf, shellQuote } from '../components';
import { navigate, useLocation, withQuery } from '../router';
import { EVENT_TYPES, EventTable } from './events';

const FILTERS = ['identity', 'service', 'type', 'since', 'q'] as const;
type Filters = Record<(typeof FILTERS)[number], string>;
const SINCE = [
  ['', 'Any time'],
  ['15m', 'Last 15 minutes'],
  ['1h', 'Last hour'],
  ['6h', 'Last 6 hours'],
  ['24h', 'Last 24 hours'],
  ['7d', 'Last 7 days'],
  ['30d', 'Last 30 days'],
];
const PAGE = 100;

function filtersOf(query: URLSearchParams): Filters {
  const f = {} as Filters;
  for (const key of FILTERS) f[key] = query.get(key) ?? '';
  return f;
}

function queryOf(filters: Partial<Filters> & Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) if (value) q.set(key, value);
  return q.toString();
}

/** The same filters as `postern logs` flags, for "Copy as CLI command". */
function cliOf(f: Filters, follow: boolean): string {
  const parts = ['postern logs'];
  if (follow) parts.push('--follow');
  if (f.identity) parts.push(`--identity ${shellQuote(f.identity)}`);
  if (f.service) parts.push(`--service ${shellQuote(f.service)}`);
  if (f.type) parts.push(`--type ${f.type}`);
  if (f.since) parts.push(`--since ${shellQuote(f.since)}`);
  return parts.join(' ');
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });

/** Calls `each` for every event line of the stream until it ends, and `at` with the cursor of
 * each keep-alive (how far the server has read, filtered-out events included). */
async function readStream(response: Response, each: (event: LogEvent) => void, at: (cursor: number) => void) {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (!line) continue;
      try {
        const event = JSON.parse(line);
        if (typeof event.id === 'number') each(event);
        else if (typeof event.cursor === 'number') at(event.cursor);
      } catch {
        // a torn or foreign line: skip it, the next one is whole
      }
    }
  }
}

/** Saves the export of the current filter; true when the server cut it at its limit. */
async function download(filters: Filters, format: 'csv' | 'ndjson'): Promise<boolean> {
  const response = await authedFetch(`/api/v1/logs/export?${queryOf({ ...filters, format })}`);
  const blob = await response.blob();
  const disposition = response.headers.get('Content-Disposition') ?? '';
  const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? `postern-access-log.${format}`;
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return response.headers.get('X-Postern-Truncated') === 'true';
}

export function Logs() {
  const loc = useLocation();
  const applied = filtersOf(loc.query);
  const follow = loc.query.get('follow') === '1';
  const key = queryOf(applied);

  // The form edits a draft; the URL holds what is applied, so reload and shared links keep it.
  const [draft, setDraft] = useState(applied);
  const draftOf = useRef(key);
  useEffect(() => {
    // Only a new URL (back button, a link) resets the form; typing may have begun since mount.
    if (draftOf.current !== key) setDraft(applied);
    draftOf.current = key;
  }, [key]);

  const [events, setEvents] = useState<LogEvent[]>([]);
  const [next, setNext] = useState<number | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string>();
  const [older, setOlder] = useState(false);
  const [pending, setPending] = useState<LogEvent[]>([]);
  const [live, setLive] = useState('');
  const [exportError, setExportError] = useState<string>();
  const [exportNote, setExportNote] = useState<string>();
  const exportAs = (format: 'csv' | 'ndjson') => {
    setExportError(undefined);
    download(applied, format).then(
      (cut) => setExportNote(cut ? 'The export holds the newest 10,000 events of this filter: narrow it (by time, for instance) for older ones.' : undefined),
      (e) => setExportError(messageOf(e)),
    );
  };
  const seen = useRef(new Set<number>());
  const newest = useRef<number | undefined>(undefined);
  // Events that arrived while the user was scrolled down; a ref so the stream callback sees the latest.
  const waiting = useRef<LogEvent[]>([]);
  const [loadedKey, setLoadedKey] = useState<string>();
  const list = useRef<HTMLDivElement>(null);
  // New rows go in at the top only while the top of the list is in view; otherwise they wait behind a button.
  const atTop = () => !list.current || list.current.getBoundingClientRect().top >= 0;

  useEffect(() => {
    let current = true;
    setLoading(true);
    setError(undefined);
    setEvents([]);
    setPending((waiting.current = []));
    seen.current = new Set();
    newest.current = undefined;
    call(api.GET('/api/v1/logs', { params: { query: { ...nonEmpty(applied), limit: PAGE } } })).then(
      (page) => {
        if (!current) return;
        for (const e of page.items) seen.current.add(e.id);
        // Follow from where the page was read, even when it shows nothing yet.
        newest.current = Math.max(page.items[0]?.id ?? 0, page.latest);
        setEvents(page.items);
        setNext(page.next);
        setLoading(false);
        setLoadedKey(key);
      },
      (e) => {
        if (!current) return;
        setError(messageOf(e));
        setLoading(false);
      },
    );
    return () => {
      current = false;
    };
  }, [key]);

  // Live follow: one stream per filter, from the newest event shown, reconnecting with backoff; aborted on leave.
  useEffect(() => {
    if (!follow || loadedKey !== key) return;
    const controller = new AbortController();
    const arrived = (event: LogEvent) => {
      if (seen.current.has(event.id)) return;
      seen.current.add(event.id);
      newest.current = Math.max(newest.current ?? 0, event.id);
      if (atTop()) {
        const held = waiting.current;
        setPending((waiting.current = []));
        setEvents((shown) => [event, ...held, ...shown]);
      } else {
        setPending((waiting.current = [event, ...waiting.current]));
      }
    };
    (async () => {
      let delay = 1000;
      while (!controller.signal.aborted) {
        try {
          const { q, identity, service, type } = applied;
          const query = queryOf({ identity, service, type, q, after: newest.current?.toString() });
          const response = await authedFetch(`/api/v1/logs/stream${query ? `?${query}` : ''}`, {
            signal: controller.signal,
            headers: { Accept: 'application/x-ndjson' },
          });
          setLive('Live: following new events');
          delay = 1000;
          await readStream(response, arrived, (cursor) => {
            newest.current = Math.max(newest.current ?? 0, cursor);
          });
          if (controller.signal.aborted) return;
          setLive('Live: the stream ended; reconnecting…');
        } catch (e) {
          if (controller.signal.aborted) return;
          if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
            setLive(`Live stopped: ${e.message}`);
            return;
          }
          setLive(`Live: ${messageOf(e)}; reconnecting…`);
        }
        await sleep(delay, controller.signal);
        delay = Math.min(delay * 2, 15_000);
      }
    })();
    return () => {
      controller.abort();
      setLive('');
    };
  }, [follow, key, loadedKey]);

  const showPending = () => {
    const held = waiting.current;
    setPending((waiting.current = []));
    setEvents((shown) => [...held, ...shown]);
    window.scrollTo(0, 0);
  };

  const loadOlder = async () => {
    if (next === null) return;
    setOlder(true);
    try {
      const page = await call(api.GET('/api/v1/logs', { params: { query: { ...nonEmpty(applied), before: next, limit: PAGE } } }));
      const fresh = page.items.filter((e) => !seen.current.has(e.id));
      for (const e of fresh) seen.current.add(e.id);
      setEvents((shown) => [...shown, ...fresh]);
      setNext(page.next);
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setOlder(false);
    }
  };

  const apply = (e: Event) => {
    e.preventDefault();
    navigate(withQuery('/ui/logs', { ...draft, follow: follow ? '1' : '' }));
  };
  const set = (field: keyof Filters) => (e: Event) => setDraft({ ...draft, [field]: (e.currentTarget as HTMLInputElement).value });

  return (
    <>
      <Title text="Access log" />
      <form class="filters" aria-label="Filter events" onSubmit={apply}>
        <div class="field">
          <label for="f-identity">Identity</label>
          <input id="f-identity" value={draft.identity} placeholder="name.namespace" onInput={set('identity')} />
        </div>
        <div class="field">
          <label for="f-service">Service</label>
          <input id="f-service" value={draft.service} placeholder="name.namespace" onInput={set('service')} />
        </div>
        <div class="field">
          <label for="f-type">Type</label>
          <select id="f-type" value={draft.type} onChange={set('type')}>
            <option value="">Any type</option>
            {EVENT_TYPES.map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="f-since">Since</label>
          <select id="f-since" value={draft.since} onChange={set('since')}>
            {SINCE.map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
            {draft.since && !SINCE.some(([value]) => value === draft.since) && <option value={draft.since}>{draft.since}</option>}
          </select>
        </div>
        <div class="field wide">
          <label for="f-q">Statement contains</label>
          <input id="f-q" type="search" value={draft.q} onInput={set('q')} />
        </div>
        <div class="actions">
          <button type="submit" class="primary">
            Apply filters
          </button>
          <button type="button" onClick={() => navigate(withQuery('/ui/logs', { follow: follow ? '1' : '' }))}>
            Clear
          </button>
        </div>
      </form>
      <div class="toolbar">
        <span class="check">
          <input
            id="live"
            type="checkbox"
            checked={follow}
            onChange={(e) => navigate(withQuery('/ui/logs', { ...applied, follow: e.currentTarget.checked ? '1' : '' }), true)}
          />
          <label for="live">Live</label>
        </span>
        <span class="muted" role="status">
          {live}
        </span>
        <span class="spacer" />
        <button type="button" class="small" onClick={() => exportAs('csv')}>
          Export CSV
        </button>
        <button type="button" class="small" onClick={() => exportAs('ndjson')}>
          Export NDJSON
        </button>
        <CliCommand command={cliOf(applied, follow)} />
      </div>
      <ErrorText message={exportError} />
      {exportNote && <p role="status">{exportNote}</p>}
      {pending.length > 0 && (
        <div class="pending">
          <button type="button" onClick={showPending}>
            {pending.length} new {pending.length === 1 ? 'event' : 'events'} — show
          </button>
        </div>
      )}
      <ErrorText message={error} />
      {loading ? (
        <Loading what="Loading events" />
      ) : events.length ? (
        <div ref={list}>
          <EventTable events={events} label="Access-log events" />
        </div>
      ) : (
        !error && <p>No events match{follow ? ' yet; new ones appear here as they happen' : ''}.</p>
      )}
      {next !== null && !loading && (
        <p>
          <button type="button" onClick={loadOlder} disabled={older}>
            {older ? 'Loading…' : 'Load older'}
          </button>
        </p>
      )}
    </>
  );
}

function nonEmpty(filters: Filters) {
  const out: Partial<Filters> = {};
  for (const key of FILTERS) if (filters[key]) out[key] = filters[key];
  return out as { identity?: string; service?: string; type?: (typeof EVENT_TYPES)[number]; since?: string; q?: string };
}
