"""What the three Python services of the Bookinfo demo share: where to
listen, how to reach the other services, which headers to pass on, and a
small JSON-speaking HTTP server. Standard library only.

Environment (all optional):
  LISTEN_ADDR       host:port to serve on (0.0.0.0:9080)
  <NAME>_HOSTNAME   host of service NAME (its name, e.g. "details")
  <NAME>_PORT       its port (9080)
  SERVICES_DOMAIN   appended to every host name (e.g. ".default.svc.cluster.local")
  POD_NAME          who answers (else the host name)
"""

import json
import os
import signal
import socket
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Passed from each incoming request to the calls it causes, so that a
# tracer (and header-based routing on end-user) sees one story.
PROPAGATED = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "sw8",
    "end-user",
    "user-agent",
)

# Calls go straight to the service name: a host's http_proxy setting must
# not send mesh traffic elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pod_name():
    return os.environ.get("POD_NAME") or socket.gethostname()


def propagated(headers):
    """The propagated headers present in `headers`, lower-case names."""
    return {name: headers[name] for name in PROPAGATED if headers.get(name) is not None}


def seen_headers(headers):
    """What a service echoes back for checking propagation: the propagated
    headers it received, plus `cookie` if one arrived (none should: the
    product page keeps its cookie to itself)."""
    seen = propagated(headers)
    if headers.get("cookie") is not None:
        seen["cookie"] = headers["cookie"]
    return seen


def service_url(name):
    """http://HOST:PORT of service `name`, from the environment."""
    upper = name.upper()
    host = os.environ.get(upper + "_HOSTNAME") or name
    domain = os.environ.get("SERVICES_DOMAIN", "")
    port = os.environ.get(upper + "_PORT") or "9080"
    return "http://%s%s:%s" % (host, domain, port)


def get_json(url, headers, timeout):
    """GET `url` and decode its JSON; raises on any failure, non-200 included."""
    request = urllib.request.Request(url, headers=headers)
    with _OPENER.open(request, timeout=timeout) as response:
        if response.status != 200:
            raise OSError("%s answered %d" % (url, response.status))
        return json.loads(response.read())


class Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 with helpers to answer; one log line per request."""

    protocol_version = "HTTP/1.1"

    def send_body(self, status, body, content_type, extra_headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, value):
        body = json.dumps(value).encode()
        self.send_body(status, body, "application/json")

    def log_message(self, format, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


def serve(handler_class, what):
    """Serves `handler_class` on LISTEN_ADDR until SIGTERM or Ctrl-C."""
    listen = os.environ.get("LISTEN_ADDR") or "0.0.0.0:9080"
    host, _, port = listen.rpartition(":")
    try:
        address = (host.strip("[]") or "0.0.0.0", int(port))
    except ValueError:
        sys.exit("%s: LISTEN_ADDR=%r is not host:port" % (what, listen))
    try:
        server = ThreadingHTTPServer(address, handler_class)
    except OSError as err:
        sys.exit("%s: cannot listen on %s: %s" % (what, listen, err))
    server.daemon_threads = True
    # SIGTERM (weft down) ends the process as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write("%s (%s) on %s\n" % (what, pod_name(), listen))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
