// One client session: who, from where, to which upstream, and every event it produced, oldest first.
import { api, call, type LogEvent } from '../api';
import { Show, Time, Title, useLoad } from '../components';
import { Link, withQuery } from '../router';
import { EventTable, identityOf } from './events';

export function Session({ id }: { id: string }) {
  const events = useLoad(
    () => call(api.GET('/api/v1/logs', { params: { query: { session: id, limit: 1000 } } })).then((page): LogEvent[] => [...page.items].reverse()),
    [id],
  );
  return (
    <>
      <p class="crumbs">
        <Link href="/ui/logs">Access log</Link> / Session
      </p>
      <Title text={`Session ${id.slice(0, 8)}`} />
      <Show state={events} what="Loading the session's events">
        {(items) => {
          if (!items.length) return <p>No events recorded for session {id}, or none you may see.</p>;
          const first = items[0];
          const identity = identityOf(first);
          return (
            <>
              <dl class="facts">
                <dt>Session ID</dt>
                <dd>
                  <code>{id}</code>
                </dd>
                <dt>Identity</dt>
                <dd>{identity ? <Link href={withQuery('/ui/logs', { identity })}>{identity}</Link> : '—'}</dd>
                <dt>Service</dt>
                <dd>{first.service ? <Link href={withQuery('/ui/logs', { service: first.service })}>{first.service}</Link> : '—'}</dd>
                <dt>Client</dt>
                <dd>
                  {first.client_address ?? '—'}
                  {first.application_name ? ` (${first.application_name})` : ''}
                </dd>
                <dt>Upstream</dt>
                <dd>{first.upstream ? `${first.upstream.user}@${first.upstream.target}/${first.upstream.database}` : '—'}</dd>
                <dt>From</dt>
                <dd>
                  <Time value={first.time} ms />
                </dd>
                <dt>To</dt>
                <dd>
                  <Time value={items[items.length - 1].time} ms />
                </dd>
                <dt>Events</dt>
                <dd>{items.length}</dd>
              </dl>
              <EventTable events={items} label={`Events of session ${id}`} sessionLinks={false} />
            </>
          );
        }}
      </Show>
    </>
  );
}
