"""qmp.py: a minimal QMP client for the tests that drive vmstack-vm --control."""

import json
import socket
import time


class Qmp:
    """A minimal QMP client: one JSON object per line from the server."""

    def __init__(self, path, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(str(path))
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.s.settimeout(timeout)
        self.buf = b""
        self.events = []
        self.greeting = self.recv()

    def recv(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("the monitor closed the control socket")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name, "id": f"id-{name}"}
        if args:
            msg["arguments"] = args
        self.s.sendall(json.dumps(msg).encode())
        while True:
            r = self.recv()
            if "event" in r:
                self.events.append(r)
                continue
            assert r.get("id") == f"id-{name}", r
            return r

    def event(self, name, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e["event"] == name:
                    self.events.remove(e)
                    return e
            self.s.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(self.recv())
            if time.monotonic() > deadline:
                raise TimeoutError(name)

    def close(self):
        self.s.close()
