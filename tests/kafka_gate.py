"""A TLS and SASL front for the local broker in tests (Tansu's own TLS and SASL cannot be set up
from a test: its users live in memory storage, which it only lets authenticated clients write).

The gate listens where the broker advertises itself, so every connection a client makes goes
through it. It terminates TLS (when given a server context) and, when users are given,
answers SaslHandshake and SaslAuthenticate itself (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, as
RFC 4616 and 5802 say) and refuses anything but ApiVersions before a client has
authenticated; then it relays bytes both ways. It records who authenticated, by client id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct
import threading
from collections import Counter

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
_HASH = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}


class _Auth:
    """One connection's SASL exchange."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.mechanism = mechanism
        self.users = users
        self.user = ""
        self._first = ""
        self._server_first = ""
        self._nonce = ""
        self._salted = b""

    def step(self, data: bytes) -> tuple[bytes | None, bool]:
        """(reply, done); reply None: authentication failed."""
        if self.mechanism == "PLAIN":
            _, user, password = data.decode().split("\0")
            self.user = user
            return (b"", True) if self.users.get(user) == password else (None, True)
        h = _HASH[self.mechanism]
        text = data.decode()
        if not self._first:  # client-first: n,,n=user,r=nonce
            self._first = text.split(",", 2)[2]
            fields = dict(p.split("=", 1) for p in self._first.split(","))
            self.user = fields["n"]
            if self.user not in self.users:
                return None, True
            salt, iterations = os.urandom(16), 4096
            self._nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
            self._salted = hashlib.pbkdf2_hmac(h().name, self.users[self.user].encode(), salt, iterations)
            self._server_first = f"r={self._nonce},s={base64.b64encode(salt).decode()},i={iterations}"
            return self._server_first.encode(), False
        without_proof, proof = text.rsplit(",p=", 1)
        if dict(p.split("=", 1) for p in without_proof.split(","))["r"] != self._nonce:
            return None, True
        message = f"{self._first},{self._server_first},{without_proof}".encode()
        stored_key = h(hmac.new(self._salted, b"Client Key", h).digest()).digest()
        signature = hmac.new(stored_key, message, h).digest()
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
        if h(client_key).digest() != stored_key:
            return None, True
        server_sig = hmac.new(hmac.new(self._salted, b"Server Key", h).digest(), message, h).digest()
        return f"v={base64.b64encode(server_sig).decode()}".encode(), True


def _string(data: bytes, at: int) -> tuple[str | None, int]:
    (n,) = struct.unpack_from(">h", data, at)
    if n < 0:
        return None, at + 2
    return data[at + 2:at + 2 + n].decode(), at + 2 + n


async def _frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _send(writer: asyncio.StreamWriter, correlation: int, body: bytes) -> None:
    payload = struct.pack(">i", correlation) + body
    writer.write(struct.pack(">i", len(payload)) + payload)


class KafkaGate:
    """Runs on its own event loop thread; `port` is where clients connect."""

    def __init__(self, upstream: tuple[str, int], port: int, users: dict[str, str] | None = None,
                 mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                 server_ssl: ssl.SSLContext | None = None) -> None:
        self.upstream = upstream
        self.port = port
        self.users = users or {}
        self.mechanisms = mechanisms if users else ()
        self.server_ssl = server_ssl
        self.authenticated: Counter[tuple[str, str]] = Counter()  # (client id, mechanism)
        self.refused: Counter[str] = Counter()  # why connections were closed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> KafkaGate:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.server_ssl)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        try:
            if self.mechanisms and not await self._authenticate(reader, writer, up_reader, up_writer):
                return
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            up_writer.close()

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> bool:
        auth: _Auth | None = None
        while True:
            frame = await _frame(reader)
            api_key, api_version, correlation = struct.unpack_from(">hhi", frame)
            client_id, at = _string(frame, 8)
            if api_key == API_VERSIONS:  # allowed before authentication, answered by the broker
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                reply = await _frame(up_reader)
                writer.write(struct.pack(">i", len(reply)) + reply)
            elif api_key == SASL_HANDSHAKE:
                mechanism, _ = _string(frame, at)
                ok = mechanism in self.mechanisms
                body = struct.pack(">hi", 0 if ok else UNSUPPORTED_SASL_MECHANISM, len(self.mechanisms))
                body += b"".join(struct.pack(">h", len(m)) + m.encode() for m in self.mechanisms)
                _send(writer, correlation, body)
                if not ok:
                    self.refused[f"mechanism {mechanism}"] += 1
                    return False
                auth = _Auth(str(mechanism), self.users)
            elif api_key == SASL_AUTHENTICATE and auth is not None:
                (n,) = struct.unpack_from(">i", frame, at)
                reply, done = auth.step(frame[at + 4:at + 4 + n])
                error = 0 if reply is not None else SASL_AUTHENTICATION_FAILED
                message = b"" if reply is not None else b"authentication failed"
                body = struct.pack(">hh", error, len(message)) + message
                body += struct.pack(">i", len(reply or b"")) + (reply or b"")
                if api_version >= 1:
                    body += struct.pack(">q", 0)
                _send(writer, correlation, body)
                await writer.drain()
                if reply is None:
                    self.refused[f"{auth.mechanism} {auth.user}"] += 1
                    return False
                if done:
                    self.authenticated[(client_id or "", auth.mechanism)] += 1
                    return True
            else:
                self.refused[f"api {api_key} before authentication"] += 1
                return False
            await writer.drain()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
