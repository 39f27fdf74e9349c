"""Config writers for bench/run: the backend and one hop of each proxy.

Every proxy is a plain HTTP reverse proxy with ONE worker thread, upstream
keep-alive, no access log, and its default metrics/stats on. A hop has a
role: "single" (the only proxy on the path), "client" (client side of a
pair, forwards to the server side) or "server" (server side, forwards to
the backend).

Upstream protocol per scenario, the same for every peer that can do it:
h1/h1max → HTTP/1.1; h2 → h2c; grpc → h2c. nginx cannot proxy plain HTTP to
an HTTP/2 upstream, so in the h2 scenario nginx goes HTTP/2 → HTTP/1.1 (its
server-side hop listens HTTP/1.1); for gRPC it uses grpc_pass (h2c).
"""

from pathlib import Path


def write(peer, **hop):
    """Writes the hop's config under hop["work"] and returns its command."""
    writers = {"weft": weft, "weft-mtls": weft_mtls, "envoy": envoy, "haproxy": haproxy, "nginx": nginx}
    if peer not in writers:
        raise SystemExit(f"bench/run: no config writer for peer {peer!r} (bench/peers.py)")
    return writers[peer](**hop)


def upstream_port(peer, scenario, role, upstream, backends):
    if role == "client":
        return upstream
    if scenario == "grpc":
        return backends["grpc"]
    if scenario == "h2" and peer != "nginx":
        return backends["h2"]
    return backends["h1"]


def h2_front(peer, scenario, role):
    """Whether the hop's listener speaks h2c (prior knowledge)."""
    if scenario == "grpc":
        return True
    if scenario == "h2":
        return not (peer == "nginx" and role == "server")
    return False


def weft(tools, work, name, scenario, role, listen, upstream, backends, admin_base, control=None):
    port = upstream_port("weft", scenario, role, upstream, backends)
    # The cluster's upstream protocol is left at its default, the client's
    # (HTTP/1.1 in → HTTP/1.1 out, h2 in → h2 out).
    config = Path(work) / f"{name}.yaml"
    # The client side of a pair reaches another weft-proxy: a mesh endpoint,
    # so peer metadata is sent to it as between sidecars.
    mesh = ", mesh: true" if role == "client" else ""
    config.write_text(
        f"""listeners: [{{name: bench, address: "127.0.0.1:{listen}", kind: EXPLICIT, service: backend}}]
services: [{{name: backend, ports: [{{port: 80, protocol: HTTP, cluster: backend}}]}}]
clusters: [{{name: backend, endpoints: [{{address: "127.0.0.1:{port}"{mesh}}}]}}]
"""
    )
    return [
        str(tools["weft"]), "--config", str(config), "--workers", "1",
        "--admin", f"127.0.0.1:{admin_base}", "--health", f"127.0.0.1:{admin_base + 1}",
        "--metrics", f"127.0.0.1:{admin_base + 2}",
    ]


# The mTLS pair is the real mesh path: both sidecars take their config from
# weftd (--control-plane) and their workload certificates from weftd's CA
# (--token-file), the server side serves the backend's port on an inbound
# listener (--inbound ADDRESS=PORT) and the client side reaches it by service
# name (--listen ADDRESS=backend:8000), mTLS chosen by auto-mTLS. bench/run
# starts weftd, applies MESH_YAML and mints the tokens (control_plane()).
MESH_SERVICE = "backend"


def mesh_yaml(scenario, backends):
    protocol = {"h1": "HTTP", "h1max": "HTTP", "h2": "HTTP2", "grpc": "GRPC"}[scenario]
    port = upstream_port("weft-mtls", scenario, "server", None, backends)
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {MESH_SERVICE}}}
spec:
  hosts: [{MESH_SERVICE}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8000, name: bench, protocol: {protocol}, targetPort: {port}}}]
  workloadSelector: {{labels: {{app: {MESH_SERVICE}}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: STRICT}}}}
