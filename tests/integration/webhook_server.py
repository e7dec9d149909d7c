"""A real HTTP server on 127.0.0.1 for webhook tests: it records each POST and answers as scripted."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG = 0  # a status that means: hold the request (3 s at most), then answer 200


class Server:
    """Records each POST (path, headers, JSON body) and answers with the next scripted status,
    then with `default`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[int] = []
        self.default = 200
        self.hanging = 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = server.record(self.path, dict(self.headers), body)
                if status == HANG:
                    server.hanging += 1  # only this handler's thread changes it while it hangs
                    server.release.wait(3.0)
                    server.hanging -= 1
                    status = 200
                with contextlib.suppress(OSError):  # the client may have given up on a hang
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.requests.append({"path": path, "headers": headers, "raw": body})
            return self.script.pop(0) if self.script else self.default

    def payloads(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["raw"]) for r in self.requests]

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
