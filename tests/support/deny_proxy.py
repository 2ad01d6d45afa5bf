#!/usr/bin/env python3
"""An HTTP proxy on 127.0.0.1 in front of moto that plays IAM for one thing moto cannot do:
a role that was removed. After `POST /__deny` with a role ARN as the body, STS AssumeRole of
that role is refused (403 AccessDenied), and so is every request signed with credentials an
earlier AssumeRole of it returned (ECS answers AccessDeniedException), as AWS does once the
role and its policies are gone. Everything else is forwarded to moto unchanged.

With DELAY_MS, every answer is held that long first: the round trip to AWS that moto on
127.0.0.1 lacks, for measuring what waits on it (requests in flight at once overlap).

Usage: deny_proxy.py MOTO_PORT [DELAY_MS]; prints the port it listens on, then serves until
killed.
Safety: listens on and forwards to 127.0.0.1 only.
"""
import http.server
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

MOTO = f"http://127.0.0.1:{int(sys.argv[1])}"
DELAY = int(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0
denied = set()  # role ARNs
keys = {}  # access key id -> role ARN it was issued for
lock = threading.Lock()
# Never an HTTP proxy from the environment: moto is on 127.0.0.1.
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def role_of_request(headers):
    match = re.search(r"Credential=([A-Z0-9]+)/", headers.get("Authorization", ""))
    with lock:
        return keys.get(match.group(1)) if match else None


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.forward()

    def do_POST(self):
        self.forward()

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/__deny":
            with lock:
                denied.add(body.decode())
            return self.answer(200, b"denied\n", "text/plain")
        form = urllib.parse.parse_qs(body.decode(errors="replace")) if b"Action=" in body else {}
        assumed = form.get("Action") == ["AssumeRole"] and form.get("RoleArn", [""])[0]
        role = role_of_request(self.headers)
        with lock:
            refused = assumed in denied or role in denied
        if refused:
            return self.refuse()
        status, headers, answer = self.send_to_moto(body)
        time.sleep(DELAY)
        if assumed and status == 200:
            key = re.search(rb"<AccessKeyId>([A-Z0-9]+)</AccessKeyId>", answer)
            if key:
                with lock:
                    keys[key.group(1).decode()] = assumed
        self.answer(status, answer, headers.get("Content-Type", "application/xml"))

    def send_to_moto(self, body):
        request = urllib.request.Request(MOTO + self.path, data=body or None, method=self.command)
        for name, value in self.headers.items():
            if name.lower() not in ("host", "content-length", "connection"):
                request.add_header(name, value)
        try:
            with direct.open(request, timeout=30) as out:
                return out.status, out.headers, out.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def refuse(self):
        message = "the role was removed (deny_proxy)"
        if self.headers.get("X-Amz-Target"):
            body = ('{"__type":"AccessDeniedException","message":"%s"}' % message).encode()
            return self.answer(400, body, "application/x-amz-json-1.1")
        body = (
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
            f"<Message>{message}</Message></Error><RequestId>deny</RequestId></ErrorResponse>"
        ).encode()
        self.answer(403, body, "text/xml")

    def answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
print(server.server_address[1], flush=True)
server.serve_forever()
