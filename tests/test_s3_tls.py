"""Object storage over HTTPS with a private CA, as an in-house Ceph gateway has it: a TLS
front (tests/support/throttle.py relaying everything) before the real RGW, its certificate
signed by a CA made here. Untrusted, the destination pauses and says where the CA goes;
`destination.ca_file` or AWS_CA_BUNDLE (as the AWS CLI reads it) make it ship."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.config import from_dict
from agent.errors import DestinationDown
from agent.transport import open_transport
from tests.conftest import Site
from tests.support.s3 import RadosGateway
from tests.support.throttle import ThrottlingProxy, never
from tests.test_s3 import agent_config, call_names, record, run_agent, shipped_entries


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def private_ca(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """(the CA's certificate file, a server context for 127.0.0.1 signed by that CA)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("recsync test CA"))
        .issuer_name(_name("recsync test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, chain = folder / "ca.pem", folder / "server.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain.write_bytes(
        server.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain)
    return ca_file, context


@pytest.fixture
def tls_front(rgw: RadosGateway, tmp_path: Path) -> Iterator[tuple[ThrottlingProxy, Path]]:
    ca_file, context = private_ca(tmp_path)
    with ThrottlingProxy(rgw.endpoint.removeprefix("http://"), never, tls=context) as proxy:
        yield proxy, ca_file


def test_an_untrusted_certificate_pauses_and_says_where_the_ca_goes(
    site: Site,
    rgw: RadosGateway,
    s3_bucket: str,
    tls_front: tuple[ThrottlingProxy, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy, _ = tls_front
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    tables = agent_config(site, rgw, s3_bucket)
    tables["destination"] |= {"endpoint": proxy.endpoint}
    transport = open_transport(from_dict(tables, base=site.root).destination)
    try:
        with pytest.raises(DestinationDown) as refused:
            transport.probe()
    finally:
        transport.close()
    said = str(refused.value)
    assert "TLS certificate of 127.0.0.1" in said and "not trusted" in said, said
    assert "destination.ca_file" in said and "AWS_CA_BUNDLE" in said, said
    assert proxy.requests() == []  # nothing was sent over the connection it refused


@pytest.mark.parametrize("where", ["ca_file", "AWS_CA_BUNDLE"])
def test_a_private_ca_from_the_config_or_the_environment_ships(
    site: Site,
    rgw: RadosGateway,
    s3_bucket: str,
    tls_front: tuple[ThrottlingProxy, Path],
    where: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy, ca_file = tls_front
    names = call_names(20, 2)
    record(site, names)
    tables = agent_config(site, rgw, s3_bucket)
    tables["destination"] |= {"endpoint": proxy.endpoint}
    if where == "ca_file":
        tables["destination"]["ca_file"] = str(ca_file)
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    else:
        monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))  # run_agent's process inherits it
    site.write_config(**tables)
    done = run_agent(site, "run", "--once")
    assert done.returncode == 0, done.stderr
    client = rgw.client(s3_bucket)
    try:
        entries = shipped_entries(client)  # each sha256-checked against its object
    finally:
        client.close()
    assert sorted(e["original"] for e in entries) == [f"2024/03/15/{n}" for n in names]
    assert any(seen.method == "PUT" for seen in proxy.requests())  # through the TLS front
