"""Byte integrity under trace-context injection.

  inject_integrity.py echo PORT     a TCP echo server on 127.0.0.1:PORT: every byte read is written
                                    back on the same connection, until the client closes it
  inject_integrity.py client PORT   runs the cases below against the echo server, one connection
                                    each, and prints one JSON object per case:
                                    {"case", "sent", "echoed", "added": [inserted lines]}

The client compares what came back with what it sent: the only change allowed is whole
`traceparent: ...` lines inserted into request heads. It reports them; the test decides how many
each case may have. Random payloads come from a fixed seed, so a failure can be replayed.
"""
import hashlib
import json
import random
import socket
import sys
import threading
import time


def serve(port):
    listener = socket.create_server(("127.0.0.1", port))

    def echo(conn):
        with conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    return
                conn.sendall(data)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def exchange(port, pieces, expect_len_at_least, pause=0.0):
    """Sends `pieces` (one write each; a list inside means one sendmsg with those iovecs), then
    reads until the echo is at least as long as what was sent plus what injection may add."""
    sock = socket.create_connection(("127.0.0.1", port))
    received = bytearray()

    def reader():
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            received.extend(data)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    for piece in pieces:
        if isinstance(piece, list):
            sock.sendmsg(piece)
        else:
            sock.sendall(piece)
        if pause:
            time.sleep(pause)
    # Give the echo time to come back, then stop reading.
    deadline = time.time() + 20
    while time.time() < deadline:
        time.sleep(0.05)
        if len(received) >= expect_len_at_least:
            time.sleep(0.2)
            break
    sock.shutdown(socket.SHUT_WR)
    t.join(timeout=5)
    sock.close()
    return bytes(received)


def added_lines(sent, echoed):
    """The lines inserted into `sent` to make `echoed`, or None when anything else changed."""
    added = []
    i = j = 0
    while i < len(sent) or j < len(echoed):
        if i < len(sent) and j < len(echoed) and sent[i] == echoed[j]:
            i += 1
            j += 1
            continue
        # An inserted line starts here in the echo and ends with CRLF.
        if echoed[j:j + 13].lower() == b"traceparent: ":
            end = echoed.find(b"\r\n", j)
            if end < 0:
                return None
            added.append(echoed[j:end + 2].decode("latin-1"))
            j = end + 2
            continue
        return None
    return added


def case(name, port, pieces, pause=0.0):
    sent = b"".join(b"".join(p) if isinstance(p, list) else p for p in pieces)
    echoed = exchange(port, pieces, len(sent), pause)
    added = added_lines(sent, echoed)
    print(json.dumps({
        "case": name,
        "sent": len(sent),
        "echoed": len(echoed),
        "sent_sha256": hashlib.sha256(sent).hexdigest(),
        "echoed_sha256": hashlib.sha256(echoed).hexdigest(),
        "added": added,
    }), flush=True)


def head(method, path, extra=b""):
    return method + b" " + path + b" HTTP/1.1\r\nHost: integrity\r\nUser-Agent: tw-integrity\r\n" + extra + b"\r\n"


def client(port):
    rng = random.Random(20261126)
    for size in (1, 7, 100, 4096, 65536, 1 << 20, 4 << 20):
        case(f"binary-{size}", port, [rng.randbytes(size)])
    body = rng.randbytes(3000)
    case("post-with-body", port, [head(b"POST", b"/upload", b"Content-Length: 3000\r\n") + body])
    # A body sent apart from its head that itself looks like a request head: body bytes.
    fake = head(b"GET", b"/not-a-request")
    case("body-that-looks-like-a-request", port, [
        head(b"POST", b"/upload", b"Content-Length: %d\r\n" % len(fake)),
        fake,
    ], pause=0.05)
    case("pipelined-separate-writes", port, [head(b"GET", b"/p1"), head(b"GET", b"/p2"), head(b"GET", b"/p3")])
    case("pipelined-one-write", port, [head(b"GET", b"/q1") + head(b"GET", b"/q2") + head(b"GET", b"/q3")])
    case("head-in-3-pieces", port, [b"GET /three HTTP/1.1\r\n", b"Host: integrity\r\n", b"\r\n"], pause=0.05)
    case("head-split-over-writev", port, [[b"GET /iov HTTP/1.1\r\nHost: integ", b"rity\r\n\r\n"]])
    case("already-has-traceparent", port, [head(
        b"GET", b"/own", b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n")])
    case("chunked-then-next-request", port, [
        head(b"POST", b"/chunked", b"Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n0\r\n\r\n",
        head(b"GET", b"/after-chunked"),
    ], pause=0.05)
    case("plain-get", port, [head(b"GET", b"/plain")])


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "echo":
        serve(port)
    else:
        client(port)
