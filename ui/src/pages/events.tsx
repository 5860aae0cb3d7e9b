// The access-log table shared by the log and session pages: one row per event, statement text in its own cell.
import type { LogEvent } from '../api';
import { Badge, ScrollTable, Time, type Tone } from '../components';
import { Link } from '../router';

export const EVENT_TYPES = [
  'SESSION_START',
  'SESSION_END',
  'QUERY',
  'PARSE',
  'BIND',
  'EXECUTE',
  'CLOSE',
  'FUNCTION_CALL',
  'AUTH_FAILED',
  'POLICY_DENIED',
] as const;

function tone(event: LogEvent): Tone {
  if (event.type === 'AUTH_FAILED' || event.type === 'POLICY_DENIED') return 'bad';
  if (event.sqlstate) return 'warn';
  if (event.type === 'SESSION_START' || event.type === 'SESSION_END') return 'info';
  return 'ok';
}

export function identityOf(event: LogEvent): string {
  const id = event.identity;
  if (!id?.name) return '';
  return id.namespace ? `${id.name}.${id.namespace}` : id.name;
}

/** What happened, in words, when the event has no statement. */
function detail(event: LogEvent): string {
  if (event.statement) return event.statement;
  if (event.reason) return event.reason;
  if (event.type === 'SESSION_START') {
    return [event.application_name && `application ${event.application_name}`, event.client_address && `from ${event.client_address}`]
      .filter(Boolean)
      .join(' ');
  }
  if (event.type === 'SESSION_END' && event.totals) {
    const n = event.totals.statements ?? 0;
    return `${event.totals.end_reason ?? 'ended'}; ${n} ${n === 1 ? 'statement' : 'statements'}`;
  }
  return event.error_message ?? '';
}

function duration(ms: number): string {
  return ms < 1000 ? `${ms.toFixed(1)} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`;
}

function result(event: LogEvent): string {
  const parts: string[] = [];
  if (event.command_tag) parts.push(event.command_tag);
  if (event.sqlstate) parts.push(`${event.sqlstate}${event.error_message ? ` ${event.error_message}` : ''}`);
  if (event.rule) parts.push(`rule ${event.rule}`);
  if (typeof event.duration_ms === 'number') parts.push(`${event.duration_ms.toFixed(1)} ms`);
  else if (typeof event.totals?.duration_ms === 'number') parts.push(duration(event.totals.duration_ms));
  return parts.join(' · ');
}

export function EventTable({ events, label, sessionLinks = true }: { events: LogEvent[]; label: string; sessionLinks?: boolean }) {
  return (
    <ScrollTable label={label}>
      <thead>
        <tr>
          <th scope="col">Time</th>
          <th scope="col">Type</th>
          <th scope="col">Identity</th>
          <th scope="col">Service</th>
          <th scope="col">Statement or detail</th>
          <th scope="col">Result</th>
          {sessionLinks && <th scope="col">Session</th>}
        </tr>
      </thead>
      <tbody>
        {events.map((event) => (
          <tr key={event.id} data-testid="log-row" data-type={event.type}>
            <td class="nowrap">
              <Time value={event.time} ms />
            </td>
            <td>
              <Badge tone={tone(event)}>{event.type}</Badge>
            </td>
            <td>{identityOf(event)}</td>
            <td>{event.service}</td>
            <td class="stmt">
              <code>{detail(event)}</code>
            </td>
            <td class="nowrap">{result(event)}</td>
            {sessionLinks && (
              <td class="nowrap">
                {event.session_id ? (
                  <Link href={`/ui/logs/sessions/${encodeURIComponent(event.session_id)}`} aria-label={`Session ${event.session_id}`}>
                    {event.session_id.slice(0, 8)}
                  </Link>
                ) : null}
              </td>
            )}
          </tr>
        ))}
      </tbody>
    </ScrollTable>
  );
}
