"""A proxyless gRPC peer for the tests, on grpcio (PyPI) in the project venv.

    peer.py server NAME [DIR]        a gRPC server on 127.0.0.1:0 answering every method with NAME;
                                     prints its port, then serves until stdin closes. With DIR:
                                     TLS with DIR/cert.pem (chain) and DIR/key.pem, a client
                                     certificate of DIR/bundle.pem's CA required, and the answer
                                     "NAME to <the client's URI SAN>"
    peer.py xds-server NAME ADDRESS  an xDS-enabled server (gRFC A36) on ADDRESS (IP:port) with xDS
                                     server credentials (plaintext fallback), its listener and
                                     security from the control plane; answers "NAME to <the
                                     client's URI SAN>"; prints the port, serves until stdin closes
    peer.py calls TARGET N [xds]     N unary calls to TARGET (e.g. xds:///orders), one line each:
                                     "ok <reply>" or "error <code> <details>"; with "xds", over
                                     xDS credentials (TLS as the cluster's UpstreamTlsContext
                                     says, plaintext where it has none)
    peer.py loop TARGET              a call every 50 ms until stdin closes, one line each

The client reads its xDS bootstrap from GRPC_XDS_BOOTSTRAP_CONFIG, as an ECS task would.
Calls carry a 5 s deadline and no payload schema: bytes in, bytes out.
"""
import os
import sys
import threading
import time
from concurrent import futures

import grpc
import grpc.experimental  # insecure_channel_credentials, the xDS credentials' fallback

METHOD = "/ecsxds.Test/Hello"


def read(dir, name):
    with open(os.path.join(dir, name), "rb") as f:
        return f.read()


def caller(context):
    """The client certificate's URI SAN (its SPIFFE ID), as grpc's auth context holds it."""
    names = context.auth_context().get("x509_subject_alternative_name", [])
    uris = [n.decode() for n in names if n.startswith(b"spiffe://")]
    return uris[0] if uris else "nobody"


def server(name, dir=None):
    def answer(request, context):
        return (name if dir is None else f"{name} to {caller(context)}").encode()

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            return grpc.unary_unary_rpc_method_handler(answer)

    s = grpc.server(futures.ThreadPoolExecutor(8))
    s.add_generic_rpc_handlers((Handler(),))
    if dir is None:
        port = s.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials(
            [(read(dir, "key.pem"), read(dir, "cert.pem"))],
            root_certificates=read(dir, "bundle.pem"),
            require_client_auth=True,
        )
        port = s.add_secure_port("127.0.0.1:0", credentials)
    s.start()
    print(port, flush=True)
    sys.stdin.read()
    s.stop(0)


def xds_server(name, address):
    def answer(request, context):
        return f"{name} to {caller(context)}".encode()

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            return grpc.unary_unary_rpc_method_handler(answer)

    s = grpc.server(futures.ThreadPoolExecutor(8), xds=True)
    s.add_generic_rpc_handlers((Handler(),))
    fallback = grpc.insecure_server_credentials()
    s.add_secure_port(address, grpc.xds_server_credentials(fallback))
    s.start()
    # An xDS server binds once it has its listener: its port is the one asked for.
    print(address.rsplit(":", 1)[1], flush=True)
    sys.stdin.read()
    s.stop(0)


def call(stub):
    try:
        return "ok " + stub(b"hello", timeout=5).decode()
    except grpc.RpcError as e:
        return f"error {e.code().name} {e.details()}"


def calls(target, n, xds=False):
    if xds:
        fallback = grpc.experimental.insecure_channel_credentials()
        credentials = grpc.xds_channel_credentials(fallback_credentials=fallback)
        channel = grpc.secure_channel(target, credentials)
    else:
        channel = grpc.insecure_channel(target)
    stub = channel.unary_unary(METHOD)
    for _ in range(n):
        print(call(stub), flush=True)


def loop(target):
    channel = grpc.insecure_channel(target)
    stub = channel.unary_unary(METHOD)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    while not done.is_set():
        print(call(stub), flush=True)
        time.sleep(0.05)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        server(*sys.argv[2:4])
    elif mode == "xds-server":
        xds_server(sys.argv[2], sys.argv[3])
    elif mode == "calls":
        calls(sys.argv[2], int(sys.argv[3]), sys.argv[4:5] == ["xds"])
    elif mode == "loop":
        loop(sys.argv[2])
    else:
        sys.exit(f"unknown mode {mode}")
