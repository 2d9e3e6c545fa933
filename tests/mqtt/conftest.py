"""Fixtures of the MQTT tests: real Mosquitto brokers, tiny image bundles, test clients."""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import MOSQUITTO, Broker, free_port  # noqa: E402
from mqtt_helpers import Client, make_bundle  # noqa: E402


def _broker(tmp_path_factory, **options) -> Broker:
    pytest.importorskip("paho.mqtt", reason="the MQTT tests need paho-mqtt (edgepack[mqtt])")
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    for attempt in range(3):
        # A free port can be taken by another process before mosquitto binds it (other
        # suites run beside this one): try a fresh one, a bounded number of times.
        directory = tmp_path_factory.mktemp("mosquitto")
        try:
            return Broker(directory, free_port(), **options).start()
        except RuntimeError:
            if attempt == 2:
                raise


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


@pytest.fixture(scope="session")
def image_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("mqtt-bundles") / "conv.edgepack")


@pytest.fixture(scope="session")
def image_model(image_bundle):
    from edgepack.runtime import load
    model = load(image_bundle)
    yield model
    model.close()


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
