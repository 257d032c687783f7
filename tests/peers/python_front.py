"""A thread-per-request frontend (ThreadingHTTPServer): GET /front/N calls the backend's
/back/N with urllib on the handling thread, then answers 200. Usage: python_front.py PORT BACKEND_PORT"""
import http.server
import sys
import urllib.error
import urllib.request

PORT, BACKEND = int(sys.argv[1]), int(sys.argv[2])


class Front(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        n = self.path.rsplit("/", 1)[-1]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{BACKEND}/back/{n}", timeout=10).read()
        except urllib.error.HTTPError as e:  # the backend answers 404 for /back/N
            e.read()
        body = f"front {n}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Front).serve_forever()