"""


def weft_mtls(tools, work, name, scenario, role, listen, upstream, backends, admin_base, control=None):
    if control is None or role == "single":
        raise SystemExit("bench/run: weft-mtls is a pair only and needs weftd (bench/run starts it)")
    protocol = {"h1": "http", "h1max": "http", "h2": "http2", "grpc": "grpc"}[scenario]
    account = "bench-server" if role == "server" else "bench-client"
    command = [
        str(tools["weft"]), "--control-plane", control["grpc"], "--ca-root", control["root"],
        "--token-file", control["tokens"][account],
        "--workers", "1", "--node-id", name, "--service-account", account,
        "--admin", f"127.0.0.1:{admin_base}", "--health", f"127.0.0.1:{admin_base + 1}",
        "--metrics", f"127.0.0.1:{admin_base + 2}",
    ]
    if role == "server":
        port = upstream_port("weft-mtls", scenario, role, upstream, backends)
        command += ["--workload", MESH_SERVICE, "--label", f"app={MESH_SERVICE}", "--port", f"{port}/{protocol}",
                    "--inbound", f"127.0.0.1:{listen}={port}"]
    else:
        command += ["--workload", "bench-client", "--listen", f"127.0.0.1:{listen}={MESH_SERVICE}:8000"]
    return command


def envoy(tools, work, name, scenario, role, listen, upstream, backends, admin_base, control=None):
    port = upstream_port("envoy", scenario, role, upstream, backends)
    config = Path(work) / f"{name}.yaml"
    # use_downstream_protocol_config: HTTP/1.1 upstream for HTTP/1.1
    # clients, h2 for h2 clients, as Weft does by default.
    config.write_text(
        f"""admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_base}}}}}}}
static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - {{name: all, domains: ["*"], routes: [{{match: {{prefix: "/"}}, route: {{cluster: backend, timeout: 0s}}}}]}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: backend
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        use_downstream_protocol_config: {{http_protocol_options: {{}}, http2_protocol_options: {{}}}}
"""
    )
    return [str(tools["envoy"]), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
            "--log-level", "warn"]


def haproxy(tools, work, name, scenario, role, listen, upstream, backends, admin_base, control=None):
    port = upstream_port("haproxy", scenario, role, upstream, backends)
    front = " proto h2" if h2_front("haproxy", scenario, role) else ""
    back = " proto h2" if scenario in ("h2", "grpc") else ""
    config = Path(work) / f"{name}.cfg"
    config.write_text(
        f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend bench
  bind 127.0.0.1:{listen}{front}
  default_backend backend
backend backend
  server backend 127.0.0.1:{port}{back}
"""
    )
    return ["haproxy", "-db", "-f", str(config)]


def nginx(tools, work, name, scenario, role, listen, upstream, backends, admin_base, control=None):
    port = upstream_port("nginx", scenario, role, upstream, backends)
    http2 = " http2" if h2_front("nginx", scenario, role) else ""
    if scenario == "grpc":
        location = "grpc_pass grpc://backend;"
    else:
        location = 'proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";'
    config = Path(work) / f"{name}.conf"
    config.write_text(
        f"""worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.err;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream backend {{ server 127.0.0.1:{port}; keepalive 64; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{listen}{http2}; location / {{ {location} }} }}
}}
"""
    )
    return ["nginx", "-c", str(config)]


def nginx_backend(work, h1_port, h2_port):
    """The fast backend: 1 KiB static file, one worker, HTTP/1.1 and h2c."""
    config = Path(work) / "backend-nginx.conf"
    config.write_text(
        f"""worker_processes 1;
daemon off;
pid {work}/backend-nginx.pid;
error_log {work}/backend-nginx.err;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{h1_port}; location / {{ root {work}; }} }}
  server {{ listen 127.0.0.1:{h2_port} http2; location / {{ root {work}; }} }}
}}
"""
    )
    return config
