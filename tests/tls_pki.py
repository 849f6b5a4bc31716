"""A test PKI made with cryptography: a CA, a host certificate (127.0.0.1 and acquirer.test), a
client certificate, and a CA nobody trusts. Files in a pytest temp folder; keys 0600."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    server_sha256: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey, *,
          ca: bool = False, san: list[x509.GeneralName] | None = None,
          usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False),
                            critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path) -> Pki:
    """Make the PKI in folder ``d``."""
    import ipaddress

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("posemu test CA", ca_key, "posemu test CA", ca_key, ca=True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("someone else's CA", other_key, "someone else's CA", other_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("acquirer.test", srv_key, "posemu test CA", ca_key,
                san=[x509.DNSName("acquirer.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                usage=ExtendedKeyUsageOID.SERVER_AUTH)
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = _cert("POSEMU01", cli_key, "posemu test CA", ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)

    def pem(name: str, data: bytes, mode: int = 0o644) -> Path:
        p = d / name
        p.write_bytes(data)
        p.chmod(mode)
        return p

    def key_pem(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    enc = serialization.Encoding.PEM
    return Pki(pem("ca.pem", ca.public_bytes(enc)), pem("server.pem", srv.public_bytes(enc)),
               pem("server.key", key_pem(srv_key), 0o600), pem("client.pem", cli.public_bytes(enc)),
               pem("client.key", key_pem(cli_key), 0o600), pem("other-ca.pem", other.public_bytes(enc)),
               srv.fingerprint(hashes.SHA256()).hex())
