"""Certificates and SuperNode keys for a Flower federation that crosses a real network.

Flower's SuperLink speaks TLS when given a certificate (``--ssl-certfile``, ``--ssl-keyfile``,
``--ssl-ca-certfile``) and, with ``--enable-supernode-auth``, admits only SuperNodes whose public
key the operator registered (``flwr supernode register KEY.pub``); each SuperNode proves itself by
signing with its private key (``--auth-supernode-private-key``) and checks the SuperLink's
certificate against the CA (``--root-certificates``). This module makes those files with the
``cryptography`` package (Flower's own dependency):

    python -m craftlib.companions.federated.flower_keys superlink --out keys --host 192.168.1.10   #
    on the server: CA + certificate python -m craftlib.companions.federated.flower_keys site --out
    site0                           # on each site: site0 + site0.pub

A site's private key never leaves the site: only ``site0.pub`` travels to the instructor, only
``ca.crt`` to the sites. The CA's own private key is not kept: to add a host, make a new CA and hand
out its ``ca.crt`` again. docs/SCALE.md walks through the whole multi-site setup.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = (
    "127.0.0.1",
    "localhost",
)  # the Control API (flwr run, flwr supernode register) stays on the server


def _write_new(path: Path, data: bytes, private: bool) -> Path:
    """Write ``data`` to a file that must not exist yet (a key is never overwritten), atomically;
    0600 if private."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if not private:
            os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)  # fails if the name exists: no race, no clobbering
        except FileExistsError:
            raise FileExistsError(f"{path} exists; remove it first to make a new one") from None
    finally:
        os.unlink(tmp)
    return path


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "craftlib workshop"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def write_certificates(
    out: str | Path, hosts: list[str] | tuple[str, ...] = (), days: int = 30
) -> dict[str, Path]:
    """A private CA (``ca.crt``) and the SuperLink's certificate and key (``server.pem``,
    ``server.key``).

    The certificate is valid for ``hosts`` (IP addresses or DNS names the sites dial) plus 127.0.0.1
    and localhost, for ``days`` days. Returns the three paths. Refuses to overwrite existing files.
    """
    out = Path(out)
    if clash := [
        str(out / n) for n in ("ca.crt", "server.pem", "server.key") if (out / n).exists()
    ]:
        raise FileExistsError(f"{', '.join(clash)} exist; remove them first to make new ones")
    names = list(dict.fromkeys([*hosts, *LOOPBACK]))
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("craftlib workshop CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return {
        "ca": _write_new(out / "ca.crt", ca.public_bytes(pem), private=False),
        "certificate": _write_new(out / "server.pem", cert.public_bytes(pem), private=False),
        "key": _write_new(
            out / "server.key",
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            private=True,
        ),
    }


def write_site_key(path: str | Path) -> tuple[Path, Path]:
    """A SuperNode's EC P-384 key pair in OpenSSH format (what Flower reads): ``path`` (0600) and
    ``path.pub``."""
    path = Path(path)
    key = ec.generate_private_key(ec.SECP384R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return (
        _write_new(path, private, private=True),
        _write_new(path.with_name(path.name + ".pub"), public + b"\n", private=False),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m craftlib.companions.federated.flower_keys",
        description=__doc__.split("\n\n")[0],
    )
    sub = ap.add_subparsers(dest="what", required=True)
    link = sub.add_parser(
        "superlink", help="the CA and the SuperLink's certificate (on the server)"
    )
    link.add_argument("--out", required=True, help="folder for ca.crt, server.pem, server.key")
    link.add_argument(
        "--host",
        action="append",
        default=[],
        help="address the sites dial (IP or DNS name; repeat for several); 127.0.0.1 is always "
        "added",
    )
    link.add_argument("--days", type=int, default=30, help="validity in days (default 30)")
    site = sub.add_parser("site", help="a SuperNode's key pair (on the site)")
    site.add_argument(
        "--out",
        required=True,
        help="private key path; the public key is written beside it as OUT.pub",
    )
    args = ap.parse_args(argv)
    if args.what == "superlink":
        if args.days < 1:
            ap.error(f"--days must be >= 1, got {args.days}")
        try:
            written = write_certificates(args.out, args.host, args.days)
        except FileExistsError as err:
            ap.error(str(err))
        print(
            f"wrote {', '.join(str(p) for p in written.values())}; give the sites {written['ca']} "
            f"only"
        )
    else:
        try:
            private, public = write_site_key(args.out)
        except FileExistsError as err:
            ap.error(str(err))
        print(f"wrote {private} (keep it here) and {public} (send it to the instructor)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
