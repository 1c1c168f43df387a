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


def test_decoded_arrays_are_private_writable_and_no_bigger_than_received() -> None:
    out = roundtrip((np.ones(4), np.zeros(3)))
    out[0][0] = 7.0
    assert out[0].flags.writeable and out[0][0] == 7.0
    # each array sits alone in the buffer that carried it: never a view shared with another array
    assert not np.shares_memory(out[0], out[1])
    assert out[0].base.nbytes == 32 if hasattr(out[0].base, "nbytes") else len(out[0].base) == 32


def test_a_buffer_is_used_by_one_array_only() -> None:
    """Array nodes naming one buffer many times once turned a 64 MB reply into gigabytes on the host."""
    node = {"$a": 0, "dtype": "<f8", "shape": [2]}
    frame = raw_frame({"ok": True, "value": {"$l": [node] * 1000}}, [np.ones(2).tobytes()])
    with pytest.raises(wire.WireError, match="same buffer"):
        wire.receive(frame)


def test_foreign_byte_order_is_refused_and_bools_are_normalized() -> None:
    frame = raw_frame({"value": {"$a": 0, "dtype": ">f8", "shape": [1]}}, [bytes(8)])
    with pytest.raises(wire.WireError, match="dtype"):
        wire.receive(frame)
    le = np.arange(3, dtype="<f8").tobytes()
    frame = raw_frame({"value": {"$l": [{"$a": 0, "dtype": "<f8", "shape": [3]},
                                        {"$a": 1, "dtype": "|b1", "shape": [3]}]}}, [le, bytes([0, 1, 7])])
    out = wire.receive(frame)[1]
    assert out[0].dtype == np.float64 and out[0].dtype.isnative and out[0].tolist() == [0.0, 1.0, 2.0]
    assert out[1].tolist() == [False, True, True] and out[1].view(np.uint8).tolist() == [0, 1, 1]


@pytest.mark.parametrize("header", [
    b'{"ok": true, "value": ' + b"9" * 5000 + b"}",       # beyond Python's int-parsing limit
    b'{"ok": true, "value": ' + b"1" + b"0" * 400 + b"}",  # a "loss" of 10**400
    b'{"ok": true, "value": 9223372036854775808}',          # int64 max + 1
])
def test_integers_outside_int64_are_a_wire_error(header: bytes) -> None:
    with pytest.raises(wire.WireError, match="int64"):
        wire.receive(io.BytesIO(struct.pack(">I", len(header)) + header))


def test_absurd_shapes_are_a_wire_error() -> None:
    for shape in ([0, 2 ** 63], [0, 2 ** 40, 2 ** 40], [2 ** 31, 0]):
        frame = raw_frame({"value": {"$a": 0, "dtype": "<f8", "shape": shape}}, [b""])
        with pytest.raises(wire.WireError):
            wire.receive(frame)


def test_lone_surrogates_become_replacement_characters_everywhere() -> None:
    header = {"ok": False, "error": {"message": "bad \ud800 end", "type": "E\udfff"},
              "value": {"$d": {"k\ud800": "v\udc00"}}}
    raw = json.dumps(header).replace("\\u", "\\u").encode()
    raw = raw.replace(b"\\\\u", b"\\u")
    frame = io.BytesIO(struct.pack(">I", len(raw)) + raw)
    got, value = wire.receive(frame)
    assert got["error"]["message"] == "bad \ufffd end" and got["error"]["type"] == "E\ufffd"
    assert value == {"k\ufffd": "v\ufffd"}
    json.dumps(got, ensure_ascii=False).encode("utf-8")  # serializable as UTF-8


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
