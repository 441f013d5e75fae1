"""HTTP/2 over cleartext (prior knowledge) for tests that need what HTTP/1.1 clients and the
demo upstreams cannot send: request and response trailers. Both sides are built on the `h2`
protocol library (the one httpx uses for HTTP/2), on plain sockets.

- `h2_request()`: one request, its body in chunks, optionally ending with trailers.
- `H2Upstream`: an HTTP/2 server for an Envoy cluster with `http2_protocol_options`; a handler
  answers each request (body chunks, optionally trailers) and every request it got is kept.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Callable

import h2.config
import h2.connection
import h2.events


@dataclass
class H2Message:
    """A request or response as it went over the wire."""

    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    reset: bool = False

    @property
    def status(self) -> int:
        return int(self.headers.get(":status", "0"))

    def json(self):
        import json

        return json.loads(self.body)


def _decode(pairs) -> dict[str, str]:
    out = {}
    for k, v in pairs:
        k = k.decode() if isinstance(k, bytes) else k
        v = v.decode() if isinstance(v, bytes) else v
        out[k] = v
    return out


def h2_request(port: int, method: str, path: str, headers: list[tuple[str, str]],
               body_chunks: list[bytes], trailers: list[tuple[str, str]] | None = None,
               timeout: float = 10.0) -> H2Message:
    """Sends one request over a fresh h2c connection to 127.0.0.1:`port` and reads the answer.
    Without `trailers` the last body chunk ends the stream."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        request_headers = [(":method", method), (":path", path), (":scheme", "http"),
                           (":authority", f"127.0.0.1:{port}"), *headers]
        ends_at_headers = not body_chunks and not trailers
        conn.send_headers(sid, request_headers, end_stream=ends_at_headers)
        for i, chunk in enumerate(body_chunks):
            last = i + 1 == len(body_chunks) and not trailers
            conn.send_data(sid, chunk, end_stream=last)
        if trailers:
            conn.send_headers(sid, trailers, end_stream=True)
        sock.sendall(conn.data_to_send())
        response = H2Message()
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    response.headers = _decode(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    response.body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    response.trailers = _decode(event.headers)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    done = True
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                    response.reset = True
                    done = True
                elif isinstance(event, h2.events.ConnectionTerminated):
                    done = True
            pending = conn.data_to_send()
            if pending:
                sock.sendall(pending)
        return response
    finally:
        sock.close()


@dataclass
class Answer:
    """What `H2Upstream` sends back: headers, the body in chunks, optional trailers."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    trailers: list[tuple[str, str]] | None = None


class H2Upstream:
    """An h2c server on 127.0.0.1 (a thread per connection). `handler(request) -> Answer`;
    `received` lists every complete request, in order."""

    def __init__(self, handler: Callable[[H2Message], Answer]):
        self.handler = handler
        self.received: list[H2Message] = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        streams: dict[int, H2Message] = {}
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = H2Message(headers=_decode(event.headers))
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id].body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.TrailersReceived):
                        streams[event.stream_id].trailers = _decode(event.headers)
                    elif isinstance(event, h2.events.StreamEnded):
                        request = streams.pop(event.stream_id)
                        with self._lock:
                            self.received.append(request)
                        self._answer(conn, event.stream_id, self.handler(request))
                sock.sendall(conn.data_to_send())
        except (OSError, KeyError):
            return
        finally:
            sock.close()

    @staticmethod
    def _answer(conn: h2.connection.H2Connection, sid: int, answer: Answer) -> None:
        ends_at_headers = not answer.chunks and not answer.trailers
        conn.send_headers(sid, [(":status", str(answer.status)), *answer.headers], end_stream=ends_at_headers)
        for i, chunk in enumerate(answer.chunks):
            conn.send_data(sid, chunk, end_stream=i + 1 == len(answer.chunks) and not answer.trailers)
        if answer.trailers:
            conn.send_headers(sid, answer.trailers, end_stream=True)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def use_http2_upstream(cfg: dict, cluster_name: str) -> None:
    """Makes Envoy speak HTTP/2 (prior knowledge) to `cluster_name` in the bootstrap `cfg`."""
    for cluster in cfg["static_resources"]["clusters"]:
        if cluster["name"] == cluster_name:
            cluster["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            }
            return
    raise KeyError(cluster_name)
