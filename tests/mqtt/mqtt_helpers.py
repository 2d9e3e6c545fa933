"""Helpers of the MQTT tests (imported by name: a module named `conftest` would collide
with the other test folders' conftest.py in a full run): tiny bundles, images, a test-side
paho client, bridge configs pointing at a fixture broker."""
from __future__ import annotations

import io
import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from mqtt_broker import Broker

PREPROCESS = {"x": [{"op": "resize", "size": [8, 8]}, {"op": "scale", "factor": 1 / 255},
                    {"op": "layout", "from": "HWC", "to": "NCHW"}]}


POSTPROCESS = {"logits": [{"op": "softmax"}, {"op": "topk", "k": 2}]}


LABELS = ["cat", "dog", "bird", "fish"]


def make_bundle(path: Path, seed: int = 0, version: str = "1") -> Path:
    import models
    from edgepack.runtime import pack_bundle
    return pack_bundle(path, models.onnx_conv_classifier(seed=seed), name="conv", version=version,
                       labels=LABELS, preprocess=PREPROCESS, postprocess=POSTPROCESS)


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
        """At least `count` messages (on `topic`), or what arrived within `timeout` s."""
        def mine(messages):
            return [m for m in messages if topic is None or m.topic == topic]
        return mine(self.wait_for_all(lambda messages: len(mine(messages)) >= count, timeout))

    def wait_until(self, predicate, timeout: float = 30.0) -> list:
        """Wait (bounded) until some received message satisfies `predicate`."""
        return self.wait_for_all(lambda messages: any(predicate(m) for m in messages), timeout)

    def wait_for_all(self, predicate, timeout: float = 30.0) -> list:
        """Wait (bounded, woken by each arrival) until `predicate(all messages so far)`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return list(self.messages)

    def json(self, topic: str | None = None) -> list[dict]:
        with self._lock:
            return [json.loads(m.payload) for m in self.messages
                    if topic is None or m.topic == topic]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


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


def expected(model, payload: bytes) -> dict:
    """What the bridge must answer for `payload`: in-process predict, made JSON-safe."""
    from edgepack.runtime.mqtt.codecs import decode_image
    from edgepack.runtime.mqtt.results import jsonable, unbatch
    return {k: jsonable(unbatch(v)) for k, v in model.predict(decode_image(payload)).items()}


def make_stream_bundle(path: Path, window: int = 160) -> Path:
    """A streaming "audio" bundle: input [1, window] + state [1, 1] -> total = state +
    sum(input) (carried as the state), over windows of `window` samples at 16 kHz."""
    import onnx
    from onnx import TensorProto, helper

    from edgepack.runtime import pack_bundle
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["input"], ["sum"], keepdims=1),
         helper.make_node("Add", ["state", "sum"], ["total"]),
         helper.make_node("Identity", ["total"], ["stateN"])], "acc",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, window]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return pack_bundle(path, model.SerializeToString(), name="acc",
                       stream={"rate": 16000, "window": window, "hop": window,
                               "state": [{"input": "state", "output": "stateN", "init": 0.0}]},
                       examples={"input": {"shape": [1, window]}})
