"""Errors of the MQTT bridge.

`MqttError` is a set-up problem (bad broker URL, refused credentials, TLS files, paho not
installed): the CLI turns it into one line and exit code 10 (the MQTT family; 9 is the OCI
registry's). `PayloadError` is one malformed message: it goes to the error topic and the
bridge keeps serving.
"""
from __future__ import annotations

from ..errors import EdgepackError, InputError

INSTALL_HINT = "pip install 'edgepack[mqtt]'"


class MqttError(EdgepackError):
    """The bridge cannot be configured or cannot reach/log in to the broker."""

    exit_code = 10


class PayloadError(InputError):
    """One message's payload cannot be turned into model inputs (exit code 2 when raised
    to a CLI; the bridge publishes it on the error topic instead)."""


def require_paho():
    """Import paho-mqtt 2.x, or raise one `MqttError` naming the extra to install."""
    try:
        import paho.mqtt
        import paho.mqtt.client as client
    except ImportError:
        raise MqttError(f"the MQTT bridge needs paho-mqtt 2.x: {INSTALL_HINT}") from None
    major = str(getattr(paho.mqtt, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 2:
        raise MqttError(f"the MQTT bridge needs paho-mqtt 2.x, found "
                        f"{getattr(paho.mqtt, '__version__', '?')}: {INSTALL_HINT}")
    return client
