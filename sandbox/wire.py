"""The sandbox call protocol's wire format, shared by the sandbox and the host.

A frame is a 4-byte big-endian header length, a UTF-8 JSON header, then the raw
bytes of every array the header refers to, back to back. Values are plain data:

    None, bool, int, float, str           as JSON
    list                                  {"$l": [...]}
    tuple                                 {"$t": [...]}
    dict with str keys                    {"$d": {...}}
    numpy array (and numpy scalar)        {"$a": index, "dtype": "<f8", "shape": [..], "scalar": bool}
    torch tensor (carried as an array)    the same, with "tensor": true
    handle to an object kept in sandbox   {"$h": id, "type": "ClassName"}

No pickle anywhere: decoding only ever builds the types above. The host decodes
with `Limits` caps; anything malformed raises `WireError`, which the host treats
as a wrong (or hostile) answer, never as a crash of the grader.

This module runs inside the sandbox too, so it imports nothing but the standard
library and numpy.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

HEADER = struct.Struct(">I")

# Numeric dtypes only: object, structured, string and void arrays never cross.
ALLOWED_DTYPES = frozenset(
    np.dtype(t).str
    for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "float32", "float64", "complex64", "complex128")
)


class WireError(ValueError):
    """A frame or value that does not follow the protocol."""


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """The same string, valid UTF-8: lone surrogates (which JSON can carry) become U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)


def _parse_int(digits: str) -> int:
    # JSON integers are unbounded; a 5000-digit one would raise outside WireError (or cost time).
    if len(digits) > 20:
        raise WireError("integer out of int64 range")
    value = int(digits)
    if not INT64_MIN <= value <= INT64_MAX:
        raise WireError("integer out of int64 range")
    return value


def _clean_tree(node: Any, depth: int = 0) -> Any:
    """Every string of a decoded JSON header made valid UTF-8, keys included."""
    if type(node) is str:
        return clean_text(node)
    if type(node) is list:
        return [_clean_tree(v, depth + 1) for v in node]
    if type(node) is dict:
        return {clean_text(k): _clean_tree(v, depth + 1) for k, v in node.items()}
    return node


@dataclass(frozen=True)
class Limits:
    """Caps the host applies when decoding what a sandbox sent.

    Together they bound what one reply can cost the host: each array buffer is
    used by at most one array node and decoded in place, so decoded arrays never
    exceed the bytes received (max_frame_bytes, sized per problem by the host),
    and the JSON header is capped small because parsed JSON costs more than its text.
    """

    max_header_bytes: int = 1 << 20
    max_frame_bytes: int = 512 << 20
    max_depth: int = 32
    max_items: int = 100_000
    max_ndim: int = 8
    max_str_chars: int = 1 << 20


@dataclass(frozen=True)
class Handle:
    """An object that lives in the sandbox; the host only ever holds its id."""

    id: int
    type: str = "object"

    def __repr__(self) -> str:
        return f"<{self.type} object in the sandbox>"


@dataclass(frozen=True)
class TensorArray:
    """Marks an array that should arrive in the sandbox as a torch tensor."""

    array: np.ndarray
    requires_grad: bool = False


def _is_tensor(value: Any) -> bool:
    mod = type(value).__module__
    return mod.startswith("torch") and type(value).__name__ in ("Tensor", "Parameter")


