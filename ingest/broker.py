"""An MQTT broker's address and a paho-mqtt client configured from the settings: protocol 5 or
3.1.1, user and password, TLS for mqtts:// (with a CA file), and the project's reconnect backoff.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.buffered_client import BufferedClient
from timescale.reconnect import FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS
from wattwatch.errors import WattwatchError
from wattwatch.settings import Settings

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
KEEPALIVE_SECONDS = 30
# A persistent MQTT 5 session outlives the connection by this long (the maximum: for ever).
SESSION_EXPIRY_SECONDS = 0xFFFFFFFF


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Broker:
        """mqtt://host[:port] or mqtts://host[:port]; credentials belong in the settings."""
        example = "expected mqtt://host:1883 or mqtts://host:8883"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise WattwatchError(f"broker URL: the port is not a number from 0 to 65535; {example}") from None
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise WattwatchError(f"broker URL: {example}, got {url!r}")
        if "@" in parts.netloc:  # never echo it: it may hold a password
            raise WattwatchError("broker URL: put the user and password in WATTWATCH_MQTT_USERNAME "
                                 f"and WATTWATCH_MQTT_PASSWORD, not in the URL; {example}")
        if parts.path not in ("", "/") or parts.query:
            raise WattwatchError(f"broker URL: {example} (no path or query), got {url!r}")
        return cls(parts.hostname, port or DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts")

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class Client(BufferedClient):
    """A client that keeps why its last connection attempt failed: paho's on_connect_fail is not
    told, and a certificate that does not verify will not verify on a retry either."""

    connect_error: OSError | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            result = super().reconnect()
        except OSError as exc:
            self.connect_error = exc
            raise
        self.connect_error = None
        return result


def untrusted_certificate(client: Client, broker: Broker) -> str | None:
    """Why `client`'s last connection attempt failed, when the broker's certificate did not
    verify (an error no retry cures); else None."""
    error = client.connect_error
    if not isinstance(error, ssl.SSLCertVerificationError):
        return None
    return (f"the broker {broker} presented a certificate that does not verify "
            f"({error.verify_message}): set WATTWATCH_MQTT_CA_FILE to the CA that signed it")


def broker_url(given: str | None, settings: Settings) -> Broker:
    url = given or settings.mqtt_url
    if not url:
        raise WattwatchError("no broker: pass --broker mqtt://host:1883 or set WATTWATCH_MQTT_URL")
    return Broker.parse(url)


def make_client(settings: Settings, broker: Broker, client_id: str, *,
                manual_ack: bool = False, persistent: bool = False) -> Client:
    """A client that is not yet connected (see connect_async); `persistent`: the broker keeps its
    session (subscriptions and unacknowledged QoS 1 messages) while it is away."""
    v5 = settings.mqtt_protocol == "5"
    client = Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                    clean_session=None if v5 else not persistent, manual_ack=manual_ack)
    if settings.mqtt_username:
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        client.username_pw_set(settings.mqtt_username, password)
    if broker.tls:
        try:
            client.tls_set(ca_certs=settings.mqtt_ca_file or None)
        except (OSError, ssl.SSLError) as exc:  # a missing file, or no certificate in it
            raise WattwatchError(f"WATTWATCH_MQTT_CA_FILE {settings.mqtt_ca_file}: cannot load "
                                 f"CA certificates from it ({exc})") from None
    client.reconnect_delay_set(FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS)
    return client


def connect_async(client: mqtt.Client, broker: Broker, persistent: bool = False) -> None:
    """Start connecting (the network loop connects, and reconnects with backoff)."""
    if client.protocol == mqtt.MQTTv5:
        properties = Properties(PacketTypes.CONNECT)
        if persistent:
            properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
        client.connect_async(broker.host, broker.port, KEEPALIVE_SECONDS,
                             clean_start=not persistent, properties=properties)
    else:
        client.connect_async(broker.host, broker.port, KEEPALIVE_SECONDS)
