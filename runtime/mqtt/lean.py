"""A cheaper receive path for paho's `Client`, used by the bridge where it is safe.

Every message the broker sends pays paho's receive path, also the camera frames a full
``drop-oldest`` queue throws away at once. Profiled on the benchmark's tiny model (QoS 0,
MQTT 5, 1,600 messages/s), per received PUBLISH paho made about four ``recv`` system calls
(the fixed header is read one byte at a time, then the rest) and built and filled an MQTT 5
`Properties` object (two 27-entry tables, then an unpack): most of the network thread's
Python time. Each ``recv`` also releases and takes back the GIL, and while the network
thread holds it the worker waits for it after every decode, inference and publish (a GIL
convoy), so what paho spends on dropped frames is taken from the frames that are answered.

Overrides of paho internals, so tied to the paho versions they were written and tested
against (`TESTED`; any other version gets paho's own `Client`, unchanged behaviour):

- the socket paho reads is wrapped in `BufferedSocket`: one ``recv`` of up to 64 KiB
  serves the small reads of many packets. It reports what it holds through ``pending()``,
  the hook paho already uses for TLS sockets, so paho's loop does not wait in select while
  whole packets sit in the buffer;
- `_packet_read` hands a packet that is whole in the buffer to paho's dispatcher in one
  step, and `loop_read` goes on until the socket is empty (paho handles one packet per
  select);
- a PUBLISH at QoS 0 or 1 is decoded by `LeanClient._handle_publish`: topic, packet id
  and payload as paho decodes them, but the MQTT 5 properties are kept as bytes
  (`LazyProperties`): the bridge reads its three from the bytes (`read_properties`) and
  only for the messages it answers; anything else is unpacked by paho's own `Properties`;
  the message goes straight to ``on_message`` unless per-topic callbacks were added;
- `_send_publish` (every PUBLISH paho sends, also its resends after a reconnect) packs the
  packet in one join (`pack_publish`, the same bytes as paho's field-by-field bytearray,
  tests/mqtt/test_lean_publish.py) and hands it to paho's own `_packet_queue`, so queueing,
  locking, the network thread's wake-up and the write path stay paho's;
- `publish_qos0`: ``publish(qos=0)`` for a result nobody waits on (the bridge's QoS 0
  results of QoS 0 inputs): paho's checks and message id, no `MQTTMessageInfo` (a
  Condition per message), and a shared no-op in the info slot paho's write path marks.

Not done, measured: a worker writing its own results and PUBACKs instead of waking the
network thread through paho's socket pair (3 interleaved pairs, in-process, load 3.5-3.9:
QoS 0 ratio 0.39-0.55 against 0.65-0.84 without it). The network thread does that write on
the other core while the worker decodes the next frame.
"""
from __future__ import annotations

import functools
import logging
import struct
from typing import Any

from .errors import require_paho

log = logging.getLogger(__name__)

#: paho-mqtt versions (major.minor) whose private `_create_socket`, `_packet_read`,
#: `_packet_handle`, `_handle_publish`, `_handle_on_message`, `_loop_rc_handle`,
#: `_in_packet`, `_send_publish`, `_packet_queue`, `_mid_generate`,
#: `_raise_for_invalid_topic` and `_out_packet` (its ``info`` slot) the overrides here were
#: checked against.
TESTED = ("2.2",)
#: Bytes asked of the socket per read: many small packets, or a slice of a large one.
READ_SIZE = 65536
#: Whole buffered packets handled per network-loop pass beyond paho's own one (then paho's
#: loop writes, checks the keep-alive and comes back).
BURST = 64


