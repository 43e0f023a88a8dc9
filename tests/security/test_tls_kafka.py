"""Kafka over TLS: Tansu behind a socat TLS front that requires a client certificate.

Tansu (the Kafka-protocol test broker) has neither TLS nor SASL: TLS is terminated by the front,
so these tests cover the client side (CA, client certificate and key, hostname check, minimum
version). SASL PLAIN/SCRAM cannot be tested against Tansu; only its config path is checked here.
"""

from __future__ import annotations

import pytest

from mesh.brokers.kafka.broker import KafkaBroker
from mesh.errors import ConfigError
from tests.security.tls_support import PASSWORD, KafkaTls, Pki, kafka_tls, pki, refused, roundtrip

__all__ = ["kafka_tls", "pki"]  # fixtures used below

pytestmark = [pytest.mark.kafka]

FAST = {"connect_timeout": 10, "partitions": 1}


async def test_mutual_tls(pki: Pki, kafka_tls: KafkaTls) -> None:
    """CA, client certificate and key: events go through the TLS front."""
    await roundtrip(KafkaBroker(kafka_tls.url, options=FAST, tls=pki.tls(min_version="TLSv1.3")))


async def test_wrong_ca(pki: Pki, kafka_tls: KafkaTls, caplog: pytest.LogCaptureFixture) -> None:
    """A CA that did not sign the front's certificate: a clear error naming kafka."""
    broker = KafkaBroker(
        kafka_tls.url, options={**FAST, "connect_timeout": 3}, tls={**pki.tls(), "ca": str(pki.wrong_ca)}
    )
    await refused(broker, caplog, name="kafka", why="certificate verify failed")


async def test_missing_client_certificate(pki: Pki, kafka_tls: KafkaTls, caplog: pytest.LogCaptureFixture) -> None:
    """The front requires a client certificate and none is given."""
    broker = KafkaBroker(kafka_tls.url, options={**FAST, "connect_timeout": 3}, tls=pki.tls(cert=False))
    await refused(broker, caplog, name="kafka", why="client certificate")


def test_sasl_settings_are_checked(pki: Pki) -> None:
    """SASL needs a user name; EXTERNAL is not a Kafka mechanism (SASL itself is not testable on Tansu)."""
    with pytest.raises(ConfigError, match=r"broker\.auth"):
        KafkaBroker("localhost:9092", auth={"password": PASSWORD})
    with pytest.raises(ConfigError, match=r"broker\.auth"):
        KafkaBroker("localhost:9092", auth={"username": "u", "mechanism": "EXTERNAL"})
    broker = KafkaBroker(
        "localhost:9092", tls=pki.tls(), auth={"username": "u", "password": PASSWORD, "mechanism": "SCRAM-SHA-512"}
    )
    config = broker.connection.client_config()
    assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert PASSWORD not in repr(broker)
