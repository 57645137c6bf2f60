"""The socket hub on its own, against the paper exchange's order-update socket: each connection's
owner hears of its end exactly once, whenever it ends, and a stopped hub leaves no socket open
and no thread running."""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading

import pytest

from broker.sockets import Connection, SocketHub
from paper import AccountSpec, PaperExchange
from tests.conftest import free_port, wait_until

CLIENT, TOKEN = "1300000001", "hub-test-token"
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's, for the handshake's answer


@pytest.fixture
def exchange():
    ex = PaperExchange(price_walk=False).start()
    ex.add_account(AccountSpec(CLIENT, TOKEN))
    yield ex
    ex.stop()


class Owner:
    """What one connection's callbacks saw."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: list[str] = []

    def connect(self, hub: SocketHub, url: str) -> Connection:
        login = json.dumps({"LoginReq": {"MsgCode": 42, "ClientId": CLIENT, "Token": TOKEN}})
        return hub.connect(url, on_open=lambda conn: conn.send(login),
                           on_frame=lambda conn, data, received_ns: self.frames.append(data),
                           on_close=lambda conn, reason: self.closed.append(reason))


def _hub_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sockets")]


def test_frames_reach_their_connection_and_a_stopped_hub_leaves_nothing_open(exchange):
    hub = SocketHub().start()
    owners = [Owner() for _ in range(3)]
    for owner in owners:
        owner.connect(hub, exchange.ws_url)
    wait_until(lambda: exchange.socket_count(CLIENT) == 3, message="three sockets logged in")
    exchange.send_raw(CLIENT, "hello")
    wait_until(lambda: all(owner.frames == [b"hello"] for owner in owners), message="the frame on every socket")

    hub.stop()
    wait_until(lambda: exchange.socket_count(CLIENT) == 0, message="every socket closed")
    assert [owner.closed for owner in owners] == [["stopped"]] * 3
    wait_until(lambda: not _hub_threads(), message=f"the hub's threads ended ({_hub_threads()})")


def test_a_failed_connect_is_reported_once():
    hub = SocketHub(connect_timeout=2).start()
    owner = Owner()
    owner.connect(hub, f"ws://127.0.0.1:{free_port()}/")  # nothing listens there
    wait_until(lambda: owner.closed, message="the failed connect reported")
    hub.stop()
    assert len(owner.closed) == 1 and owner.closed[0].startswith("connect failed"), owner.closed


class SlowHandshakeServer:
    """Accepts websocket connections and answers each handshake only once `release` is set (a slow
    broker front end), then keeps the connection open without a word."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._serve, name="slow-handshake", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted.append(client)
            threading.Thread(target=self._answer, args=(client,), daemon=True).start()

    def _answer(self, client: socket.socket) -> None:
        request = client.recv(4096).decode()
        key = next(line.split(":", 1)[1].strip() for line in request.split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
        self.release.wait(10)  # the slow front end under test: held until the test lets it answer
        client.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())

    def open_connections(self) -> int:
        """Accepted connections the client has not closed (a closed one reads as end of file)."""
        still_open = 0
        for client in self.accepted:
            try:
                client.setblocking(False)
                still_open += client.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:  # nothing to read, and not closed
                still_open += 1
            except OSError:
                pass
        return still_open

    def close(self) -> None:
        self.listener.close()
        for client in self.accepted:
            client.close()


def test_a_connection_closed_while_it_connects_ends_once_and_leaves_no_socket():
    server = SlowHandshakeServer()
    hub = SocketHub().start()
    try:
        owners = [Owner() for _ in range(4)]
        conns = [owner.connect(hub, server.url) for owner in owners]
        wait_until(lambda: len(server.accepted) == 2, message="two handshakes under way (two connectors)")
        for conn in conns:  # two in the middle of their handshake, two waiting for a connector
            conn.close("changed my mind")
        wait_until(lambda: all(owner.closed for owner in owners), message="every connection reported closed")
        server.release.set()  # the two handshakes under way complete only now, after their close
        wait_until(lambda: server.open_connections() == 0,
                   message=f"no socket left open ({server.open_connections()} of {len(server.accepted)})")
        assert [owner.closed for owner in owners] == [["changed my mind"]] * 4
    finally:
        hub.stop()
        server.close()


def _self_signed(folder) -> tuple[str, str]:
    """A certificate for localhost and its key (files), as a test's own certificate authority."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_frames_that_arrive_together_over_tls_are_each_delivered_at_once(tmp_path, monkeypatch):
    """Dhan's socket is wss://. Frames that come in one TLS record are decrypted together, and what
    the TLS layer holds does not wake the selector: each must still be delivered without waiting
    for more bytes (here none follow, and pings are an hour apart)."""
    import ssl

    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", cert)  # websocket-client's own setting
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    frames = [f"frame {i}".encode() for i in range(20)]
    served: list[socket.socket] = []

    def serve() -> None:
        client = context.wrap_socket(listener.accept()[0], server_side=True)
        served.append(client)
        request = client.recv(4096).decode()
        key = next(line.split(":", 1)[1].strip() for line in request.split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
        client.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        client.sendall(b"".join(bytes([0x81, len(frame)]) + frame for frame in frames))  # one write, one record

    threading.Thread(target=serve, name="tls-server", daemon=True).start()
    hub = SocketHub(ping_interval=3600).start()
    owner = Owner()
    try:
        hub.connect(f"wss://localhost:{listener.getsockname()[1]}/", on_open=lambda conn: None,
                    on_frame=lambda conn, data, received_ns: owner.frames.append(data),
                    on_close=lambda conn, reason: owner.closed.append(reason))
        wait_until(lambda: len(owner.frames) == len(frames) or owner.closed, 5,
                   message=lambda: f"every frame delivered ({len(owner.frames)} of {len(frames)}, {owner.closed})")
        assert owner.frames == frames and owner.closed == []
    finally:
        hub.stop()
        listener.close()
        for client in served:
            client.close()
