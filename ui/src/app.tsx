// The frame every page shares (header, nav, main) and the route table; pages need a signed-in caller except sign-in.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { loadWhoami, signOut, useSession } from './api';
import { ErrorText, Loading, messageOf } from './components';
import { Link, match, navigate, useLocation, withQuery } from './router';
import { applyTheme, currentTheme } from './theme';
import { SignIn } from './pages/signin';
import { Overview } from './pages/overview';
import { Namespaces } from './pages/namespaces';
import { Resources, KINDS } from './pages/resources';
import { ResourceDetail } from './pages/resource';
import { Identity } from './pages/identity';
import { Leases } from './pages/leases';
import { Logs } from './pages/logs';
import { Session } from './pages/session';
import { Simulator } from './pages/simulator';
import { NotFound } from './pages/notfound';

type Route = { page: () => ComponentChildren; public?: boolean; section?: string };

function route(path: string): Route {
  let m: Record<string, string> | null;
  if (path === '/ui' || path === '/ui/') return { page: () => <Overview />, section: 'overview' };
  if (match('/ui/signin', path)) return { page: () => <SignIn />, public: true };
  if (match('/ui/namespaces', path)) return { page: () => <Namespaces />, section: 'namespaces' };
  if ((m = match('/ui/namespaces/:ns', path))) {
    const ns = m.ns;
    return { page: () => <Redirect to={`/ui/namespaces/${encodeURIComponent(ns)}/services`} />, section: 'namespaces' };
  }
  if ((m = match('/ui/namespaces/:ns/identities/:name', path))) {
    const { ns, name } = m;
    return { page: () => <Identity ns={ns} name={name} />, section: 'namespaces' };
  }
  if ((m = match('/ui/namespaces/:ns/leases', path))) {
    const ns = m.ns;
    return { page: () => <Leases ns={ns} />, section: 'namespaces' };
  }
  if ((m = match('/ui/namespaces/:ns/:plural', path)) && m.plural in KINDS) {
    const { ns, plural } = m;
    return { page: () => <Resources ns={ns} plural={plural} />, section: 'namespaces' };
  }
  if ((m = match('/ui/namespaces/:ns/:plural/:name', path)) && m.plural in KINDS) {
    const { ns, plural, name } = m;
    return { page: () => <ResourceDetail ns={ns} plural={plural} name={name} />, section: 'namespaces' };
  }
  if (match('/ui/logs', path)) return { page: () => <Logs />, section: 'logs' };
  if ((m = match('/ui/logs/sessions/:id', path))) {
    const id = m.id;
    return { page: () => <Session id={id} />, section: 'logs' };
  }
  if (match('/ui/simulator', path)) return { page: () => <Simulator />, section: 'simulator' };
  return { page: () => <NotFound />, public: true };
}

function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to, true), [to]);
  return null;
}

const SECTIONS: [string, string, string][] = [
  ['overview', '/ui/', 'Overview'],
  ['namespaces', '/ui/namespaces', 'Namespaces'],
  ['logs', '/ui/logs', 'Access log'],
  ['simulator', '/ui/simulator', 'Simulator'],
];

function ThemeToggle() {
  const [theme, setTheme] = useState(currentTheme);
  const next = theme === 'dark' ? 'light' : 'dark';
  return (
    <button
      type="button"
      class="small"
      onClick={() => {
        applyTheme(next, true);
        setTheme(next);
      }}
    >
      {next === 'dark' ? 'Dark theme' : 'Light theme'}
    </button>
  );
}

export function App() {
  const loc = useLocation();
  const { token, whoami } = useSession();
  const [failed, setFailed] = useState<string>();
  const main = useRef<HTMLElement>(null);
  const firstPath = useRef(loc.path);
  const current = route(loc.path);

  // A page change moves focus to <main>, so screen readers start at the new content, not the old link.
  useEffect(() => {
    if (loc.path !== firstPath.current) {
      firstPath.current = '';
      main.current?.focus();
    }
  }, [loc.path]);

  const needsSignIn = !current.public && !token;
  useEffect(() => {
    if (needsSignIn) navigate(withQuery('/ui/signin', { next: loc.path === '/ui/' ? undefined : loc.href }), true);
  }, [needsSignIn, loc.href]);

  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    if (token && !whoami) {
      setFailed(undefined);
      loadWhoami().catch((e) => setFailed(messageOf(e)));
    }
  }, [token, whoami, attempt]);

  let content: ComponentChildren;
  if (current.public) content = current.page();
  else if (!token) content = <Loading what="Signing in" />;
  else if (!whoami)
    content = failed ? (
      <>
        <h1>Cannot load your session</h1>
        <ErrorText message={failed} />
        <button type="button" onClick={() => setAttempt((n) => n + 1)}>
          Try again
        </button>
      </>
    ) : (
      <Loading what="Loading your permissions" />
    );
  else content = current.page();

  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <Link href="/ui/" class="brand">
          Postern
        </Link>
        <nav aria-label="Main">
          <ul>
            {SECTIONS.map(([key, href, label]) => (
              <li key={key}>
                <Link href={href} aria-current={current.section === key ? 'page' : undefined}>
                  {label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          {whoami && (
            <span class="caller" data-testid="caller">
              {whoami.name}
            </span>
          )}
          {token && (
            <button type="button" class="small" onClick={signOut}>
              Sign out
            </button>
          )}
          <ThemeToggle />
        </div>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        {content}
      </main>
    </>
  );
}
