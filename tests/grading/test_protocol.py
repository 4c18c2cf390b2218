"""grader/protocol.py: frames round-trip, and every way a hostile frame can
be wrong is a ProtocolError before memory is set aside for it."""
import json
import struct
import tracemalloc

import numpy as np
import pytest

from grader import protocol
from grader.protocol import ProtocolError


def read_back(data):
    """read_frame over data, given in pieces of at most 7000 bytes as a pipe gives them."""
    view, at = memoryview(data), [0]

    def read(n):
        piece = view[at[0]:at[0] + min(n, 7000)]
        at[0] += len(piece)
        return bytes(piece)
    return protocol.read_frame(read)


def raw(header, payload=b""):
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(">QQ", len(head), len(payload)) + head + payload


def test_values_round_trip_with_their_shapes_and_dtypes():
    value = [np.float64(2.5), np.arange(6, dtype=np.int32).reshape(2, 3), None,
             (np.ones(3, np.float32), [True, 7]), np.zeros((0, 4)), np.float16(1.5)]
    arrays = []
    tree = protocol.encode(value, arrays)
    header, got = read_back(protocol.frame({"value": tree}, arrays))
    back = protocol.decode(header["value"], got)
    assert back[0].shape == () and back[0] == 2.5                  # a scalar stays 0-d
    assert back[1].dtype == np.int32 and np.array_equal(back[1], value[1])
    assert back[2] is None and isinstance(back[3], tuple) and back[3][1][1] == 7
    assert back[4].shape == (0, 4) and back[5].dtype == np.float16


def test_other_numbers_travel_as_float64_or_int64_and_objects_not_at_all():
    arrays = []
    tree = protocol.encode([np.array([1.0], ">f8"), np.longdouble(3), "text", {"a": 1}], arrays)
    header, got = read_back(protocol.frame({"value": tree}, arrays))
    back = protocol.decode(header["value"], got)
    assert back[0].dtype == np.float64 and back[1].dtype == np.float64
    assert repr(back[2]) == "an object of type str" and repr(back[3]) == "an object of type dict"


@pytest.mark.parametrize("header, payload, words", [
    ({"arrays": [["<f8", [10 ** 8]]]}, b"\0" * 8, "larger than the frame's payload"),
    ({"arrays": [["<f8", [10 ** 12]]]}, b"\0" * 8, "number type"),     # beyond any payload
    ({"arrays": [["<f8", [1]]]}, b"\0" * 16, "belong to no array"),
    ({"arrays": [["|O", [1]]]}, b"\0" * 8, "number type"),
    ({"arrays": [[">f8", [1]]]}, b"\0" * 8, "number type"),
    ({"arrays": [["<f8", [-1]]]}, b"", "number type"),
    ({"arrays": [["<f8", [1] * 9]]}, b"\0" * 8, "number type"),
    ({"arrays": [["|b1", []]] * 2000}, b"\0" * 2000, "more than 1024 arrays"),
    ({"arrays": "all"}, b"", "more than 1024 arrays"),
    (b"[" * 100000 + b"]" * 100000, b"", "not JSON"),
    (b"\xff\xfe", b"", "not JSON"),
    (b"[1, 2]", b"", "not a JSON object"),
    ({"ok": True, "arrays": [["<f8", [134217728]]]}, b"PK\x03\x04" + b"\0" * 4096,
     "larger than the frame's payload"),                   # an inflation bomb never inflates
])
def test_a_hostile_frame_is_a_protocol_error(header, payload, words):
    with pytest.raises(ProtocolError, match=words):
        read_back(raw(header, payload))


def test_sizes_are_checked_before_reading():
    calls = []

    def read(n):
        calls.append(n)
        return struct.pack(">QQ", protocol.MAX_HEADER + 1, 0)
    with pytest.raises(ProtocolError, match="over the limit"):
        protocol.read_frame(read)
    assert calls == [16]                  # only the lengths were read


def test_a_truncated_frame_ends_the_channel():
    data = protocol.frame({"ok": True}, [np.ones(100)])
    with pytest.raises(EOFError):
        read_back(data[:-10])


def test_the_largest_frame_costs_its_size_once():
    payload = protocol.MAX_PAYLOAD
    data = raw({"arrays": [["|u1", [payload]]]}, b"\0" * payload)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        read_back(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.1 * payload            # one buffer, the arrays are views of it


ANSWERS = {
    "call": [({"ok": True, "id": 3, "value": {"array": 0}, "warnings": 0}, None),
             ({"ok": False, "id": 3, "error": {"type": "E", "message": "m"}}, None),
             ({"ok": False, "id": 3}, "error"),                 # a failure says why
             ({"ok": True, "id": 3, "value": {"array": 0}}, "warnings"),
             ({"ok": True, "id": 3, "value": {"array": 0}, "warnings": -1}, "minimum"),
             ({"ok": "yes", "id": 3}, "boolean"),
             ({"ok": True, "id": 4, "value": {"none": True}, "warnings": 0}, "another request")],
    "run_script": [({"ok": True, "id": 3, "candidates": {}, "calls": []}, None),
                   ({"ok": True, "id": 3, "candidates": [], "calls": {}}, "object"),
                   ({"ok": True, "id": 3, "candidates": {}, "calls": [
                       {"images": {"array": 0}, "filename": "x" * 5000, "kwargs": {}}]},
                    "filename")],
    "load": [({"ok": True, "id": 3, "functions": {"f": {"parameters": ["a"],
                                                        "plain_numpy": False}}, "notes": []}, None),
             ({"ok": True, "id": 3, "functions": {"f": {"parameters": "a"}}, "notes": []},
              "plain_numpy")],
}


@pytest.mark.parametrize("kind, header, words", [(kind, h, w) for kind, cases in ANSWERS.items()
                                                 for h, w in cases])
def test_answers_are_validated_against_what_the_request_expects(kind, header, words):
    if words is None:
        protocol.check_answer(kind, header, 3)
    else:
        with pytest.raises(ProtocolError, match=words):
            protocol.check_answer(kind, header, 3)


@pytest.mark.parametrize("tree", [{"array": 5}, {"array": "0"}, {"list": "x"}, {"magic": 1},
                                  {"none": True, "array": 0}, [1],
                                  {"list": [{"list": [{"list": [{"list": [{"list": []}]}]}]}]}])
def test_a_value_that_does_not_decode_is_a_protocol_error(tree):
    with pytest.raises(ProtocolError):
        protocol.decode(tree, [np.zeros(1)])
