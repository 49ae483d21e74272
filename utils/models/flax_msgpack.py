"""Read and write flax's msgpack checkpoints without jax, flax or the msgpack package.

`flax.serialization.to_bytes(tree)` is msgpack (https://github.com/msgpack/msgpack/blob/master/spec.md)
in which every array is an extension value: ExtType(1, msgpack((shape, dtype name, C-order bytes))),
and a numpy scalar ExtType(3, msgpack((dtype name, bytes))). `unpackb` turns such bytes back into
nested dicts of numpy arrays; `packb` writes them (the course's offline fixtures). Only what these
checkpoints use is supported: maps, arrays, strings, binary, integers, floats, nil, booleans and
extension values; anything else raises a one-line CourseError.
"""
from __future__ import annotations

import struct

import numpy as np

from utils.core import CourseError

EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3


class _Reader:
    def __init__(self, buf: bytes):
        self.buf = memoryview(buf)
        self.i = 0

    def take(self, n: int) -> memoryview:
        if self.i + n > len(self.buf):
            raise CourseError(f"truncated msgpack data (wanted {n} bytes at offset {self.i} of {len(self.buf)}): "
                              "the checkpoint file is incomplete or corrupted; download it again")
        out = self.buf[self.i:self.i + n]
        self.i += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def value(self):
        b = self.take(1)[0]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0x80 <= b <= 0x8F:
            return self.map(b & 0x0F)
        if 0x90 <= b <= 0x9F:
            return [self.value() for _ in range(b & 0x0F)]
        if 0xA0 <= b <= 0xBF:
            return bytes(self.take(b & 0x1F)).decode()
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in simple:
            return simple[b]
        sized = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}          # bin 8/16/32
        if b in sized:
            return bytes(self.take(self.unpack(sized[b])))
        ext = {0xC7: ">B", 0xC8: ">H", 0xC9: ">I"}            # ext 8/16/32
        if b in ext:
            n = self.unpack(ext[b])
            return self.ext(self.unpack(">b"), bytes(self.take(n)))
        fixext = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
        if b in fixext:
            code = self.unpack(">b")
            return self.ext(code, bytes(self.take(fixext[b])))
        numbers = {0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
                   0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
        if b in numbers:
            return self.unpack(numbers[b])
        strings = {0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}
        if b in strings:
            return bytes(self.take(self.unpack(strings[b]))).decode()
        if b in (0xDC, 0xDD):
            return [self.value() for _ in range(self.unpack(">H" if b == 0xDC else ">I"))]
        if b in (0xDE, 0xDF):
            return self.map(self.unpack(">H" if b == 0xDE else ">I"))
        raise CourseError(f"unsupported msgpack type byte 0x{b:02x} at offset {self.i - 1}: not a flax checkpoint")

    def map(self, n: int) -> dict:
        out = {}
        for _ in range(n):
            k = self.value()
            out[k] = self.value()
        return out

    @staticmethod
    def ext(code: int, data: bytes):
        if code == EXT_NDARRAY:
            shape, dtype, raw = unpackb(data)
            return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(tuple(shape)).copy()
        if code == EXT_NPSCALAR:
            dtype, raw = unpackb(data)
            return np.frombuffer(raw, dtype=np.dtype(dtype))[0]
        if code == EXT_COMPLEX:
            re_, im = unpackb(data)
            return complex(re_, im)
        raise CourseError(f"unknown msgpack extension type {code}: not a flax checkpoint")


def unpackb(data: bytes):
    """The value msgpack-encoded in `data` (flax's array extensions become numpy arrays)."""
    r = _Reader(data)
    out = r.value()
    if r.i != len(r.buf):
        raise CourseError(f"{len(r.buf) - r.i} bytes left after the msgpack value: not one flax checkpoint")
    return out


def packb(value) -> bytes:
    """msgpack bytes of nested dicts / lists / tuples of numpy arrays, numbers, strings and bytes,
    arrays as flax writes them (ExtType 1), so `flax.serialization.msgpack_restore` reads them."""
    out = bytearray()
    _pack(value, out)
    return bytes(out)


def _pack(v, out: bytearray) -> None:
    if v is None:
        out += b"\xc0"
    elif isinstance(v, (bool, np.bool_)):
        out += b"\xc3" if v else b"\xc2"
    elif isinstance(v, (int, np.integer)) and not isinstance(v, np.ndarray):
        v = int(v)
        if 0 <= v <= 0x7F:
            out += bytes([v])
        elif -32 <= v < 0:
            out += struct.pack(">b", v)
        elif v >= 0:
            out += b"\xcf" + struct.pack(">Q", v)
        else:
            out += b"\xd3" + struct.pack(">q", v)
    elif isinstance(v, (float, np.floating)) and not isinstance(v, np.ndarray):
        out += b"\xcb" + struct.pack(">d", float(v))
    elif isinstance(v, str):
        raw = v.encode()
        out += (bytes([0xA0 | len(raw)]) if len(raw) < 32 else b"\xdb" + struct.pack(">I", len(raw))) + raw
    elif isinstance(v, (bytes, bytearray)):
        out += b"\xc6" + struct.pack(">I", len(v)) + bytes(v)
    elif isinstance(v, dict):
        out += b"\xdf" + struct.pack(">I", len(v))
        for k, x in v.items():
            _pack(k, out)
            _pack(x, out)
    elif isinstance(v, (list, tuple)):
        out += b"\xdd" + struct.pack(">I", len(v))
        for x in v:
            _pack(x, out)
    elif isinstance(v, np.ndarray):
        payload = packb((list(v.shape), v.dtype.name, v.tobytes("C")))   # (ascontiguousarray makes 0-d 1-d)
        out += b"\xc9" + struct.pack(">I", len(payload)) + struct.pack(">b", EXT_NDARRAY) + payload
    else:
        raise CourseError(f"cannot write a {type(v).__name__} to a flax checkpoint")
