"""A tiny, read-only reader for the parts of a ``.tflite`` flatbuffer that checks need.

Why not tensorflow or the ``flatbuffers`` package: ``edgepack check`` must run on a device or a
light workstation without either. The TFLite schema (``tensorflow/lite/schema/schema.fbs``) is
stable by field *index*, which is all a flatbuffer reader needs:

- Model: 1 operator_codes, 2 subgraphs, 4 buffers
- OperatorCode: 0 deprecated_builtin_code (int8), 1 custom_code, 2 version (default 1),
  3 builtin_code (int32, used when the deprecated byte is the 127 placeholder)
- SubGraph: 0 tensors, 1 inputs, 2 outputs, 3 operators
- Tensor: 0 shape, 1 type, 2 buffer, 3 name, 4 quantization
- QuantizationParameters: 2 scale, 3 zero_point, 6 quantized_dimension
- Operator: 0 opcode_index, 1 inputs, 2 outputs
- Buffer: 0 data, 1 offset, 2 size (offset/size: models > 2 GB keep data after the flatbuffer)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from edgepack.devices.tflite_limits import BUILTIN_NAMES
from edgepack.runtime.errors import DeviceError

# Indices into TensorType; only the names matter to the checks.
TENSOR_TYPES = ("float32", "float16", "int32", "uint8", "int64", "string", "bool", "int16",
                "complex64", "int8", "float64", "complex128", "uint64", "resource", "variant",
                "uint32", "uint16", "int4", "bfloat16")
_ITEMSIZE = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1,
             "int16": 2, "complex64": 8, "int8": 1, "float64": 8, "complex128": 16,
             "uint64": 8, "uint32": 4, "uint16": 2, "int4": 1, "bfloat16": 2}
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127


@dataclass(frozen=True)
class OpCode:
    """One entry of Model.operator_codes: the op (by name) and its version."""

    name: str          # builtin name such as "FULLY_CONNECTED", or "CUSTOM:<code>"
    builtin_code: int  # -1 for custom ops
    version: int


@dataclass(frozen=True)
class TensorInfo:
    """The parts of a Tensor the checks read."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    has_data: bool          # a constant (weights) rather than an activation
    scales: int             # number of quantization scales: >1 means per-channel

    def nbytes(self, dynamic_dim: int = 1) -> int:
        """Size in bytes with dynamic (-1) dimensions replaced by `dynamic_dim`."""
        n = 1
        for d in self.shape:
            n *= dynamic_dim if d < 0 else d
        return n * _ITEMSIZE.get(self.dtype, 4)


@dataclass(frozen=True)
class OperatorInfo:
    """One operator of the graph: its op code and input tensor indices."""

    opcode: OpCode
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TFLiteModelInfo:
    """What `read_tflite` returns: op codes, tensors and operators of subgraph 0."""

    opcodes: tuple[OpCode, ...]
    tensors: tuple[TensorInfo, ...]
    operators: tuple[OperatorInfo, ...]
    subgraphs: int


class _Table:
    """A flatbuffer table at absolute position `pos` of `buf`."""

    __slots__ = ("buf", "pos", "_vt", "_vt_len")

    def __init__(self, buf: bytes, pos: int):
        self.buf = buf
        self.pos = pos
        self._vt = pos - _i32(buf, pos)
        if not 0 <= self._vt < len(buf) - 4:
            raise struct.error(f"vtable offset {self._vt} outside the buffer")
        self._vt_len = _u16(buf, self._vt)

    def _field(self, index: int) -> int:
        entry = 4 + 2 * index
        if entry >= self._vt_len:
            return 0
        off = _u16(self.buf, self._vt + entry)
        return self.pos + off if off else 0

    def scalar(self, index: int, fmt: str, default):
        loc = self._field(index)
        return struct.unpack_from("<" + fmt, self.buf, loc)[0] if loc else default

    def _target(self, index: int) -> int:
        loc = self._field(index)
        return loc + _u32(self.buf, loc) if loc else 0

    def _vector(self, index: int, itemsize: int) -> tuple[int, int]:
        """(start of elements, count) of a vector field; bounds-checked so a corrupt length
        cannot make the reader loop over gigabytes."""
        t = self._target(index)
        if not t:
            return 0, 0
        n = _u32(self.buf, t)
        if t + 4 + n * itemsize > len(self.buf):
            raise struct.error(f"vector of {n} items at {t} runs past the end of the file")
        return t + 4, n

    def table(self, index: int) -> "_Table | None":
        t = self._target(index)
        return _Table(self.buf, t) if t else None

    def string(self, index: int) -> str | None:
        t = self._target(index)
        if not t:
            return None
        n = _u32(self.buf, t)
        return self.buf[t + 4:t + 4 + n].decode("utf-8", "replace")

    def vector_len(self, index: int, itemsize: int = 1) -> int:
        return self._vector(index, itemsize)[1]

    def scalars(self, index: int, fmt: str) -> tuple:
        start, n = self._vector(index, struct.calcsize("<" + fmt))
        return struct.unpack_from(f"<{n}{fmt}", self.buf, start) if n else ()

    def tables(self, index: int) -> list["_Table"]:
        start, n = self._vector(index, 4)
        return [_Table(self.buf, start + 4 * i + _u32(self.buf, start + 4 * i))
                for i in range(n)]


