// Shared pieces: data loading with its states, tables that scroll, copy buttons, CLI commands, times, badges.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, loadOverview, useSession, type Overview } from './api';

export interface Loaded<T> {
  data?: T;
  error?: string;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` when `deps` change; a stale answer never overwrites a newer one. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: string; loading: boolean }>({ loading: true });
  const [round, setRound] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ data: s.data, loading: true }));
    load().then(
      (data) => live && setState({ data, loading: false }),
      (e) => live && setState({ error: messageOf(e), loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, round]);
  return { ...state, reload: () => setRound((n) => n + 1) };
}

/** The shared overview (one request per token); `maxAgeMs` refreshes an older answer. */
export function useOverview(maxAgeMs?: number): Loaded<Overview> {
  const { token } = useSession();
  return useLoad(() => loadOverview(maxAgeMs), [token]);
}

export function messageOf(e: unknown): string {
  if (e instanceof ApiError || e instanceof Error) return e.message;
  return String(e);
}

export function Loading({ what = 'Loading' }: { what?: string }) {
  return (
    <p class="muted" role="status">
      {what}…
    </p>
  );
}

export function ErrorText({ message }: { message?: string }) {
  if (!message) return null;
  return (
    <p class="error" role="alert">
      {message}
    </p>
  );
}

/** Loading, error, or the children made from the data. */
export function Show<T>({ state, children, what }: { state: Loaded<T>; what?: string; children: (data: T) => ComponentChildren }) {
  if (state.error) return <ErrorText message={state.error} />;
  if (state.data === undefined) return <Loading what={what} />;
  return <>{children(state.data)}</>;
}

/** A table inside a focusable, named region so keyboard users can scroll it sideways on narrow screens. */
export function ScrollTable({ label, children }: { label: string; children: ComponentChildren }) {
  return (
    <div class="table-wrap" role="region" aria-label={label} tabIndex={0}>
      <table>{children}</table>
    </div>
  );
}

/** Copies through the async clipboard API, or a selected textarea where that is unavailable (plain http). */
async function copyText(text: string): Promise<void> {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.className = 'offscreen';
  document.body.appendChild(area);
  area.select();
  const ok = document.execCommand('copy');
  area.remove();
  if (!ok) throw new Error('copy refused');
}

export function CopyButton({ text, label = 'Copy', done = 'Copied' }: { text: string; label?: string; done?: string }) {
  const [note, setNote] = useState('');
  const timer = useRef<number>();
  useEffect(() => () => clearTimeout(timer.current), []);
  const copy = async () => {
    try {
      await copyText(text);
      setNote(done);
    } catch {
      setNote('Could not copy: select the text and copy it by hand');
    }
    clearTimeout(timer.current);
    timer.current = window.setTimeout(() => setNote(''), 4000);
  };
  return (
    <span class="copy">
      <button type="button" class="small" onClick={copy}>
        {label}
      </button>
      <span class="note" role="status">
        {note}
      </span>
    </span>
  );
}

/** "Copy as CLI command": what the same action is with the `postern` CLI. */
export function CliCommand({ command }: { command: string }) {
  return <CopyButton text={command} label="Copy as CLI command" done={`Copied: ${command.split('\n').slice(-1)[0]}`} />;
}

/** Quotes for a POSIX shell, only when needed. */
export function shellQuote(text: string): string {
  return /^[A-Za-z0-9_./:=@,+-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/** Local time as `YYYY-MM-DD HH:MM:SS`; accepts RFC3339 text or unix seconds (older endpoints). */
export function Time({ value, ms = false }: { value?: string | number | null; ms?: boolean }) {
  if (value === undefined || value === null || value === '') return <span class="muted">—</span>;
  const date = typeof value === 'number' ? new Date(value < 1e12 ? value * 1000 : value) : new Date(value);
  if (isNaN(date.getTime())) return <span>{String(value)}</span>;
  const text =
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}` +
    (ms ? `.${pad(date.getMilliseconds(), 3)}` : '');
  return <time dateTime={date.toISOString()}>{text}</time>;
}

/** A length of time in seconds, roughly: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`. */
export function span(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** Unix seconds as `in 40 min` or `3 h 5 min ago`, then the local time. */
export function When({ value }: { value: number }) {
  const delta = value - Date.now() / 1000;
  return (
    <>
      <span>{delta >= 0 ? `in ${span(delta)}` : `${span(-delta)} ago`}</span>
      <br />
      <span class="muted">
        <Time value={value} />
      </span>
    </>
  );
}

export type Tone = 'ok' | 'bad' | 'warn' | 'info';

export function Badge({ tone = 'info', children }: { tone?: Tone; children: ComponentChildren }) {
  return <span class={`badge ${tone}`}>{children}</span>;
}

/** A destructive button that asks once more in place, instead of a modal dialog. */
export function ConfirmButton({ label, confirm, onConfirm, busy }: { label: string; confirm: string; onConfirm: () => void; busy?: boolean }) {
  const [asking, setAsking] = useState(false);
  if (!asking) {
    return (
      <button type="button" class="small" onClick={() => setAsking(true)} disabled={busy}>
        {label}
      </button>
    );
  }
  return (
    <span class="confirm" role="group" aria-label={confirm}>
      <span>{confirm}</span>
      <button
        type="button"
        class="small danger"
        onClick={() => {
          setAsking(false);
          onConfirm();
        }}
      >
        Yes, {label.toLowerCase()}
      </button>
      <button type="button" class="small" onClick={() => setAsking(false)}>
        Cancel
      </button>
    </span>
  );
}

/** A secret shown once, read-only, with a copy button and the warning that it will not be shown again. */
export function SecretOnce({ label, value }: { label: string; value: string }) {
  const id = `secret-${label.replace(/\W+/g, '-').toLowerCase()}`;
  return (
    <div class="secret">
      <label for={id}>{label}</label>
      <div class="row">
        <input id={id} type="text" readOnly value={value} data-testid="secret-value" onFocus={(e) => e.currentTarget.select()} />
        <CopyButton text={value} />
      </div>
      <p class="note-warn">Copy it now: it will not be shown again.</p>
    </div>
  );
}

/** Sets the document title with the page's <h1>, so history and tabs name the page. */
export function Title({ children, text }: { children?: ComponentChildren; text: string }) {
  useEffect(() => {
    document.title = `${text} · Postern`;
  }, [text]);
  return <h1>{children ?? text}</h1>;
}

/** A list of short values, or a dash. */
export function List({ items }: { items?: (string | false | undefined | null)[] }) {
  const shown = (items ?? []).filter(Boolean);
  if (!shown.length) return <span class="muted">—</span>;
  return <>{shown.join(', ')}</>;
}
