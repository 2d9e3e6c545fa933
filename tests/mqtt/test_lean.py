"""The bridge's cheaper paho receive path (runtime/mqtt/lean.py): the same messages as
paho's own decoder, byte for byte, through a buffered socket, for packets whole, split and
malformed; and the fallback to paho's Client on a paho version it was not tested with."""
from __future__ import annotations

import socket
import struct

import pytest

pytest.importorskip("paho.mqtt")

import paho.mqtt
import paho.mqtt.client as pm
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgepack.runtime.mqtt import lean
from edgepack.runtime.mqtt.lean import mqtt_varint

needs_tested_paho = pytest.mark.skipif(
    not lean.paho_tested(paho.mqtt.__version__),
    reason=f"the lean path is used with paho-mqtt {lean.TESTED} only")


def _str16(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def publish_packet(topic: bytes, payload: bytes, *, v5: bool, qos: int = 0, mid: int = 0,
                   dup: bool = False, retain: bool = False,
                   properties: Properties | None = None) -> bytes:
    body = _str16(topic) + (struct.pack("!H", mid) if qos else b"")
    if v5:
        body += properties.pack() if properties is not None else b"\x00"
    body += payload
    header = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    return bytes([header]) + mqtt_varint(len(body)) + body


def _props(**values) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def _client(cls: type, v5: bool) -> tuple[pm.Client, socket.socket, list]:
    """A client of class `cls` reading one end of a socketpair; returns the other end."""
    client = cls(CallbackAPIVersion.VERSION2, protocol=pm.MQTTv5 if v5 else pm.MQTTv311,
                 manual_ack=True)
    mine, theirs = socket.socketpair()
    mine.setblocking(False)
    client._sock = lean.BufferedSocket(mine) if cls is not pm.Client else mine
    got: list = []
    client.on_message = lambda c, u, m: got.append(m)
    return client, theirs, got


def _read_all(client: pm.Client, got: list, count: int) -> list:
    for _ in range(200):
        if len(got) >= count:
            break
        rc = client.loop_read()
        assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS
    return got


def _fields(message) -> tuple:
    props = message.properties
    return (message._topic, bytes(message.payload), message.qos, message.mid, message.dup,
            message.retain, None if props is None else str(props),
            None if props is None else getattr(props, "CorrelationData", None),
            None if props is None else getattr(props, "ContentType", None))


CASES = [
    (b"cam/1/frame", b"\xff\xd8jpeg" * 300, dict(qos=0)),
    (b"cam/2/frame", b"", dict(qos=1, mid=7, dup=True)),
    (b"a/b", bytes(range(256)) * 40, dict(qos=1, mid=65535, retain=True)),
    (b"caf\xc3\xa9/\xff", b"x", dict(qos=0)),     # invalid UTF-8 topic: paho raises on .topic
]


@needs_tested_paho
@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_lean_decodes_what_paho_decodes(v5):
    """Each case through paho's own Client and through LeanClient, the packets written in
    one go (framed from the buffer) and one byte at a time (paho's byte-wise read): the same
    topic bytes, payload, QoS, message id, dup/retain flags and properties."""
    packets = []
    for i, (topic, payload, flags) in enumerate(CASES):
        props = None
        if v5:
            props = _props(CorrelationData=b"corr-%d" % i, ContentType="image/jpeg") if i % 2 \
                else _props(ResponseTopic="reply/here")
        packets.append(publish_packet(topic, payload, v5=v5, properties=props, **flags))
    stream = b"".join(packets)
    runs = {}
    for name, cls, chunks in [("paho", pm.Client, [stream]),
                              ("lean", lean.client_class(), [stream]),
                              ("lean bytewise", lean.client_class(),
                               [stream[i:i + 1] for i in range(len(stream))])]:
        client, peer, got = _client(cls, v5)
        for chunk in chunks:
            peer.sendall(chunk)
            if len(chunks) > 1:
                client.loop_read()
        runs[name] = [_fields(m) for m in _read_all(client, got, len(CASES))]
        peer.close()
    assert len(runs["paho"]) == len(CASES)
    assert runs["lean"] == runs["paho"]
    assert runs["lean bytewise"] == runs["paho"]
    if v5:
        assert runs["lean"][1][7] == b"corr-1" and runs["lean"][0][8] is None


@needs_tested_paho
def test_lean_refuses_a_publish_whose_topic_overruns_the_packet():
    """A topic length past the end of the packet is a protocol error (the connection is
    dropped and re-established by the bridge), not an exception out of the network loop."""
    client, peer, got = _client(lean.client_class(), True)
    body = struct.pack("!H", 500) + b"short"
    peer.sendall(b"\x30" + mqtt_varint(len(body)) + body)
    assert client._packet_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert got == []


def test_buffered_socket_serves_small_reads_from_one_recv():
    mine, theirs = socket.socketpair()
    mine.setblocking(False)
    sock = lean.BufferedSocket(mine)
    first = b"\x30" + mqtt_varint(3) + b"abc"
    second = b"\x30" + mqtt_varint(200) + b"y" * 200
    theirs.sendall(first + second[:50])
    assert sock.packet() == (0x30, b"abc")
    assert sock.packet() is None                # the second one is not whole yet
    assert sock.pending() == 50
    assert sock.recv(1) == b"\x30" and sock.recv(2) == second[1:3]
    theirs.sendall(second[50:])
    assert sock.recv(1000) == second[3:50]      # what was buffered, then the socket again
    assert sock.recv(1000) == second[50:]
    assert sock.pending() == 0
    with pytest.raises(BlockingIOError):
        sock.recv(1)
    assert sock.fileno() == mine.fileno()       # everything else is the socket's own
    theirs.close()
    assert sock.recv(1) == b""                  # the peer closed


def test_an_untested_paho_version_gets_paho_s_own_client(monkeypatch):
    lean.client_class.cache_clear()
    try:
        monkeypatch.setattr(paho.mqtt, "__version__", "2.99.0")
        assert lean.client_class() is pm.Client
    finally:
        lean.client_class.cache_clear()
    assert lean.paho_tested("2.2.0") and not lean.paho_tested("2.1.0")


PROPERTY_SETS = [
    {},
    {"CorrelationData": b"\x00\xffbinary", "ContentType": "image/jpeg"},
    {"ResponseTopic": "reply/caf\u00e9", "MessageExpiryInterval": 60, "PayloadFormatIndicator": 1,
     "TopicAlias": 3, "SubscriptionIdentifier": 300, "UserProperty": [("k", "v"), ("a", "b")],
     "CorrelationData": b"", "ContentType": ""},
    {"UserProperty": [("only", "user")]},
]


@pytest.mark.parametrize("values", PROPERTY_SETS, ids=range(len(PROPERTY_SETS)))
def test_lean_property_reader_agrees_with_paho(values):
    raw = _props(**values).pack()
    props = lean.LazyProperties(raw)
    paho_props = Properties(PacketTypes.PUBLISH)
    paho_props.unpack(raw)
    assert lean.read_properties(raw) is not None        # the fast path was taken
    for name in ("ContentType", "ResponseTopic", "CorrelationData", "MessageExpiryInterval"):
        assert props.value(name) == getattr(paho_props, name, None), name


def test_lean_property_reader_leaves_the_unusual_to_paho():
    good = _props(ContentType="a").pack()
    repeated = bytes([good[0] * 2]) + good[1:] + good[1:]        # ContentType twice
    assert lean.read_properties(repeated) is None
    unknown = b"\x02\x7f\x00"                                      # identifier 127
    assert lean.read_properties(unknown) is None
    bad_utf8 = b"\x04\x03\x00\x01\xff"
    assert lean.read_properties(bad_utf8) is None
    assert lean.read_properties(b"\x05\x09\x00\x09ab") is None     # runs past the end


@needs_tested_paho
def test_lean_keeps_per_topic_callbacks():
    """Once a per-topic callback is added, paho's own dispatch decides (filters first)."""
    client, peer, got = _client(lean.client_class(), True)
    filtered: list = []
    client.message_callback_add("a/#", lambda c, u, m: filtered.append(m.topic))
    peer.sendall(publish_packet(b"a/b", b"1", v5=True) + publish_packet(b"c", b"2", v5=True))
    for _ in range(20):
        if filtered and got:
            break
        client.loop_read()
    assert filtered == ["a/b"] and [m.topic for m in got] == ["c"]


def _raw_client(v5: bool) -> tuple[pm.Client, socket.socket, list]:
    client, peer, got = _client(lean.client_class(), v5)
    raw: list = []
    client.raw_publish = lambda *fields: raw.append(fields)
    return client, peer, raw


@needs_tested_paho
@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_raw_publish_gets_what_on_message_gets(v5):
    """`raw_publish` (the bridge's receive path, no MQTTMessage) is handed, for every case,
    the topic bytes, payload, QoS, message id, dup flag and properties that paho's own
    Client gives `on_message`; whole packets and byte-wise reads alike, nothing reaches
    on_message meanwhile."""
    packets, want = [], []
    for i, (topic, payload, flags) in enumerate(CASES):
        props = _props(CorrelationData=b"corr-%d" % i, ContentType="image/jpeg") \
            if v5 and i % 2 else None
        packets.append(publish_packet(topic, payload, v5=v5, properties=props, **flags))
    stream = b"".join(packets)
    client, peer, got = _client(pm.Client, v5)
    peer.sendall(stream)
    for m in _read_all(client, got, len(CASES)):
        props = m.properties
        want.append((m._topic, bytes(m.payload), m.qos, m.mid, m.dup,
                     getattr(props, "CorrelationData", None) if v5 else None,
                     getattr(props, "ContentType", None) if v5 else None))
    for chunks in ([stream], [stream[i:i + 1] for i in range(len(stream))]):
        client, peer, raw = _raw_client(v5)
        for chunk in chunks:
            peer.sendall(chunk)
            client.loop_read()
        _read_all(client, raw, len(CASES))
        seen = [(t, p, q, mid, dup,
                 None if props is None else props.value("CorrelationData"),
                 None if props is None else props.value("ContentType"))
                for t, p, q, mid, dup, props in raw]
        assert seen == want
        assert all(type(t) is bytes and type(p) is bytes for t, p, *_ in raw)
        assert (raw[0][5] is None) != v5


@needs_tested_paho
def test_raw_publish_refuses_a_malformed_publish_and_leaves_qos2_to_paho():
    client, peer, raw = _raw_client(True)
    body = struct.pack("!H", 500) + b"short"
    peer.sendall(b"\x30" + mqtt_varint(len(body)) + body)
    assert client._packet_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert raw == []
    client, peer, raw = _raw_client(False)
    peer.sendall(publish_packet(b"", b"x", v5=False))        # empty topic in MQTT 3.1.1
    assert client._packet_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert raw == []
    with pytest.raises(ValueError, match="properties run past"):
        lean.split_publish(_str16(b"t") + b"\x10", 0, True)
    with pytest.raises(ValueError):
        lean.split_publish(b"\x00", 0, False)