def _u16(b: bytes, p: int) -> int:
    return struct.unpack_from("<H", b, p)[0]


def _u32(b: bytes, p: int) -> int:
    return struct.unpack_from("<I", b, p)[0]


def _i32(b: bytes, p: int) -> int:
    return struct.unpack_from("<i", b, p)[0]


def _op_name(code: int) -> str:
    return BUILTIN_NAMES[code] if 0 <= code < len(BUILTIN_NAMES) else f"BUILTIN_{code}"


def _read_opcode(t: _Table) -> OpCode:
    deprecated = t.scalar(0, "b", 0)
    code = t.scalar(3, "i", 0)
    # Writers since TF 2.4 fill both fields; old ones only the byte. The larger is the truth,
    # except the 127 placeholder which means "look at builtin_code".
    if deprecated != _PLACEHOLDER_FOR_GREATER_OP_CODES:
        code = max(code, deprecated)
    version = t.scalar(2, "i", 1)
    if code == 32:  # CUSTOM
        return OpCode(f"CUSTOM:{t.string(1) or '?'}", -1, version)
    return OpCode(_op_name(code), code, version)


def _read_tensor(t: _Table, buffers: list[_Table]) -> TensorInfo:
    type_index = t.scalar(1, "b", 0)
    dtype = TENSOR_TYPES[type_index] if 0 <= type_index < len(TENSOR_TYPES) else f"type{type_index}"
    buffer_index = t.scalar(2, "I", 0)
    has_data = False
    if 0 < buffer_index < len(buffers):
        b = buffers[buffer_index]
        has_data = b.vector_len(0) > 0 or b.scalar(2, "Q", 0) > 0
    q = t.table(4)
    scales = q.vector_len(2, 4) if q is not None else 0
    return TensorInfo(t.string(3) or "", dtype, tuple(t.scalars(0, "i")), has_data, scales)


def read_tflite(data: bytes) -> TFLiteModelInfo:
    """Parse op codes, tensors and operators of a TFLite model without tensorflow.

    Raises DeviceError when the bytes are not a TFLite flatbuffer (wrong identifier, or
    offsets that point outside the file).
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise DeviceError("model is not a TFLite flatbuffer (missing 'TFL3' identifier): "
                          "re-export it with the TFLite converter")
    try:
        model = _Table(data, _u32(data, 0))
        opcodes = tuple(_read_opcode(t) for t in model.tables(1))
        buffers = model.tables(4)
        subgraphs = model.tables(2)
        tensors: tuple[TensorInfo, ...] = ()
        operators: tuple[OperatorInfo, ...] = ()
        if subgraphs:
            sg = subgraphs[0]
            tensors = tuple(_read_tensor(t, buffers) for t in sg.tables(0))
            ops = []
            for o in sg.tables(3):
                index = o.scalar(0, "I", 0)
                if index >= len(opcodes):
                    raise DeviceError(f"operator refers to op code {index}, model has "
                                      f"{len(opcodes)}: the .tflite file is corrupt")
                ops.append(OperatorInfo(opcodes[index], tuple(o.scalars(1, "i")),
                                        tuple(o.scalars(2, "i"))))
            operators = tuple(ops)
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise DeviceError(f"TFLite flatbuffer is truncated or corrupt ({e}): "
                          "re-export the model") from e
    return TFLiteModelInfo(opcodes, tensors, operators, len(subgraphs))