class BufferedSocket:
    """A socket whose ``recv`` is served from one larger read of the real socket.

    Everything else (send, fileno for select, setsockopt, close, ...) is the wrapped
    socket's own. A read larger than `READ_SIZE` with nothing buffered goes straight to the
    socket, so a large payload is not copied twice."""

    __slots__ = ("_sock", "_data", "_pos")

    def __init__(self, sock: Any):
        self._sock = sock
        self._data = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        data, pos = self._data, self._pos
        if pos >= len(data):
            if size >= READ_SIZE:
                return self._sock.recv(size)
            data = self._sock.recv(READ_SIZE)   # BlockingIOError etc. reach paho as before
            if len(data) <= size:               # all of it wanted (or b"": the peer closed)
                return data
            self._data, pos = data, 0
        end = min(pos + size, len(data))
        self._pos = end
        return data[pos:end]

    def packet(self) -> tuple[int, bytes] | None:
        """(first byte, body) of the next MQTT packet when all of it is buffered (reading
        the socket once if the buffer is empty), taken out of the buffer; else None: paho's
        own byte-wise read then carries on from here, and meets and reports whatever
        stopped this one (no data yet, the peer closed, a TLS condition, a bad length)."""
        data, pos = self._data, self._pos
        if pos >= len(data):
            try:
                data = self._sock.recv(READ_SIZE)
            except Exception:  # noqa: BLE001 - paho's own recv raises it again, handled
                return None
            if not data:        # closed: paho's recv sees b"" again (EOF stays EOF)
                return None
            self._data, self._pos, pos = data, 0, 0
        try:
            length, i = _varint(data, pos + 1)
        except ValueError:      # length not all buffered yet, or malformed: paho's read
            return None
        end = i + length
        if end > len(data):
            return None
        self._pos = end
        return data[pos], data[i:end]

    def pending(self) -> int:
        """Bytes readable without the socket: buffered here, plus TLS's decrypted ones."""
        inner = getattr(self._sock, "pending", None)
        return len(self._data) - self._pos + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


#: PUBLISH properties the bridge reads, by identifier (MQTT 5 section 3.3.2.3).
_READ = {3: "ContentType", 8: "ResponseTopic", 9: "CorrelationData"}
#: The other PUBLISH properties, skipped: fixed sizes, or -1 for a Variable Byte Integer
#: (Subscription Identifier) and -2 for a UTF-8 string pair (User Property).
_SKIP = {1: 1, 2: 4, 35: 2, 11: -1, 38: -2}
_READ_NAMES = frozenset(_READ.values())


def read_properties(raw: bytes) -> dict[str, Any] | None:
    """Content Type, Response Topic and Correlation Data from PUBLISH properties' wire
    bytes (length prefix included), as paho's `Properties` gives them (str, str, bytes);
    None when anything is unusual (an unknown or repeated property, a bad length, bad
    UTF-8): then paho's own unpack decides."""
    try:
        length, pos = _varint(raw, 0)
        end = pos + length
        if end != len(raw):
            return None
        found: dict[str, Any] = {}
        while pos < end:
            ident = raw[pos]
            pos += 1
            name = _READ.get(ident)
            if name is not None:
                if name in found:
                    return None
                (size,) = _unpack_h(raw, pos)
                data = raw[pos + 2:pos + 2 + size]
                pos += 2 + size
                found[name] = data if ident == 9 else data.decode("utf-8")
                continue
            skip = _SKIP.get(ident)
            if skip is None:
                return None
            if skip == -1:
                _, pos = _varint(raw, pos)
            elif skip == -2:
                for _ in range(2):
                    (size,) = _unpack_h(raw, pos)
                    pos += 2 + size
            else:
                pos += skip
        return found if pos == end else None
    except (ValueError, struct.error, IndexError, UnicodeDecodeError):
        return None


_unpack_h = struct.Struct("!H").unpack_from


class LazyProperties:
    """MQTT 5 PUBLISH properties kept as their wire bytes until one is read: `value` reads
    the few the bridge uses straight from the bytes (`read_properties`); anything else, or
    anything unusual, goes to paho's `Properties` (same values, same attribute names)."""

    __slots__ = ("_raw", "_unpacked", "_read")

    def __init__(self, raw: bytes):
        self._raw = raw
        self._unpacked: Any = None
        self._read: dict[str, Any] | bool | None = None

    def value(self, name: str) -> Any:
        """Property `name`, or None when the message does not carry it."""
        if name in _READ_NAMES:
            if self._read is None:
                found = read_properties(self._raw)
                self._read = found if found is not None else False   # False: paho's
            if self._read is not False:
                return self._read.get(name)
        return getattr(self.unpacked(), name, None)

    def unpacked(self) -> Any:
        if self._unpacked is None:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties
            props = Properties(PacketTypes.PUBLISH)
            props.unpack(self._raw)
            self._unpacked = props
        return self._unpacked

    def __getattr__(self, name: str) -> Any:
        return getattr(self.unpacked(), name)

    def __str__(self) -> str:
        return str(self.unpacked())

    __repr__ = __str__


