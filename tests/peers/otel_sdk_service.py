"""A service instrumented by hand with the official OpenTelemetry Python SDK, for interop tests.

  otel_sdk_service.py PORT DOWNSTREAM

GET /x/N: the W3C propagator extracts the incoming traceparent, a SERVER span is recorded, and
inside it a CLIENT span calls DOWNSTREAM/N with urllib, carrying that span's traceparent; then 200.
Spans go to OTEL_EXPORTER_OTLP_ENDPOINT over OTLP/HTTP (protobuf), one export per span.
"""
import http.server
import os
import sys
import urllib.error
import urllib.request

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

PORT, DOWNSTREAM = int(sys.argv[1]), sys.argv[2]

provider = TracerProvider(
    resource=Resource.create({"service.name": "tw-sdk", "process.pid": os.getpid()})
)
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("tracewire-interop")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        incoming = propagate.extract(self.headers)
        n = self.path.rsplit("/", 1)[-1]
        with tracer.start_as_current_span(
            "GET", context=incoming, kind=SpanKind.SERVER,
            attributes={"http.request.method": "GET", "url.path": self.path},
        ):
            url = f"{DOWNSTREAM}/{n}"
            with tracer.start_as_current_span(
                "GET", kind=SpanKind.CLIENT,
                attributes={"http.request.method": "GET", "url.full": url},
            ):
                headers = {}
                propagate.inject(headers)
                try:
                    urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10).read()
                except urllib.error.HTTPError as e:
                    e.read()
            body = f"sdk {n}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
