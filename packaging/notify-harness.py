#!/usr/bin/env python3
"""Runs a command the way systemd runs a Type=notify service, and checks what it says.

    notify-harness.py --socket PATH [--env-socket PATH] [--check CMD] -- COMMAND...

Binds a datagram socket at PATH (the service sees it as --env-socket, e.g. inside a chroot),
starts COMMAND with NOTIFY_SOCKET and WATCHDOG_USEC set, then expects, with a deadline each:
READY=1 (then runs CMD with bash; it must succeed), WATCHDOG=1, after SIGHUP RELOADING=1
with MONOTONIC_USEC= then READY=1, after SIGTERM STOPPING=1, and exit status 0. Prints each
notification; exits non-zero with one line saying which step failed. Only the standard
library: it runs on the host for a service inside a new Debian root.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

DEADLINE = 30.0


def fail(message, child=None):
    if child is not None and child.poll() is None:
        child.kill()
    print(f"notify-harness: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--env-socket")
    parser.add_argument("--check")
    parser.add_argument("--watchdog-usec", default="3000000")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()

    if os.path.exists(args.socket):
        os.unlink(args.socket)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(args.socket)
    os.chmod(args.socket, 0o666)

    env = dict(os.environ)
    env["NOTIFY_SOCKET"] = args.env_socket or args.socket
    env["WATCHDOG_USEC"] = args.watchdog_usec
    started = time.monotonic()
    child = subprocess.Popen(args.command, env=env)

    def wait_for(line, also=None):
        deadline = time.monotonic() + DEADLINE
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"no {line} within {DEADLINE:.0f} s", child)
            listener.settimeout(min(left, 1.0))
            try:
                message = listener.recv(4096).decode("utf-8", "replace").splitlines()
            except socket.timeout:
                if child.poll() is not None:
                    fail(f"the service exited ({child.returncode}) before {line}")
                continue
            print(f"notify-harness: {time.monotonic() - started:7.3f}s {message}")
            if line in message:
                if also and not any(m.startswith(also) for m in message):
                    fail(f"{line} came without {also}", child)
                return message

    ready = wait_for("READY=1")
    print(f"notify-harness: READY after {time.monotonic() - started:.3f} s")
    if not any(m.startswith("STATUS=") for m in ready):
        fail("READY=1 came without STATUS=", child)
    if args.check:
        checked = subprocess.run(["bash", "-c", args.check])
        if checked.returncode != 0:
            fail(f"the check failed ({checked.returncode}): {args.check}", child)
    wait_for("WATCHDOG=1")
    child.send_signal(signal.SIGHUP)
    wait_for("RELOADING=1", also="MONOTONIC_USEC=")
    wait_for("READY=1")
    child.send_signal(signal.SIGTERM)
    wait_for("STOPPING=1")
    try:
        status = child.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        fail("the service did not exit after SIGTERM", child)
    if status != 0:
        fail(f"exit status {status} after SIGTERM")
    print("notify-harness: PASS (READY, WATCHDOG, RELOADING→READY, STOPPING, exit 0)")


if __name__ == "__main__":
    main()