class Encoder:
    """Turns a value tree into a JSON-able header plus array buffers.

    `to_handle` is called for objects that are not plain data (sandbox side:
    it stores them and returns a Handle); the host passes None, so an
    unexpected object is an error there.
    """

    def __init__(self, to_handle: Callable[[Any], Handle] | None = None) -> None:
        self.buffers: list[bytes | memoryview] = []
        self.to_handle = to_handle

    def array(self, arr: np.ndarray, tensor: bool = False, scalar: bool = False,
              requires_grad: bool = False) -> dict[str, Any]:
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")  # not ascontiguousarray: it turns 0-d arrays into 1-d ones
        if arr.dtype.str not in ALLOWED_DTYPES and arr.dtype.newbyteorder("=").str in ALLOWED_DTYPES:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if arr.dtype.str not in ALLOWED_DTYPES:
            raise WireError(f"array of dtype {arr.dtype} cannot be sent (numeric dtypes only)")
        self.buffers.append(memoryview(arr.data).cast("B") if arr.size else b"")
        node: dict[str, Any] = {"$a": len(self.buffers) - 1, "dtype": arr.dtype.str, "shape": list(arr.shape)}
        if tensor:
            node["tensor"] = True
            if requires_grad:
                node["requires_grad"] = True
        if scalar:
            node["scalar"] = True
        return node

    def encode(self, value: Any, depth: int = 0) -> Any:
        if depth > 64:
            raise WireError("value nested too deeply")
        if value is None or type(value) in (bool, str):
            return value
        if type(value) is int:
            # JSON ints are unbounded; keep them within int64 so numpy can take them.
            if not -(1 << 63) <= value < (1 << 63):
                raise WireError("integer out of int64 range")
            return value
        if type(value) is float:
            return value
        if type(value) is list:
            return {"$l": [self.encode(v, depth + 1) for v in value]}
        if type(value) is tuple:
            return {"$t": [self.encode(v, depth + 1) for v in value]}
        if type(value) is dict and all(type(k) is str for k in value):
            return {"$d": {k: self.encode(v, depth + 1) for k, v in value.items()}}
        if type(value) is np.ndarray:
            return self.array(value)
        if isinstance(value, np.generic) and type(value).__module__ == "numpy":
            return self.array(np.asarray(value), scalar=True)
        if type(value) is TensorArray:
            return self.array(value.array, tensor=True, requires_grad=value.requires_grad)
        if type(value) is Handle:
            return {"$h": value.id, "type": value.type}
        if _is_tensor(value):
            arr = value.detach().cpu().resolve_conj().resolve_neg().numpy()
            return self.array(arr, tensor=True, scalar=value.dim() == 0)
        if self.to_handle is not None:
            handle = self.to_handle(value)
            return {"$h": handle.id, "type": handle.type}
        raise WireError(f"cannot send a value of type {type(value).__name__}")


def write_frame(stream: BinaryIO, header: dict[str, Any], buffers: list[bytes | memoryview]) -> None:
    header = dict(header, buffers=[len(b) for b in buffers])
    raw = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    stream.write(HEADER.pack(len(raw)))
    stream.write(raw)
    for buf in buffers:
        stream.write(buf)
    stream.flush()


def send(stream: BinaryIO, message: dict[str, Any], payload: Any = None,
         to_handle: Callable[[Any], Handle] | None = None) -> None:
    """Encode `payload` under message["value"] and write one frame."""
    enc = Encoder(to_handle)
    header = dict(message)
    if payload is not None or "value" not in header:
        header["value"] = enc.encode(payload)
    write_frame(stream, header, enc.buffers)


