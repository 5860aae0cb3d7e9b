// Any /ui/* path the router does not know.
import { Title } from '../components';
import { Link, useLocation } from '../router';

export function NotFound() {
  const { path } = useLocation();
  return (
    <>
      <Title text="Not found" />
      <p>
        There is no page at <code>{path}</code>.
      </p>
      <p>
        <Link href="/ui/">Go to the overview</Link>
      </p>
    </>
  );
}
