"""Fixtures of the MQTT tests: real Mosquitto brokers, tiny image bundles, test clients."""
from __future__ import annotations

import io
import json
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import MOSQUITTO, Broker, free_port  # noqa: E402

pytest.importorskip("paho.mqtt", reason="the MQTT tests need paho-mqtt (edgepack[mqtt])")
if not Path(MOSQUITTO).exists():
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

PREPROCESS = {"x": [{"op": "resize", "size": [8, 8]}, {"op": "scale", "factor": 1 / 255},
                    {"op": "layout", "from": "HWC", "to": "NCHW"}]}
POSTPROCESS = {"logits": [{"op": "softmax"}, {"op": "topk", "k": 2}]}
LABELS = ["cat", "dog", "bird", "fish"]


def _broker(tmp_path_factory, **options) -> Broker:
    directory = tmp_path_factory.mktemp("mosquitto")
    return Broker(directory, free_port(), **options).start()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A plain, anonymous broker shared by the tests (each test uses its own topics)."""
    b = _broker(tmp_path_factory)
    yield b
    b.stop()


@pytest.fixture()
def own_broker(tmp_path_factory):
    """A broker for one test alone (the fault test kills and restarts it)."""
    b = _broker(tmp_path_factory)
    yield b
    b.stop()


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory):
    """TLS (CA + server certificate made here) and a password file; no anonymous logins."""
    b = _broker(tmp_path_factory, tls=True, users={"camera": "s3cret-pw"})
    yield b
    b.stop()


@pytest.fixture()
def topic():
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


def make_bundle(path: Path, seed: int = 0, version: str = "1") -> Path:
    import models
    from edgepack.runtime import pack_bundle
    return pack_bundle(path, models.onnx_conv_classifier(seed=seed), name="conv", version=version,
                       labels=LABELS, preprocess=PREPROCESS, postprocess=POSTPROCESS)


@pytest.fixture(scope="session")
def image_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("mqtt-bundles") / "conv.edgepack")


@pytest.fixture(scope="session")
def image_model(image_bundle):
    from edgepack.runtime import load
    model = load(image_bundle)
    yield model
    model.close()


def jpeg_bytes(seed: int, size: int = 12) -> bytes:
    from PIL import Image
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bytes(seed: int, size: int = 12) -> bytes:
    from PIL import Image
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


class Client:
    """A plain paho client for the test side: publish, and collect what arrives."""

    def __init__(self, broker: Broker, client_id: str | None = None, persistent: bool = False,
                 **login):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        if login:
            self.client.username_pw_set(login["username"], login["password"])
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.ca_file))
        self.messages: list = []
        self._lock = threading.Condition()
        self.client.on_message = self._on_message
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.on_disconnect = lambda *a: self._connected.clear()
        self.persistent = persistent
        self.broker = broker
        self._subs: list[tuple[str, int]] = []
        self.client.on_connect = self._on_connect
        self._connect()

    def _connect(self):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600 if self.persistent else 0
        self.client.connect("127.0.0.1", self.broker.port, 30, clean_start=not self.persistent,
                            properties=props)
        self.client.loop_start()
        assert self._connected.wait(10), "test client could not connect"

    def _on_connect(self, client, userdata, flags, reason, properties):
        if not reason.is_failure:
            for sub in self._subs:
                client.subscribe(*sub)
            self._connected.set()

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append(msg)
            self._lock.notify_all()

    def subscribe(self, topic: str, qos: int = 1) -> "Client":
        self._subs.append((topic, qos))
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos)
        assert done.wait(10), f"subscription to {topic} not acknowledged"
        return self

    def publish(self, topic: str, payload: bytes, qos: int = 1, correlation: bytes | None = None,
                content_type: str | None = None, wait: bool = False):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            props.CorrelationData = correlation
        if content_type is not None:
            props.ContentType = content_type
        info = self.client.publish(topic, payload, qos=qos, properties=props)
        if wait:
            info.wait_for_publish(10)
        return info

    def wait_for(self, count: int, timeout: float = 30.0, topic: str | None = None) -> list:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [m for m in self.messages if topic is None or m.topic == topic]
                if len(got) >= count or time.monotonic() >= deadline:
                    return got
                self._lock.wait(min(0.2, max(0.0, deadline - time.monotonic())))

    def json(self, topic: str | None = None) -> list[dict]:
        with self._lock:
            return [json.loads(m.payload) for m in self.messages
                    if topic is None or m.topic == topic]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def clients():
    """Make test clients; all are disconnected at the end."""
    made: list[Client] = []

    def make(broker: Broker, **options) -> Client:
        c = Client(broker, **options)
        made.append(c)
        return c
    yield make
    for c in made:
        try:
            c.close()
        except Exception:
            pass


def bridge_config(broker: Broker, subscriptions, **options):
    from edgepack.runtime.mqtt import BridgeConfig, BrokerConfig
    broker_options = options.pop("broker_options", {})
    if broker.tls:
        from edgepack.runtime.mqtt import TlsConfig
        broker_options.setdefault("tls", TlsConfig(ca_file=str(broker.ca_file)))
    broker_options.setdefault("reconnect_min", 0.2)
    broker_options.setdefault("reconnect_max", 2.0)
    broker_options.setdefault("client_id", f"bridge-{uuid.uuid4().hex[:8]}")
    return BridgeConfig(BrokerConfig.from_url(broker.url, **broker_options),
                        tuple(subscriptions), **options)
