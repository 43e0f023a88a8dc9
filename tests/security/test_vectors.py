"""Test vectors of the CloudEvents verifiability extension: an independent digest written here from
the spec text, checked both ways against the plugin, and the spec's own vectors.

The spec's JSON-data cases (1, 3, 6a, 7) hash the data bytes without saying how a JSON value is
serialised, and no compact or indented form reproduces their payloads; their *signatures* still
check DSSE's PAE (ECDSA P-256 over PAE of the payload, with the spec's key). Case 5 (binary data)
fixes every byte and is reproduced exactly.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mesh.config.models import SecurityConfig
from mesh.event import Event
from mesh.security import dsse
from mesh.security.guard import Security
from mesh.security.keys import load_public
from tests.security.support import keypair

PAYLOAD_TYPE = "https://cloudevents.io/verifiability/dsse/v0.1"

# the spec's key (ECDSA over NIST P-256) and envelopes
SPEC_X = 46950820868899156662930047687818585632848591499744589407958293238635476079160
SPEC_Y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
SPEC_CASES = {
    "1": "eyJwYXlsb2FkVHlwZSI6Imh0dHBzOi8vY2xvdWRldmVudHMuaW8vdmVyaWZpYWJpbGl0eS9kc3NlL3YwLjEiLCJwYXlsb2FkIjoiNXh6NS9WdG94TkpWWWFZeG1MZUw2eEw5STZDYXY5UDNnb2g2cXlDWUdmUT0iLCJzaWduYXR1cmVzIjpbeyJrZXlpZCI6InRlc3RrZXkiLCJzaWciOiJ3WWo4YlJQWFlDSUxyeXdzUDdXR1VCd1RKc25aSFlYTUhpWEZtWWh1QkdhOU1ocDdYNHZFN1FBYkhXbytXZitjTURBYjN6dXlwRjVVbVdwZGtJUGppUT09In1dfQ==",
    "3": "eyJwYXlsb2FkVHlwZSI6Imh0dHBzOi8vY2xvdWRldmVudHMuaW8vdmVyaWZpYWJpbGl0eS9kc3NlL3YwLjEiLCJwYXlsb2FkIjoid0tDYThzcTNkeWcvMDBaaURReS9hWEFZMXRlcFFucktMYTZ4UDBZM0QvUT0iLCJzaWduYXR1cmVzIjpbeyJrZXlpZCI6InRlc3RrZXkiLCJzaWciOiJQSXhPUHF3MGFJeW9acExtdU5DTlpNS3pBNlgxWVovUXpiZVR3UzMvS3BBMjZJQzF0SU9oLzdkRFBDMWk0RW82b1dxRk1WRXJ4cEZrR0hGMnM0MHAvZz09In1dfQ==",
    "5": "eyJwYXlsb2FkVHlwZSI6Imh0dHBzOi8vY2xvdWRldmVudHMuaW8vdmVyaWZpYWJpbGl0eS9kc3NlL3YwLjEiLCJwYXlsb2FkIjoicUNTZWlaa1MraEg5V2lDbGZxNnBsZnFZTlZ5Mmt2eFdSZm9CckxFem9Eaz0iLCJzaWduYXR1cmVzIjpbeyJrZXlpZCI6InRlc3RrZXkiLCJzaWciOiJEWXdiU3V4SDRXcWFhQlZPVlU4TllJYTZXYnZDazkvdkc5aGV0d3BKNHpJNWo2am1BTGRNaHcrcVZuc211YzY2NWZqVlJGVDFRUHUvanA1Z0c0U2pzUT09In1dfQ==",
    "6a": "eyJwYXlsb2FkVHlwZSI6Imh0dHBzOi8vY2xvdWRldmVudHMuaW8vdmVyaWZpYWJpbGl0eS9kc3NlL3YwLjEiLCJwYXlsb2FkIjoiUE1nU3ZQdG9nZ0FPY3RIaDZDM1F3VC96a2ZoQUpadFJKaVJnRFBFazhnRT0iLCJzaWduYXR1cmVzIjpbeyJrZXlpZCI6InRlc3RrZXkiLCJzaWciOiJzajBwRS96OW5xalh1QTFNRFRBT29lU2FtYlVXUmhHQ2tJWFdmM2VnaEUwOUd1UzhHQVZYZWdxaStmM1hwOG90WEFudHlyNnY3Q0lOaythWms1SmpUZz09In1dfQ==",
    "7": "eyJwYXlsb2FkVHlwZSI6Imh0dHBzOi8vY2xvdWRldmVudHMuaW8vdmVyaWZpYWJpbGl0eS9kc3NlL3YwLjEiLCJwYXlsb2FkIjoib3ZhaGZKV2FLYVBWRFRzUGlJUW9Ucjl1NUpOVEFFMjFHQkg1RzVQWkQ4MD0iLCJzaWduYXR1cmVzIjpbeyJrZXlpZCI6InRlc3RrZXkiLCJzaWciOiJONkU0TFJyZGRHZGJqc0FQODVCYkpsZUo5ZnV0c2E2YTdhRWVtc1Ric29XL0lKU3F2Zmc4ZkhPcGtzbkFZcHFtRnJQWk8zeitWUERrWjNEbWpMN1FQZz09In1dfQ==",
}


# -- the independent implementation, from the spec's "Signature" section -----------------------


def h(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def spec_digest(
    *,
    id: str,
    source: str,
    type: str,
    data: bytes,
    datacontenttype: str = "",
    dataschema: str = "",
    subject: str = "",
    time: datetime | None = None,
    extensions: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> bytes:
    zulu = "" if time is None else time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    seq = b"".join(h(v.encode()) for v in (id, source, "1.0", type, datacontenttype, dataschema, subject, zulu)) + h(
        data
    )
    for name, value in extensions:
        seq += h(name.encode()) + h(value.encode())
    return h(seq)


def spec_pae(body: bytes) -> bytes:
    t = PAYLOAD_TYPE.encode()
    return b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(body)).encode() + b" " + body


def decode_envelope(material: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(base64.b64decode(material))
    return doc


# -- the spec's own vectors ---------------------------------------------------------------------


def spec_public_pem() -> str:
    key = ec.EllipticCurvePublicNumbers(SPEC_X, SPEC_Y, ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_the_spec_signatures_verify_over_our_pae(case: str) -> None:
    doc = decode_envelope(SPEC_CASES[case])
    material, sigs = dsse.read_envelope(SPEC_CASES[case])
    assert dsse.pae(PAYLOAD_TYPE, material) == spec_pae(material)
    verify = load_public(spec_public_pem(), "spec")
    [(keyid, sig)] = sigs
    assert keyid == "testkey" and doc["payloadType"] == PAYLOAD_TYPE
    assert verify(dsse.pae(PAYLOAD_TYPE, material), sig)
    assert not verify(dsse.pae(PAYLOAD_TYPE, material[:-1] + b"x"), sig)


def test_case_5_binary_data_is_reproduced_byte_for_byte() -> None:
    event = Event("example.type.binary", "example/uri", base64.b64decode("8J+koQ=="), id="1", time=None)
    event.time = None
    material, _ = dsse.read_envelope(SPEC_CASES["5"])
    assert event.datacontenttype == "application/octet-stream"
    assert dsse.digest(event) == material
    assert (
        spec_digest(
            id="1",
            source="example/uri",
            type="example.type.binary",
            datacontenttype="application/octet-stream",
            data=base64.b64decode("8J+koQ=="),
        )
        == material
    )


def test_a_spec_signed_event_verifies_through_the_plugin_with_the_spec_key() -> None:
    event = Event("example.type.binary", "example/uri", base64.b64decode("8J+koQ=="), id="1")
    event.time = None
    event.extensions = {"dssematerial": SPEC_CASES["5"]}
    trust = {"keys": {"testkey": spec_public_pem()}, "apps": {"example": ["testkey"]}}
    security = Security("me", SecurityConfig.model_validate({"trust": trust}))
    with pytest.raises(dsse.Rejected) as caught:  # every check passed up to mapping the source to an app
        security.open("t", event)
    assert caught.value.code == "wrong_source"
    assert dsse.check(event, lambda k, m, s: load_public(spec_public_pem(), k)(m, s)) == ("testkey", [])


def test_time_is_normalised_to_utc() -> None:
    zulu = datetime(2020, 6, 18, 17, 24, 53, tzinfo=UTC)
    plus2 = datetime(2020, 6, 18, 19, 24, 53, tzinfo=timezone(timedelta(hours=2)))
    a = Event("t", "/s", b"x", id="1", time=zulu)
    b = Event("t", "/s", b"x", id="1", time=plus2)
    assert dsse.digest(a) == dsse.digest(b)


# -- both ways ---------------------------------------------------------------------------------


def security_for(app: str, private: str, public: str, key_id: str) -> Security:
    conf = {"signing": {"key": private, "key_id": key_id}, "trust": {"keys": {key_id: public}, "apps": {app: [key_id]}}}
    return Security(app, SecurityConfig.model_validate(conf))


@pytest.mark.parametrize("data", [{"hello": "world", "n": 1.5, "ü": [1, 2]}, b"\x00\xffbytes", "plain text", None])
def test_what_the_plugin_signs_matches_the_independent_digest(data: object) -> None:
    private, public = keypair()
    security = security_for("orders", private, public, "orders-1")
    event = Event("shop.order", "/orders", data, subject="A1", dataschema="urn:s", extensions={"exta": "v1", "extb": 7})
    signed = security.sign(event)
    assert signed.extensions["signedextattrs"] == "exta,extb"
    doc = decode_envelope(str(signed.extensions["dssematerial"]))
    if isinstance(data, bytes):
        body = data
    elif isinstance(data, str):
        body = data.encode()
    elif data is None:
        body = b""
    else:
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    expected = spec_digest(
        id=event.id,
        source="/orders",
        type="shop.order",
        data=body,
        datacontenttype=event.datacontenttype or "",
        dataschema="urn:s",
        subject="A1",
        time=event.time,
        extensions=[("exta", "v1"), ("extb", "7")],
    )
    assert base64.b64decode(str(doc["payload"])) == expected
    [sig] = doc["signatures"]  # type: ignore[misc]
    assert sig["keyid"] == "orders-1"
    pub = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(public))
    pub.verify(base64.b64decode(sig["sig"]), spec_pae(expected))  # raises if it does not verify


def test_an_independently_signed_event_verifies_through_the_plugin() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    event = Event("shop.order", "/orders", b"payload", extensions={"exta": "v1", "extb": "not signed"})
    digest_ = spec_digest(
        id=event.id,
        source="/orders",
        type="shop.order",
        data=b"payload",
        datacontenttype="application/octet-stream",
        time=event.time,
        extensions=[("exta", "v1")],
    )
    envelope = {
        "payload": base64.b64encode(digest_).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": "k1", "sig": base64.b64encode(key.sign(spec_pae(digest_))).decode()}],
    }
    event.extensions.update(
        signedextattrs="exta", dssematerial=base64.b64encode(json.dumps(envelope).encode()).decode()
    )
    security = Security(
        "billing",
        SecurityConfig.model_validate({"trust": {"keys": {"k1": public.decode()}, "apps": {"orders": ["k1"]}}}),
    )
    view, sender = security.open("orders", event)
    assert sender == "orders"
    assert view.extensions == {"exta": "v1"}, "a verified event exposes only what was signed"
    assert view.data == b"payload"
