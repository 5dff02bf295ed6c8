"""R2's S3-compatible front end for `wrangler dev`'s local R2, on 127.0.0.1, for tests.

Offline, R2 is the bucket wrangler dev keeps for the Worker's binding, and it speaks only
the local explorer API (`/cdn-cgi/explorer/api/r2/...`), not S3. This bridge takes the S3
requests the sidecar makes (PutObject, GetObject including presigned links, HeadBucket)
in path style and stores and reads the objects in that same local bucket, so a PDF the
sidecar puts is the one the Worker reads, and a learner's link downloads it. It does not
check signatures: R2's own S3 API does.
"""

import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXPLORER = "/cdn-cgi/explorer/api/r2/buckets/{bucket}/objects/{key}"


class R2Bridge:
    def __init__(self, worker_url: str):
        self.worker_url = worker_url
        self.puts: list[str] = []
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _target(self) -> tuple[str, str]:
                path = urllib.parse.urlsplit(self.path).path
                bucket, _, key = path.lstrip("/").partition("/")
                return bucket, urllib.parse.unquote(key)

            def do_HEAD(self):
                bucket, key = self._target()
                if not key:
                    return self._send(200, b"", "application/xml", head=True)
                status, body, kind = bridge._get(bucket, key)
                self._send(status, b"" if status != 200 else body, kind, head=True)

            def do_PUT(self):
                bucket, key = self._target()
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind = self.headers.get("Content-Type") or "application/octet-stream"
                url = bridge.worker_url + EXPLORER.format(
                    bucket=bucket, key=urllib.parse.quote(key, safe="")
                )
                req = urllib.request.Request(url, data=data, method="PUT",
                                             headers={"Content-Type": kind})  # fmt: skip
                with urllib.request.urlopen(req, timeout=30) as resp:
                    ok = resp.status == 200
                bridge.puts.append(key)
                self._send(200 if ok else 500, b"", "application/xml", etag='"bridged"')

            def do_GET(self):
                bucket, key = self._target()
                status, body, kind = bridge._get(bucket, key)
                self._send(status, body, kind)

            def _send(self, status, body, kind, head=False, etag=None):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                if etag:
                    self.send_header("ETag", etag)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _get(self, bucket: str, key: str) -> tuple[int, bytes, str]:
        url = self.worker_url + EXPLORER.format(bucket=bucket, key=urllib.parse.quote(key, safe=""))
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return 200, resp.read(), resp.headers.get("Content-Type") or "application/pdf"
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                xml = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code>"
                       b"<Message>The specified key does not exist.</Message></Error>")  # fmt: skip
                return 404, xml, "application/xml"
            raise

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
