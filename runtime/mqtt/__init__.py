"""The MQTT bridge: sensor and camera messages in, predictions out (extra ``edgepack[mqtt]``).

Not imported by `import edgepack.runtime`, and importing this package does not import
paho-mqtt either: only starting a bridge does, and a missing paho is one `MqttError` naming
``pip install 'edgepack[mqtt]'``. `answer()` (payload -> result payload) needs no paho at all.

    from edgepack.runtime import load
    from edgepack.runtime.mqtt import BridgeConfig, BrokerConfig, MqttBridge, Subscription
    config = BridgeConfig(BrokerConfig.from_url("mqtt://127.0.0.1:1883"),
                          (Subscription("cameras/+/frame", "cameras/{1}/detections", qos=0),))
    with MqttBridge(config, load("detector.edgepack")):
        ...   # serving until the block ends

`edgepack mqtt` and `edgepack serve --mqtt-broker ...` are the command-line front ends.
"""
from __future__ import annotations

from typing import Any

from .config import BridgeConfig, BrokerConfig, Subscription, TlsConfig, load_config
from .errors import MqttError, PayloadError
from .results import answer, answer_or_error, jsonable
from .topics import TopicMap

__all__ = ["MqttBridge", "BridgeConfig", "BrokerConfig", "Subscription", "TlsConfig",
           "TopicMap", "load_config", "answer", "answer_or_error", "jsonable", "MqttError",
           "PayloadError"]


def __getattr__(name: str) -> Any:
    if name == "MqttBridge":      # the bridge module needs paho only when started
        from .bridge import MqttBridge
        return MqttBridge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
