"""A gRPC server and client made with grpcio alone (no generated stubs: raw-bytes methods).

    grpc_service.py server PORT        serves tracewire.test.Echo until killed
    grpc_service.py client PORT TRACEPARENT
                                       runs the test's calls over one channel, then exits
    grpc_service.py late PORT GO_FILE  3 Unary calls, prints "first", waits for GO_FILE to
                                       exist, then 5 more Unary calls on the same channel

Service `tracewire.test.Echo`:
- `Unary`: echoes the request; a request of b"missing" ends with NOT_FOUND.
- `Stream`: server streaming, sends the request back 3 times.

The client makes, in order: one Unary OK (with TRACEPARENT and a secret `authorization` in its
metadata), one Unary NOT_FOUND, one Stream, then 20 concurrent Unary calls on the same channel
(one HTTP/2 connection). It prints one line per outcome.
"""
import sys
import time
from concurrent import futures

import grpc

SERVICE = "tracewire.test.Echo"


def unary(request, context):
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    return request


def stream(request, context):
    for _ in range(3):
        yield request


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


SECRET = "Bearer grpc-secret-token"


def client(port, traceparent):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        streaming = channel.unary_stream(f"/{SERVICE}/Stream")
        metadata = (("traceparent", traceparent), ("authorization", SECRET))
        print("ok", call(b"hello", timeout=10, metadata=metadata).decode(), flush=True)
        try:
            call(b"missing", timeout=10)
            print("missing: unexpected OK", flush=True)
        except grpc.RpcError as e:
            print("missing", e.code().name, flush=True)
        print("stream", len(list(streaming(b"s", timeout=10))), flush=True)
        pending = [call.future(b"c%d" % i, timeout=10) for i in range(20)]
        print("concurrent", sum(1 for f in pending if f.result() is not None), flush=True)
        # Let the agent read the last frames before the connection closes.
        time.sleep(0.2)


def late(port, go_file):
    """A connection that outlives an agent start: its HPACK table predates the agent."""
    import os

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        for i in range(3):
            call(b"before %d" % i, timeout=10)
        print("first", flush=True)
        deadline = time.time() + 60
        while not os.path.exists(go_file):
            if time.time() > deadline:
                sys.exit("GO_FILE never appeared")
            time.sleep(0.05)
        for i in range(5):
            call(b"after %d" % i, timeout=10)
        print("done", flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "server":
        serve(port)
    elif mode == "client":
        client(port, sys.argv[3])
    elif mode == "late":
        late(port, sys.argv[3])
    else:
        sys.exit(f"unknown mode {mode}")
