"""Small servers and clients that the interception tests run inside network namespaces.

Only the standard library, so any python3 runs it (a process of another uid may not reach the
venv's interpreter). Every server is bounded in time and exits when its stdin closes.

  serve SPEC...           SPEC is KIND:ADDR:PORT:NAME with KIND one of
                            http     200 to every GET, body "NAME\\nsource IP:PORT[ xff X]\\n"
                            http503  503 to every GET, body "NAME\\n"
                            tcp      writes "NAME\\n" on connect and closes
                          prints "ready" once every SPEC listens
  get URL [--host HOST]   prints "STATUS BODY" (status 0 and the error when it cannot connect)
  tcp ADDR PORT           prints the first line received, or "error: ..."
"""

import argparse
import http.client
import http.server
import socket
import socketserver
import sys
import threading
import urllib.parse

LIFETIME_SECS = 600
CLIENT_TIMEOUT_SECS = 10


class Quiet(http.server.BaseHTTPRequestHandler):
    name = ""
    status = 200

    def do_GET(self):
        body = f"{self.name}\n"
        if self.status == 200:
            source = f"{self.client_address[0]}:{self.client_address[1]}"
            xff = self.headers.get("X-Forwarded-For")
            body += f"source {source}" + (f" xff {xff}" if xff else "") + "\n"
        data = body.encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Greeter(socketserver.BaseRequestHandler):
    name = ""

    def handle(self):
        self.request.sendall(f"{self.name}\n".encode())


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def listen(spec):
    kind, addr, port, name = spec.split(":", 3)
    if kind in ("http", "http503"):
        handler = type("Handler", (Quiet,), {"name": name, "status": 200 if kind == "http" else 503})
    elif kind == "tcp":
        handler = type("Handler", (Greeter,), {"name": name})
    else:
        sys.exit(f"unknown server kind {kind!r} in {spec!r}")
    return Server((addr, int(port)), handler)


def serve(specs):
    servers = [listen(spec) for spec in specs]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    done = threading.Event()

    def until_stdin_closes():
        sys.stdin.read()
        done.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    done.wait(LIFETIME_SECS)


def get(url, host):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=CLIENT_TIMEOUT_SECS)
    headers = {"Host": host} if host else {}
    try:
        conn.request("GET", parts.path or "/", headers=headers)
        response = conn.getresponse()
        print(f"{response.status} {response.read().decode(errors='replace')}", end="")
    except (OSError, http.client.HTTPException) as e:
        print(f"0 {e!r}")
    finally:
        conn.close()


def tcp(addr, port):
    try:
        with socket.create_connection((addr, int(port)), timeout=CLIENT_TIMEOUT_SECS) as s:
            line = s.makefile("rb").readline().decode(errors="replace")
            print(line.rstrip("\n") if line else "error: closed before a line")
    except OSError as e:
        print(f"error: {e}")


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve").add_argument("specs", nargs="+")
    getter = commands.add_parser("get")
    getter.add_argument("url")
    getter.add_argument("--host")
    connect = commands.add_parser("tcp")
    connect.add_argument("addr")
    connect.add_argument("port")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.specs)
    elif args.command == "get":
        get(args.url, args.host)
    else:
        tcp(args.addr, args.port)


if __name__ == "__main__":
    main()
