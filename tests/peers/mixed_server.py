"""A keep-alive HTTP/1.1 server (ThreadingHTTPServer) with a known mix of outcomes: GET /items/N
answers 500 when N % 100 == 0, sleeps 600 ms then answers 200 when N % 100 == 50, and answers 200
at once otherwise; anything else is 200 too. Usage: mixed_server.py PORT"""
import http.server
import sys
import time

PORT = int(sys.argv[1])


class Mixed(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        status = 200
        last = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/items/") and last.isdigit():
            n = int(last)
            if n % 100 == 0:
                status = 500
            elif n % 100 == 50:
                time.sleep(0.6)
        body = f"{status} {self.path}\n".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Mixed).serve_forever()
