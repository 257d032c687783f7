"""Sends GET PREFIX/FIRST .. PREFIX/{FIRST+N-1} from THREADS threads, each on its own keep-alive
connection, pausing PAUSE_MS between requests, and prints one JSON line: the status counts and the
slowest request's seconds. Exits non-zero if a request fails to complete.
Usage: steady_load.py HOST PORT PREFIX FIRST N THREADS PAUSE_MS"""
import http.client
import json
import sys
import threading
import time

HOST, PORT, PREFIX = sys.argv[1], int(sys.argv[2]), sys.argv[3]
FIRST, N, THREADS, PAUSE = (int(a) for a in sys.argv[4:8])

statuses = {}
slowest = [0.0]
failures = []
lock = threading.Lock()


def worker(k):
    conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
    for i in range(FIRST + k, FIRST + N, THREADS):
        start = time.monotonic()
        try:
            conn.request("GET", f"{PREFIX}/{i}")
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except Exception as e:  # noqa: BLE001 - reported, and the run fails
            with lock:
                failures.append(f"{PREFIX}/{i}: {e!r}")
            conn.close()
            conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
            continue
        took = time.monotonic() - start
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            slowest[0] = max(slowest[0], took)
        if PAUSE:
            time.sleep(PAUSE / 1000)
    conn.close()


threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"statuses": statuses, "slowest_s": slowest[0], "failures": failures[:5]}))
sys.exit(1 if failures else 0)
