"""An OTLP receiver for the tests: oteltest's sink (a real OTLP/gRPC and
OTLP/HTTP server built on the OpenTelemetry protos), printing every span it
receives as one JSON line on stdout.

    python sink.py grpc|http PORT

Prints `ready` once it listens.
"""

import json
import logging
import sys

from google.protobuf.json_format import MessageToDict
from oteltest.sink import GrpcSink, HttpSink
from oteltest.sink.handler import RequestHandler


class SpanPrinter(RequestHandler):
    def handle_logs(self, request, headers):
        pass

    def handle_metrics(self, request, headers):
        pass

    def handle_trace(self, request, headers):
        for resource_spans in MessageToDict(request).get("resourceSpans", []):
            resource = {
                a["key"]: a["value"]
                for a in resource_spans.get("resource", {}).get("attributes", [])
            }
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    span["attributes"] = {
                        a["key"]: a["value"] for a in span.get("attributes", [])
                    }
                    span["resource"] = resource
                    print(json.dumps(span), flush=True)


def main():
    protocol, port = sys.argv[1], int(sys.argv[2])
    logger = logging.getLogger("sink")
    if protocol == "grpc":
        sink = GrpcSink(SpanPrinter(), logger, port=port)
        sink.start()
        print("ready", flush=True)
        sink.wait_for_termination()
    else:
        sink = HttpSink(SpanPrinter(), logger, port=port, daemon=False)
        sink.start()
        print("ready", flush=True)
        sink.svr_thread.join()


if __name__ == "__main__":
    main()
