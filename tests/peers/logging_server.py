"""A ThreadingHTTPServer whose handler logs one line per request to stderr, with a secret in
it (`password=hunter2`, for the redaction hook), before answering 200; http.server's own access
line (also stderr) follows. Usage: logging_server.py PORT"""
import http.server
import sys

PORT = int(sys.argv[1])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        sys.stderr.write(f"handling {self.path} for user=bob password=hunter2\n")
        sys.stderr.flush()
        body = b"logged\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(f"listening on 127.0.0.1:{PORT}", flush=True)
server.serve_forever()
