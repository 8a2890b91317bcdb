#!/usr/bin/env python3
"""An HTTPS front for a plain-HTTP server, with its own throw-away CA: k2i's TLS tests without Docker.

Generates in DIR a CA and two certificates it signs, then serves HTTPS on 127.0.0.1 (a free port) and
forwards every GET and POST to the upstream server.

Usage:
  tls_proxy.py --upstream URL --dir DIR [--require-client-cert]

  --upstream URL           the plain-HTTP base URL requests go to: a request for /a/b?q goes to URL/a/b?q
                           (e.g. http://127.0.0.1:18081/apis/ccompat/v7)
  --dir DIR                where the files are written (created if missing):
                             ca.pem                           the CA certificate
                             server.pem, server-key.pem       the server's, for 127.0.0.1 and localhost
                             client.pem, client-key.pem       a client certificate (CN k2i-test-client)
                           keys are unencrypted PKCS#8 PEM (ECDSA P-256)
  --require-client-cert    require a client certificate signed by the CA (mTLS); a handshake without one
                           or with another fails

Forwarded: the method (GET, POST, HEAD, DELETE), path, query, body and headers (not hop-by-hop ones, Host,
Content-Length or Accept-Encoding). Relayed:
the upstream's status, headers (except hop-by-hop ones, Date and Server) and body. An upstream that does not answer gives
502. Each TLS handshake runs on the connection's own thread, so a failed one cannot stall the others.

Output: one line on stdout once listening, {"url": "https://127.0.0.1:PORT"}; then it serves until killed.
Handshake failures and requests are logged to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import socket
import ssl
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    # send_response writes its own.
    "date",
    "server",
}
# Forwarded: every request header but these (the connection's own, and encodings urllib would not undo).
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "accept-encoding"}
UPSTREAM_TIMEOUT_S = 30


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "k2i tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def generate(directory: Path) -> None:
    """The CA, the server's certificate and a client certificate, all valid from a day ago for 30 days."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("k2i test CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_cert(directory / "ca.pem", ca)
    write_key(directory / "ca-key.pem", ca_key)

    def leaf(common_name: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf(
        "127.0.0.1",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    write_cert(directory / "server.pem", server)
    write_key(directory / "server-key.pem", server_key)
    client, client_key = leaf("k2i-test-client", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    write_cert(directory / "client.pem", client)
    write_key(directory / "client-key.pem", client_key)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "TlsServer"

    def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
        self.forward()

    def do_POST(self) -> None:  # noqa: N802
        self.forward()

    def do_HEAD(self) -> None:  # noqa: N802 (the Iceberg REST catalog's "exists" checks)
        self.forward()

    def do_DELETE(self) -> None:  # noqa: N802
        self.forward()

    def forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        request = urllib.request.Request(self.server.upstream + self.path, data=body, method=self.command)
        for header, value in self.headers.items():
            if header.lower() not in NOT_FORWARDED:
                request.add_header(header, value)
        try:
            with self.server.opener.open(request, timeout=UPSTREAM_TIMEOUT_S) as response:
                self.relay(response.status, response.headers.items(), response.read())
        except urllib.error.HTTPError as e:
            self.relay(e.code, e.headers.items(), e.read())
        except (urllib.error.URLError, OSError) as e:
            self.relay(502, [("Content-Type", "text/plain")], f"upstream unreachable: {e}\n".encode())

    def relay(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the http.server signature)
        sys.stderr.write(f"tls_proxy: {self.address_string()} {format % args}\n")


class TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.upstream = upstream.rstrip("/")
        self.context = context
        # Never through an HTTP(S)_PROXY of the environment: the upstream is local.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def finish_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        # On the connection's own thread (ThreadingMixIn), so a slow or failed handshake stalls no other.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            sys.stderr.write(f"tls_proxy: {client_address[0]} TLS handshake failed: {e}\n")
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--require-client-cert", action="store_true")
    args = parser.parse_args()

    generate(args.dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.dir / "server.pem", args.dir / "server-key.pem")
    if args.require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=args.dir / "ca.pem")
    server = TlsServer(args.upstream, context)
    port = server.server_address[1]
    print(json.dumps({"url": f"https://127.0.0.1:{port}"}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