def _read_exact(stream: BinaryIO, n: int) -> bytearray:
    """Exactly n bytes, into one writable buffer (arrays are later decoded in place, without a copy)."""
    out = bytearray(n)
    view = memoryview(out)
    pos = 0
    while pos < n:
        chunk = stream.read(n - pos)
        if not chunk:
            raise EOFError("the sandbox closed the channel")
        view[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    return out


def read_frame(stream: BinaryIO, limits: Limits = Limits()) -> tuple[dict[str, Any], list[bytearray]]:
    """Read one frame; raises EOFError on a closed channel and WireError on a malformed one.

    Every string in the header comes back valid UTF-8, every integer within int64.
    """
    (size,) = HEADER.unpack(_read_exact(stream, HEADER.size))
    if size > min(limits.max_header_bytes, limits.max_frame_bytes):
        raise WireError(f"header of {size} bytes exceeds the "
                        f"{min(limits.max_header_bytes, limits.max_frame_bytes)}-byte cap")
    try:
        header = _clean_tree(json.loads(bytes(_read_exact(stream, size)), parse_int=_parse_int))
    except WireError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise WireError(f"malformed header: {str(exc)[:200]}") from None
    if type(header) is not dict:
        raise WireError("header is not an object")
    sizes = header.get("buffers", [])
    if type(sizes) is not list or not all(type(s) is int and s >= 0 for s in sizes):
        raise WireError("malformed buffer table")
    if len(sizes) > limits.max_items:
        raise WireError(f"frame has more than {limits.max_items} buffers")
    if sum(sizes) + size > limits.max_frame_bytes:
        raise WireError(f"reply of {sum(sizes) + size} bytes exceeds this problem's "
                        f"{limits.max_frame_bytes}-byte cap")
    return header, [_read_exact(stream, s) for s in sizes]


class Decoder:
    """Rebuilds a value tree from a header node, checking every cap and type."""

    def __init__(self, buffers: list[bytes] | list[bytearray], limits: Limits = Limits(),
                 from_handle: Callable[[int], Any] | None = None,
                 make_tensor: Callable[..., Any] | None = None) -> None:
        self.buffers = buffers
        self.used: set[int] = set()
        self.limits = limits
        self.items = 0
        self.from_handle = from_handle
        self.make_tensor = make_tensor

    def decode(self, node: Any, depth: int = 0) -> Any:
        self.items += 1
        if self.items > self.limits.max_items:
            raise WireError(f"value has more than {self.limits.max_items} items")
        if depth > self.limits.max_depth:
            raise WireError(f"value nested deeper than {self.limits.max_depth}")
        if node is None or type(node) in (bool, float):
            return node
        if type(node) is int:
            if not INT64_MIN <= node <= INT64_MAX:
                raise WireError("integer out of int64 range")
            return node
        if type(node) is str:
            if len(node) > self.limits.max_str_chars:
                raise WireError("string too long")
            return node  # already valid UTF-8: read_frame cleans every string of the header
        if type(node) is not dict or len(node) == 0:
            raise WireError("malformed value node")
        if "$l" in node:
            return [self.decode(v, depth + 1) for v in self._list(node["$l"])]
        if "$t" in node:
            return tuple(self.decode(v, depth + 1) for v in self._list(node["$t"]))
        if "$d" in node:
            inner = node["$d"]
            if type(inner) is not dict:
                raise WireError("malformed dict node")
            return {str(k): self.decode(v, depth + 1) for k, v in inner.items()}
        if "$a" in node:
            return self._array(node)
        if "$h" in node:
            hid, htype = node["$h"], node.get("type", "object")
            if type(hid) is not int or type(htype) is not str:
                raise WireError("malformed handle")
            if self.from_handle is not None:
                return self.from_handle(hid)
            return Handle(hid, htype[:200])
        raise WireError("unknown value node")

    @staticmethod
    def _list(items: Any) -> list[Any]:
        if type(items) is not list:
            raise WireError("malformed sequence node")
        return items

    def _array(self, node: dict[str, Any]) -> Any:
        idx, dtype, shape = node.get("$a"), node.get("dtype"), node.get("shape")
        if type(idx) is not int or not 0 <= idx < len(self.buffers):
            raise WireError("array refers to a missing buffer")
        if idx in self.used:
            # Reusing a buffer would let a small frame decode into many large arrays.
            raise WireError("two arrays refer to the same buffer")
        self.used.add(idx)
        if dtype not in ALLOWED_DTYPES:
            raise WireError(f"array dtype {dtype!r} is not a numeric dtype")
        if (
            type(shape) is not list
            or len(shape) > self.limits.max_ndim
            or not all(type(d) is int and 0 <= d <= self.limits.max_frame_bytes for d in shape)
        ):
            raise WireError("malformed array shape")
        dt = np.dtype(dtype)
        count = 1
        for d in shape:
            count *= d
        buf = self.buffers[idx]
        if count * dt.itemsize != len(buf):
            raise WireError(f"array of shape {tuple(shape)} and dtype {dt} does not match its {len(buf)} bytes")
        if type(buf) is not bytearray:
            buf = bytearray(buf)
        # Decoded in place in the buffer this node alone owns: writable, never more bytes than were received.
        try:
            arr = np.frombuffer(buf, dtype=dt, count=count).reshape(shape)
        except (ValueError, OverflowError, MemoryError) as exc:
            raise WireError(f"array of shape {tuple(shape)} cannot be built: {exc}") from None
        if dt == np.bool_:
            np.not_equal(arr.view(np.uint8), 0, out=arr)  # only 0 and 1 are valid bools
        if node.get("scalar") and arr.ndim == 0:
            arr = arr[()]
        if node.get("tensor") and self.make_tensor is not None:
            return self.make_tensor(arr, bool(node.get("requires_grad")))
        return arr


def receive(stream: BinaryIO, limits: Limits = Limits(), **decoder_options: Any) -> tuple[dict[str, Any], Any]:
    """Read one frame and decode its "value"; returns (header, value)."""
    header, buffers = read_frame(stream, limits)
    value = Decoder(buffers, limits, **decoder_options).decode(header.get("value"))
    return header, value
