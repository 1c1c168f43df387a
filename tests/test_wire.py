"""The wire format: round trips, and a host decoder that refuses anything off-protocol."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from sandbox import wire


def roundtrip(value, limits=wire.Limits()):
    buf = io.BytesIO()
    wire.send(buf, {"ok": True}, value)
    buf.seek(0)
    return wire.receive(buf, limits)[1]


def raw_frame(header: dict, buffers: list[bytes] = ()) -> io.BytesIO:
    header = dict(header, buffers=[len(b) for b in buffers])
    raw = json.dumps(header).encode()
    return io.BytesIO(struct.pack(">I", len(raw)) + raw + b"".join(buffers))


def test_plain_values_and_arrays_round_trip() -> None:
    value = {"a": (1, 2.5, None, True, "x"), "b": [np.arange(6.0).reshape(2, 3), np.array([1, 2], dtype=np.int32)],
             "s": np.float64(3.5), "empty": np.zeros((0, 3))}
    out = roundtrip(value)
    assert out["a"] == (1, 2.5, None, True, "x")
    assert type(out["b"][0]) is np.ndarray and out["b"][0].dtype == np.float64
    np.testing.assert_array_equal(out["b"][0], value["b"][0])
    assert out["b"][1].dtype == np.int32 and out["s"] == 3.5 and out["empty"].shape == (0, 3)


def test_scalars_keep_their_shape() -> None:
    out = roundtrip((np.float64(2.5), np.array(3.0), np.array([4.0])))
    assert type(out[0]) is np.float64 and out[0] == 2.5
    assert isinstance(out[1], np.ndarray) and out[1].shape == ()
    assert out[2].shape == (1,)


def test_decoded_arrays_are_private_writable_copies() -> None:
    out = roundtrip(np.ones(4))
    out[0] = 7.0
    assert out.flags.writeable and out.flags.owndata


def test_non_contiguous_and_big_endian_arrays_arrive_native() -> None:
    a = np.arange(12.0).reshape(3, 4)[:, ::2]
    b = np.arange(3, dtype=">f8")
    out = roundtrip((a, b))
    np.testing.assert_array_equal(out[0], a)
    assert out[1].dtype == np.float64 and out[1].dtype.isnative


def test_objects_cannot_be_sent_from_the_host() -> None:
    with pytest.raises(wire.WireError):
        roundtrip(object())
    with pytest.raises(wire.WireError):
        roundtrip(np.array([object()], dtype=object))


@pytest.mark.parametrize("header,buffers,match", [
    ({"value": {"$a": 0, "dtype": "|O", "shape": [1]}}, [b"\0" * 8], "numeric"),
    ({"value": {"$a": 0, "dtype": "<f8", "shape": [3]}}, [b"\0" * 8], "does not match"),
    ({"value": {"$a": 5, "dtype": "<f8", "shape": [1]}}, [b"\0" * 8], "missing buffer"),
    ({"value": {"$a": 0, "dtype": "<f8", "shape": [-1]}}, [b"\0" * 8], "shape"),
    ({"value": {"$x": 1}}, [], "unknown"),
    ({"value": {"$d": [1, 2]}}, [], "malformed"),
    ({"value": {"$h": "1"}}, [], "handle"),
])
def test_malformed_frames_are_refused(header, buffers, match) -> None:
    with pytest.raises(wire.WireError, match=match):
        stream = raw_frame(header, buffers)
        wire.receive(stream)


def test_caps_on_size_depth_and_items() -> None:
    with pytest.raises(wire.WireError, match="cap"):
        wire.receive(io.BytesIO(struct.pack(">I", 1 << 30)))
    nested = {"$l": []}
    node = nested
    for _ in range(100):
        child = {"$l": []}
        node["$l"].append(child)
        node = child
    with pytest.raises(wire.WireError, match="deeper"):
        wire.receive(raw_frame({"value": nested}))
    with pytest.raises(wire.WireError, match="items"):
        wire.receive(raw_frame({"value": {"$l": [1] * 20}}), wire.Limits(max_items=10))
    with pytest.raises(wire.WireError, match="exceeds"):
        wire.receive(raw_frame({"value": None}, [b"\0" * 100]), wire.Limits(max_frame_bytes=10))


def test_truncated_frame_is_eof() -> None:
    stream = raw_frame({"value": {"$a": 0, "dtype": "<f8", "shape": [2]}}, [b"\0" * 16])
    data = stream.getvalue()[:-3]
    with pytest.raises(EOFError):
        wire.receive(io.BytesIO(data))
