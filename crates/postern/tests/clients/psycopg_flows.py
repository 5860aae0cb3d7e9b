"""Client flows through the gateway with psycopg 3 (libpq): pipeline mode with an error in
the middle, binary COPY both ways, conn.cancel(), and ParameterStatus after SET.
Usage: psycopg_flows.py CONNINFO.
Each flow prints one "... ok" line; any failure raises and exits non-zero."""

import sys
import threading
import time

import psycopg

CONNINFO = sys.argv[1]


def pipeline():
    with psycopg.connect(CONNINFO, autocommit=True) as conn:
        with conn.pipeline():
            count = conn.execute("SELECT count(*) FROM items")
            double = conn.execute("SELECT %s::int * 2", (21,))
            name = conn.execute("SELECT name FROM items WHERE id = %s", (4,))
        assert count.fetchone()[0] == 10
        assert double.fetchone()[0] == 42
        assert name.fetchone()[0] == "item 4"
        with conn.pipeline():
            # Fetching inside the pipeline makes psycopg send Flush, not Sync.
            assert conn.execute("SELECT 7").fetchone()[0] == 7
            assert conn.execute("SELECT 8").fetchone()[0] == 8
        try:
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT 1/0")
                conn.execute("SELECT 2")
        except psycopg.errors.DivisionByZero:
            pass
        else:
            raise AssertionError("the failing pipeline raised nothing")
        assert conn.execute("SELECT 3").fetchone()[0] == 3
    print("pipeline ok")


def binary_copy():
    with psycopg.connect(CONNINFO) as conn:
        conn.execute("CREATE TEMP TABLE b (id int, payload bytea, note text)")
        rows = [(i, bytes([i % 256]) * 100, f"note ✓ 😀 {i}") for i in range(500)]
        with conn.cursor().copy("COPY b FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "bytea", "text"])
            for row in rows:
                copy.write_row(row)
        back = []
        with conn.cursor().copy("COPY b TO STDOUT (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "bytea", "text"])
            back.extend(copy.rows())
        assert back == rows, (len(back), back[:1])
    print("binary copy ok")


def cancel_once_running(conn, errors):
    """Cancels conn's query as soon as another session sees it running."""
    try:
        with psycopg.connect(CONNINFO, autocommit=True) as observer:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                running = observer.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'"
                ).fetchone()[0]
                if running:
                    conn.cancel()
                    return
                time.sleep(0.02)
            errors.append("the query never started")
    except Exception as e:  # reported by the main thread
        errors.append(repr(e))


def cancel():
    with psycopg.connect(CONNINFO) as conn:
        errors = []
        watcher = threading.Thread(target=cancel_once_running, args=(conn, errors))
        started = time.monotonic()
        watcher.start()
        try:
            conn.execute("SELECT pg_sleep(30)")
        except psycopg.errors.QueryCanceled:
            pass
        else:
            raise AssertionError("the query was not cancelled")
        watcher.join()
        assert not errors, errors
        assert time.monotonic() - started < 25
        conn.rollback()
        assert conn.execute("SELECT 5").fetchone()[0] == 5
    print("cancel ok")


def parameter_status():
    with psycopg.connect(CONNINFO, autocommit=True) as conn:
        conn.execute("SET application_name = 'renamed-job'")
        conn.execute("SET TimeZone = 'Asia/Kathmandu'")
        # libpq tracks ParameterStatus messages: they must have come through.
        name = conn.info.parameter_status("application_name")
        zone = conn.info.parameter_status("TimeZone")
        assert name == "renamed-job", name
        assert zone == "Asia/Kathmandu", zone
    print("parameter status ok")


def startup_parameters():
    # Settable parameters given at connect time are applied after login or checkout (so
    # they never split the pool) and reported to the client as PostgreSQL would.
    for name, zone in [("startup-a", "Asia/Kathmandu"), ("startup-b", "America/Lima")]:
        with psycopg.connect(CONNINFO, application_name=name, options=f"-c TimeZone={zone}") as conn:
            assert conn.info.parameter_status("application_name") == name
            assert conn.execute("SHOW application_name").fetchone()[0] == name
            assert conn.execute("SHOW TimeZone").fetchone()[0] == zone
        with psycopg.connect(CONNINFO, application_name=name) as conn:
            assert conn.info.parameter_status("application_name") == name
            assert conn.info.parameter_status("TimeZone") != zone
    print("startup parameters ok")


pipeline()
binary_copy()
cancel()
parameter_status()
startup_parameters()