def split_publish(body: bytes, qos: int, v5: bool
                  ) -> tuple[bytes, int, bytes | None, bytes]:
    """(topic, packet id or 0, MQTT 5 properties with their length prefix or None,
    payload) of a PUBLISH packet's body (what follows the fixed header), as paho 2.2
    decodes them; ValueError for a packet that cannot be one."""
    try:
        (length,) = _unpack_h(body, 0)
        pos = 2 + length
        topic = body[2:pos]
        if len(topic) != length:
            raise ValueError("topic runs past the packet")
        mid = 0
        if qos:
            (mid,) = _unpack_h(body, pos)
            pos += 2
        properties = None
        if v5:
            size, start = _varint(body, pos)
            end = start + size
            if end > len(body):
                raise ValueError("properties run past the packet")
            # With their length prefix: what paho's Properties.unpack reads.
            properties = body[pos:end]
            pos = end
        elif not topic:
            raise ValueError("topic can't be empty in MQTTv3")
    except struct.error as exc:
        raise ValueError(str(exc)) from None
    return topic, mid, properties, body[pos:]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the Variable Byte Integer at `pos` (ValueError if bad)."""
    value = shift = 0
    for i in range(pos, min(pos + 4, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise ValueError("malformed Variable Byte Integer")


_pack_h = struct.Struct("!H").pack


def pack_publish(v5: bool, topic: bytes, payload: bytes, qos: int, retain: bool, dup: bool,
                 mid: int, properties: bytes | None) -> bytes:
    """A PUBLISH packet, the bytes paho 2.2's `_send_publish` builds (fixed header,
    topic, packet id at QoS > 0, MQTT 5 properties in their wire form or an empty set,
    payload), in one join instead of a bytearray grown field by field."""
    if v5:
        props = properties if properties is not None else b"\x00"
    else:
        props = b""
    remaining = 2 + len(topic) + (2 if qos else 0) + len(props) + len(payload)
    command = 0x30 | ((dup & 1) << 3) | (qos << 1) | int(retain)
    if remaining < 128:
        head = bytes((command, remaining))
    else:
        head = bytes((command,)) + mqtt_varint(remaining)
    return b"".join((head, _pack_h(len(topic)), topic, _pack_h(mid) if qos else b"", props,
                     payload))


def mqtt_varint(n: int) -> bytes:
    """MQTT's Variable Byte Integer: 7 bits per byte, low first, high bit = more follow."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Sent:
    """What paho's write path expects in a queued QoS 0 PUBLISH's ``info`` slot, for the
    bridge's lean QoS 0 publish whose outcome nobody waits for (no Condition per message)."""

    __slots__ = ()

    def _set_as_published(self) -> None:
        pass


_SENT = _Sent()


def _in_packet(command: int, packet: Any, length: int) -> dict[str, Any]:
    """paho's read state: `command` 0 is 'between packets'; else one whole packet."""
    return {"command": command, "have_remaining": 1 if command else 0,
            "remaining_count": [], "remaining_mult": 1, "remaining_length": length,
            "packet": packet, "to_process": 0, "pos": 0}


def paho_tested(version: str) -> bool:
    return ".".join(version.split(".")[:2]) in TESTED


