"""A proxyless gRPC peer for the tests, on grpcio (PyPI) in the project venv.

    peer.py server NAME              a gRPC server on 127.0.0.1:0 answering every method with NAME;
                                     prints its port, then serves until stdin closes
    peer.py calls TARGET N           N unary calls to TARGET (e.g. xds:///orders), one line each:
                                     "ok <reply>" or "error <code> <details>"
    peer.py loop TARGET              a call every 50 ms until stdin closes, one line each

The client reads its xDS bootstrap from GRPC_XDS_BOOTSTRAP_CONFIG, as an ECS task would.
Calls carry a 5 s deadline and no payload schema: bytes in, bytes out.
"""
import sys
import threading
import time
from concurrent import futures

import grpc

METHOD = "/ecsxds.Test/Hello"


def server(name):
    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            return grpc.unary_unary_rpc_method_handler(lambda request, context: name.encode())

    s = grpc.server(futures.ThreadPoolExecutor(8))
    s.add_generic_rpc_handlers((Handler(),))
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    print(port, flush=True)
    sys.stdin.read()
    s.stop(0)


def call(stub):
    try:
        return "ok " + stub(b"hello", timeout=5).decode()
    except grpc.RpcError as e:
        return f"error {e.code().name} {e.details()}"


def calls(target, n):
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
        server(sys.argv[2])
    elif mode == "calls":
        calls(sys.argv[2], int(sys.argv[3]))
    elif mode == "loop":
        loop(sys.argv[2])
    else:
        sys.exit(f"unknown mode {mode}")
