"""A tiny gRPC backend for bench/run: unary /bench.Echo/Echo returns the
request message as it came (bytes in, bytes out, no generated code).

Runs with the bench virtualenv's Python (grpcio):
  bench/.venv/bin/python bench/grpc_echo.py serve 127.0.0.1:19082
  bench/.venv/bin/python bench/grpc_echo.py call 127.0.0.1:19100   (one real
  gRPC call through a path: exits non-zero unless the status is OK and the
  echo matches)
"""

import sys
from concurrent import futures

import grpc

METHOD = "/bench.Echo/Echo"
MESSAGE = b"w" * 1024


def serve(address):
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)},
    )
    # Four threads: the handler does no work, more threads only add GIL
    # contention on a 2-core machine.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(address) == 0:
        sys.exit(f"grpc_echo: cannot listen on {address}")
    server.start()
    server.wait_for_termination()


def call(address):
    with grpc.insecure_channel(address) as channel:
        reply = channel.unary_unary(METHOD)(MESSAGE, timeout=5)
    if reply != MESSAGE:
        sys.exit(f"grpc_echo: {address} answered {len(reply)} bytes, not the echo")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("serve", "call"):
        sys.exit("usage: grpc_echo.py serve|call HOST:PORT")
    (serve if sys.argv[1] == "serve" else call)(sys.argv[2])
