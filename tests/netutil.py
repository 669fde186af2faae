"""Helpers of the network tests: peer processes and a self-signed certificate."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

PEER = str(Path(__file__).with_name("net_peer.py"))


class Peer:
    """A net_peer.py process; always reaped (and its pipes closed) by close()."""

    def __init__(self, *args: str, prefix: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen([*(prefix or []), sys.executable, PEER, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        # a thread reads stdout: select() on the pipe misses a line that readline
        # already buffered with the one before it
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, out: Any) -> None:
        try:
            for text in out:
                self._lines.put(text)
        except (OSError, ValueError):   # closed by close()
            pass
        self._lines.put(None)

    def line(self, timeout: float = 20.0) -> str:
        """The next stdout line; fails the test when none comes in time."""
        try:
            out = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"peer said nothing for {timeout} s; stderr: {self.stderr()}") from None
        if out is None:
            self._lines.put(None)   # and for every later call
            self.proc.wait(5)
            raise AssertionError(f"peer exited ({self.proc.poll()}); stderr: {self.stderr()}")
        return out.strip()

    def said(self) -> str | None:
        """The next stdout line if there is one already, else None."""
        try:
            out = self._lines.get_nowait()
        except queue.Empty:
            return None
        if out is None:
            self._lines.put(None)
        return None if out is None else out.strip()

    def ready(self, timeout: float = 20.0) -> str:
        words = self.line(timeout).split()
        assert words[0] == "READY", words
        return words[1]

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]

    def kill(self, sig: int = 9) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(5)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


def self_signed(tmp: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate and key for host, made with the cryptography package."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "datacomms-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def drain(sub: Any, timeout: float = 0.5) -> list[Any]:
    """Every message until a recv times out."""
    import datacomms as dc
    out = []
    while True:
        try:
            out.append(sub.recv(timeout=timeout))
        except dc.Timeout:
            return out
