// The API client (generated types + openapi-fetch), the bearer token and the caller's permissions; a 401 sends to sign-in.
import createClient, { type Middleware } from 'openapi-fetch';
import { useEffect, useState } from 'preact/hooks';
import type { components, paths } from './api/schema';
import { navigate, withQuery } from './router';

export type Schemas = components['schemas'];
export type Resource = Schemas['Resource'];
export type Whoami = Schemas['WhoAmI'];
/** An access-log line; fields the document leaves untyped are typed here as the log writes them. */
export type LogEvent = Schemas['Event'] & {
  upstream?: { target: string; user: string; database: string };
  statement_kind?: string;
  totals?: { statements?: number; duration_ms?: number; end_reason?: string };
};
export type Explanation = Schemas['Explanation'];
export type Overview = Schemas['Overview'];
export type Lease = Schemas['Lease'];

/** sessionStorage key, used only when the user asks to stay signed in for this tab. */
const TAB_KEY = 'postern.token';

interface Session {
  token: string | null;
  whoami: Whoami | null;
}

// The token lives in memory; sessionStorage only on request, never localStorage or a cookie.
let session: Session = { token: readTabToken(), whoami: null };
const listeners = new Set<() => void>();

function readTabToken(): string | null {
  try {
    return sessionStorage.getItem(TAB_KEY);
  } catch {
    return null;
  }
}

function setSession(next: Session) {
  session = next;
  for (const listener of listeners) listener();
}

export function getSession(): Session {
  return session;
}

/** The current session; re-renders the caller when it changes. */
export function useSession(): Session {
  const [, force] = useState(0);
  useEffect(() => {
    const update = () => force((n) => n + 1);
    listeners.add(update);
    return () => void listeners.delete(update);
  }, []);
  return session;
}

/** An API answer that was not a success, with the text the API gave for it. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The human text of an error body: `message` (ApiError), `error_description` (OAuth) or `error`. */
export function errorText(body: unknown, status: number): string {
  if (body && typeof body === 'object') {
    const b = body as Record<string, unknown>;
    for (const key of ['message', 'error_description', 'error']) {
      if (typeof b[key] === 'string' && b[key]) return b[key] as string;
    }
  }
  if (typeof body === 'string' && body.trim()) return body.trim();
  return `the gateway answered ${status}`;
}

function isTokenEndpoint(url: string): boolean {
  return new URL(url, location.href).pathname === '/api/v1/token';
}

/** Forgets the token and asks for a new one, coming back here afterwards. */
function expired() {
  clearToken();
  if (location.pathname !== '/ui/signin') {
    navigate(withQuery('/ui/signin', { next: location.pathname + location.search }), true);
  }
}

const auth: Middleware = {
  onRequest({ request }) {
    if (session.token && !isTokenEndpoint(request.url)) request.headers.set('Authorization', `Bearer ${session.token}`);
    return request;
  },
  onResponse({ request, response }) {
    if (response.status === 401 && !isTokenEndpoint(request.url)) expired();
    return response;
  },
};

export const api = createClient<paths>({ baseUrl: location.origin });
api.use(auth);

/** Unwraps an openapi-fetch result: its data, or an ApiError with the API's text. */
export async function call<T>(request: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  let result;
  try {
    result = await request;
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, `cannot reach the gateway (${e instanceof Error ? e.message : String(e)})`);
  }
  const { data, error, response } = result;
  if (!response.ok) throw new ApiError(response.status, errorText(error, response.status));
  return data as T;
}

/** fetch() with the bearer token, for what openapi-fetch does not fit: the log stream and downloads. */
export async function authedFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (session.token) headers.set('Authorization', `Bearer ${session.token}`);
  let response;
  try {
    response = await fetch(path, { ...init, headers });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, `cannot reach the gateway (${e instanceof Error ? e.message : String(e)})`);
  }
  if (response.status === 401) expired();
  if (!response.ok) {
    const text = await response.text().catch(() => '');
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: use the text as it is
    }
    throw new ApiError(response.status, errorText(body, response.status));
  }
  return response;
}

function clearToken() {
  try {
    sessionStorage.removeItem(TAB_KEY);
  } catch {
    // storage disabled: nothing was kept
  }
  setSession({ token: null, whoami: null });
}

/** Asks the API who the caller is; the answer gates every write button. */
let asking: { token: string | null; answer: Promise<Whoami> } | null = null;
export function loadWhoami(): Promise<Whoami> {
  // One question per token at a time: sign-in and the app frame both ask right after a token is set.
  if (asking?.token !== session.token) {
    const token = session.token;
    const answer = call(api.GET('/api/v1/whoami')).then((whoami) => {
      if (session.token === token) setSession({ ...session, whoami });
      return whoami;
    });
    asking = { token, answer };
    answer.then(
      () => asking?.answer === answer && (asking = null),
      () => asking?.answer === answer && (asking = null),
    );
  }
  return asking!.answer;
}

/** The server's overview (version, listeners, what needs attention), asked once per token and shared. */
let overview: { token: string | null; at: number; answer: Promise<Overview> } | null = null;
export function loadOverview(maxAgeMs = Infinity): Promise<Overview> {
  // `maxAgeMs` asks again when the shared answer is older (the Overview page wants a fresh list).
  if (!overview || overview.token !== session.token || Date.now() - overview.at > maxAgeMs) {
    const entry = { token: session.token, at: Date.now(), answer: call(api.GET('/api/v1/overview')) };
    overview = entry;
    entry.answer.catch(() => overview === entry && (overview = null));
  }
  return overview.answer;
}

/** Uses `token` if the API accepts it. */
export async function signIn(token: string, keepForTab: boolean): Promise<Whoami> {
  setSession({ token, whoami: null });
  try {
    const whoami = await loadWhoami();
    try {
      if (keepForTab) sessionStorage.setItem(TAB_KEY, token);
      else sessionStorage.removeItem(TAB_KEY);
    } catch {
      // storage disabled: the token stays in memory only
    }
    return whoami;
  } catch (e) {
    if (session.token === token) clearToken();
    throw e;
  }
}

/** Exchanges client credentials for an access token (OAuth2 client_credentials), then signs in with it. */
export async function signInWithClient(clientId: string, clientSecret: string, keepForTab: boolean): Promise<Whoami> {
  const answer = await call(
    api.POST('/api/v1/token', {
      body: { grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret },
      bodySerializer: (body) => new URLSearchParams(body as Record<string, string>),
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    }),
  );
  return signIn(answer.access_token, keepForTab);
}

export function signOut() {
  clearToken();
  navigate('/ui/signin');
}

export type Permission = 'read' | 'write' | 'connect';

/** What the caller may do in `namespace`, as the API said (never guessed). */
export function may(whoami: Whoami | null, namespace: string, permission: Permission): boolean {
  return !!whoami?.namespaces.find((n) => n.name === namespace)?.[permission];
}

/** A resource's spec in the shape its kind has; the API document types specs only as objects. */
export function specOf<T>(resource: Resource): T {
  return resource.spec as unknown as T;
}