@functools.lru_cache(maxsize=1)
def client_class() -> type:
    """`LeanClient` when the installed paho is one of `TESTED`, else paho's `Client`."""
    mqtt = require_paho()
    import paho.mqtt
    version = str(getattr(paho.mqtt, "__version__", "?"))
    if not paho_tested(version):
        log.info("paho-mqtt %s: the bridge uses paho's own receive path (its faster one is "
                 "tested with paho-mqtt %s)", version, ", ".join(f"{v}.*" for v in TESTED))
        return mqtt.Client
    from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
    from paho.mqtt.exception import MalformedPacket

    v5 = MQTTProtocolVersion.MQTTv5
    PUBLISH = 0x30

    class LeanClient(mqtt.Client):
        """paho's Client with a buffered socket and lazily unpacked PUBLISH properties."""

        _filtered = False
        #: Set by an owner that takes messages without paho's `MQTTMessage` (the
        #: bridge): called as ``raw_publish(topic, payload, qos, mid, dup, properties)``
        #: (topic as bytes, properties a `LazyProperties` or None) for every QoS 0/1
        #: PUBLISH, in place of ``on_message``: no message object, no read-state dicts,
        #: no dispatch, nothing built per message beyond the slices of `split_publish`.
        #: Under paho's callback lock, as ``on_message`` is. Not used once per-topic
        #: callbacks are added.
        raw_publish: Any = None

        def message_callback_add(self, sub: str, callback: Any) -> None:
            self._filtered = True       # paho's own dispatch from now on
            super().message_callback_add(sub, callback)

        def _deliver(self, message: Any) -> None:
            """paho's `_handle_on_message` without per-topic callbacks (none were added):
            no filter matching, no callback-table lock; the same lock around the call and
            the same handling of an exception in it."""
            on_message = self._on_message
            if on_message is None:
                return
            with self._in_callback_mutex:
                try:
                    on_message(self, self._userdata, message)
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                    if not self.suppress_exceptions:
                        raise

        def _send_publish(self, mid: int, topic: bytes, payload: bytes | bytearray = b"",
                          qos: int = 0, retain: bool = False, dup: bool = False,
                          info: Any = None, properties: Any = None) -> MQTTErrorCode:
            # paho's own checks, log line and queueing; the packet packed by pack_publish.
            if not isinstance(topic, bytes):
                raise TypeError("topic must be bytes, not str")
            if payload and not isinstance(payload, (bytes, bytearray)):
                raise TypeError("payload must be bytes if set")
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            is_v5 = self._protocol == v5
            logger = self._logger
            if self.on_log is not None or (logger is not None and logger.isEnabledFor(10)):
                self._log_publish(is_v5, mid, topic, payload, qos, retain, dup, properties)
            packet = pack_publish(is_v5, topic, bytes(payload), qos, retain, dup, mid,
                                  properties.pack() if is_v5 and properties is not None
                                  else None)
            return self._packet_queue(PUBLISH, packet, mid, qos, info)

        def _log_publish(self, is_v5: bool, mid: int, topic: bytes, payload: Any, qos: int,
                         retain: bool, dup: bool, properties: Any) -> None:
            """paho's own debug line for a sent PUBLISH."""
            if not payload:
                if is_v5:
                    self._easy_log(mqtt.MQTT_LOG_DEBUG, "Sending PUBLISH (d%d, q%d, r%d, m%d), "
                                   "'%s', properties=%s (NULL payload)",
                                   dup, qos, retain, mid, topic, properties)
                else:
                    self._easy_log(mqtt.MQTT_LOG_DEBUG, "Sending PUBLISH (d%d, q%d, r%d, m%d), "
                                   "'%s' (NULL payload)", dup, qos, retain, mid, topic)
            elif is_v5:
                self._easy_log(mqtt.MQTT_LOG_DEBUG, "Sending PUBLISH (d%d, q%d, r%d, m%d), "
                               "'%s', properties=%s, ... (%d bytes)",
                               dup, qos, retain, mid, topic, properties, len(payload))
            else:
                self._easy_log(mqtt.MQTT_LOG_DEBUG, "Sending PUBLISH (d%d, q%d, r%d, m%d), "
                               "'%s', ... (%d bytes)", dup, qos, retain, mid, topic,
                               len(payload))

        def publish_qos0(self, topic: str, payload: bytes, properties: Any = None) -> bool:
            """`publish(topic, payload, qos=0, properties=...)` for a result nobody waits
            on: the same checks, message id and packet through paho's queue and write
            path, without the `MQTTMessageInfo` (and its Condition). True when queued,
            False when not connected (paho's MQTT_ERR_NO_CONN: a QoS 0 message is lost)."""
            if self._protocol != v5 and not topic:
                raise ValueError("Invalid topic.")
            topic_bytes = topic.encode("utf-8")
            self._raise_for_invalid_topic(topic_bytes)
            if len(payload) > 268435455:
                raise ValueError("Payload too large.")
            mid = self._mid_generate()
            return self._send_publish(mid, topic_bytes, payload, 0, False, False, _SENT,
                                      properties) == MQTTErrorCode.MQTT_ERR_SUCCESS

        def _create_socket(self) -> Any:
            return BufferedSocket(super()._create_socket())

        def _packet_read(self) -> MQTTErrorCode:
            # A packet already whole in the buffer is handed to paho's dispatcher in one
            # step; anything else (a packet split across reads) takes paho's own path.
            sock = self._sock
            if self._in_packet["command"] == 0 and type(sock) is BufferedSocket:
                frame = sock.packet()
                if frame is not None:
                    return self._handle_frame(*frame)
            return super()._packet_read()

        def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
            # paho handles one packet per select() (its loop_read reads as many packets as
            # messages are in flight, usually 1). The packets already whole in the buffer
            # are handled now, up to BURST: one wake-up of the network thread (and one
            # hand-over of the GIL) per burst of messages instead of one per message.
            # A packet larger than what is buffered (a camera frame over 64 KiB) is read
            # on by paho's own byte-wise path, and then the burst goes on: all that has
            # arrived is read, so a drop-oldest queue sees (and drops) it now rather than
            # leaving a backlog in the socket.
            rc = super().loop_read(max_packets)
            sock = self._sock
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or type(sock) is not BufferedSocket:
                return rc
            for _ in range(BURST):
                if self._sock is not sock:
                    break
                if self._in_packet["command"] == 0:
                    frame = sock.packet()
                    if frame is not None:
                        rc = self._handle_frame(*frame)
                        if rc > 0:
                            return self._loop_rc_handle(rc)
                        continue
                    if not sock.pending():      # packet() found the socket empty
                        break
                rc = super()._packet_read()     # a partial packet: paho's own read
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    break
                if rc > 0:
                    return self._loop_rc_handle(rc)
            return MQTTErrorCode.MQTT_ERR_SUCCESS

        def _handle_frame(self, command: int, body: bytes) -> MQTTErrorCode:
            """What the end of paho's `_packet_read` does with a whole packet."""
            raw = self.raw_publish
            if raw is not None and command & 0xF4 == PUBLISH and not self._filtered:
                return self._raw_frame(raw, command, body)
            self._in_packet = _in_packet(command, body, len(body))
            try:
                rc = self._packet_handle()
            except MalformedPacket as exc:
                self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
                rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
            self._in_packet = _in_packet(0, bytearray(), 0)
            with self._msgtime_mutex:
                self._last_bytes_received = mqtt.time_func()
            return rc

        def _raw_frame(self, raw: Any, command: int, body: bytes) -> MQTTErrorCode:
            """A whole QoS 0/1 PUBLISH to `raw_publish`, with paho's handling of a
            malformed packet (the connection is dropped) and of an exception in the
            callback; a PUBACK only without manual acks, as `_handle_publish`."""
            qos = (command & 0x06) >> 1
            try:
                topic, mid, properties, payload = split_publish(body, qos,
                                                                self._protocol == v5)
            except ValueError as exc:
                self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: PUBLISH: %s",
                               exc)
                return MQTTErrorCode.MQTT_ERR_PROTOCOL
            with self._in_callback_mutex:
                try:
                    raw(topic, payload, qos, mid, bool(command & 0x08),
                        LazyProperties(properties) if properties is not None else None)
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                    if not self.suppress_exceptions:
                        raise
            with self._msgtime_mutex:
                self._last_bytes_received = mqtt.time_func()
            if qos == 1 and not self._manual_ack:
                return self._send_puback(mid)
            return MQTTErrorCode.MQTT_ERR_SUCCESS

        def _handle_publish(self) -> MQTTErrorCode:
            header = self._in_packet["command"]
            qos = (header & 0x06) >> 1
            if qos > 1:
                return super()._handle_publish()    # QoS 2 keeps paho's own path
            packet = bytes(self._in_packet["packet"])
            raw = self.raw_publish
            if raw is not None and not self._filtered:    # a packet paho read byte-wise
                return self._raw_frame(raw, header, packet)
            try:
                topic, mid, properties, payload = split_publish(packet, qos,
                                                                self._protocol == v5)
            except ValueError as exc:
                raise MalformedPacket(f"PUBLISH: {exc}") from None
            message = mqtt.MQTTMessage(mid=mid, topic=topic)
            message.dup = bool(header & 0x08)
            message.qos = qos
            message.retain = bool(header & 0x01)
            message.properties = (LazyProperties(properties) if properties is not None
                                  else None)
            message.payload = payload
            message.timestamp = mqtt.time_func()
            if self._filtered:
                self._handle_on_message(message)
            else:
                self._deliver(message)
            if qos == 1 and not self._manual_ack:
                return self._send_puback(mid)
            return MQTTErrorCode.MQTT_ERR_SUCCESS

    return LeanClient
