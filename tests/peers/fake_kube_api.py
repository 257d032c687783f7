"""A fake Kubernetes API server: just what kube's pod watcher asks, over plain HTTP.

Usage: fake_kube_api.py PORT POD_UID

Serves one pod, `checkout-7d9f8b6c5-x2x4q` in namespace `shop` on node `node-7`, owned by the
ReplicaSet `checkout-7d9f8b6c5` (pod-template-hash 7d9f8b6c5), whose uid is POD_UID:
- GET /api/v1/pods?fieldSelector=spec.nodeName%3D<node>...: a PodList with the pods of that
  node (none for another node or without the selector: the agent must ask for its node only);
- the same with watch=true: a watch that sends nothing and ends after its timeoutSeconds
  (at most 60 s), as the API server does when nothing changes.
Anything else answers 404 with a Status. Every request line goes to stderr.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PORT = int(sys.argv[1])
POD_UID = sys.argv[2]
NODE = "node-7"
RESOURCE_VERSION = "4711"

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "checkout-7d9f8b6c5-x2x4q",
        "namespace": "shop",
        "uid": POD_UID,
        "resourceVersion": RESOURCE_VERSION,
        "labels": {"app": "checkout", "pod-template-hash": "7d9f8b6c5"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "checkout-7d9f8b6c5",
                "uid": "6a0f6c4e-1c1f-4a43-9a57-2b1d3c6f7e80",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    },
    "spec": {
        "nodeName": NODE,
        "containers": [{"name": "checkout", "image": "checkout:1"}],
    },
    "status": {"phase": "Running"},
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("fake-kube-api: " + (fmt % args) + "\n")
        sys.stderr.flush()

    def reply_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path != "/api/v1/pods":
            self.reply_json(
                404,
                {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "status": "Failure",
                    "reason": "NotFound",
                    "message": "the fake API serves /api/v1/pods only",
                    "code": 404,
                },
            )
            return
        selector = query.get("fieldSelector", [""])[0]
        pods = [POD] if selector == "spec.nodeName=" + NODE else []
        if query.get("watch", [""])[0] in ("true", "1"):
            self.watch(int(query.get("timeoutSeconds", ["60"])[0]))
            return
        self.reply_json(
            200,
            {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": RESOURCE_VERSION},
                "items": pods,
            },
        )

    def watch(self, timeout):
        """Nothing changes: the stream stays open and ends cleanly after its timeout."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        time.sleep(min(max(timeout, 1), 60))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    Server(("127.0.0.1", PORT), Handler).serve_forever()
