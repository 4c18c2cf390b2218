"""The frames that the grader and its worker exchange, and what a worker's
answer may hold.

A frame is two big-endian 8-byte lengths, a JSON header and a payload of raw
array bytes. The header lists the arrays as [dtype, shape] pairs in the
order of the payload; values are JSON trees whose leaves name arrays by
their index. Nothing in a frame is code, nothing is compressed (so nothing
inflates), and every size is checked before memory is set aside for it:
the header's length, the payload's length, the number of arrays, each
array's dtype and shape against the bytes that are really there.

The worker runs the student's code in its own process, so the grader trusts
no frame that comes back: `Answer.read` parses it, validates the header
against the shape the request expects (ANSWERS, JSON Schema) and decodes
its values under one catch-all; whatever is wrong with it is one
ProtocolError, which the grader reports as that check's failure.
"""
import json
import math
import struct

import numpy as np

LENGTHS = struct.Struct(">QQ")
MAX_HEADER = 2 ** 20             # bytes: JSON headers are small
MAX_PAYLOAD = 2 ** 27            # bytes: a script's answer is at most about 100 MB
MAX_ARRAYS = 1024                # arrays per frame; a script's answer has about 15
MAX_CALLS = 500                  # save_images calls a script's answer records (an array each)
MAX_NDIM = 8
MAX_ITEMS = 10000                # list items in one value
MAX_DEPTH = 4                    # nesting of lists in a value
MAX_TEXT = 2000                  # characters of a string the worker sends (messages, names)
# Little-endian numbers only: what the worker sends, and all the grader reads.
DTYPES = ("<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "|i1", "<u8", "<u4", "<u2", "|u1", "|b1")


class ProtocolError(Exception):
    """A frame or an answer that breaks the protocol (too large, truncated, not
    the JSON the request expects, arrays that do not fit their bytes)."""


# ---- Values -------------------------------------------------------------------

def encode(value, arrays, depth=0):
    """value -> JSON tree; numbers and arrays are appended to `arrays`."""
    if value is None:
        return {"none": True}
    if isinstance(value, (bool, int, float, np.generic, np.ndarray)):
        try:
            array = np.asarray(value)
        except Exception:   # an int beyond int64
            return {"unsupported": type(value).__name__}
        if array.dtype.kind not in "biuf":
            return {"unsupported": f"array of {array.dtype}"[:100]}
        if array.ndim > MAX_NDIM:
            return {"unsupported": f"array of {array.ndim} dimensions"}
        arrays.append(array)
        return {"array": len(arrays) - 1}
    if isinstance(value, (list, tuple)) and depth < MAX_DEPTH and len(value) <= MAX_ITEMS:
        return {"tuple" if isinstance(value, tuple) else "list":
                [encode(item, arrays, depth + 1) for item in value]}
    return {"unsupported": type(value).__name__[:100]}


class Unsupported:
    """A returned value of a type the protocol does not carry."""

    def __init__(self, type_name):
        self.type_name = type_name

    def __repr__(self):
        return f"an object of type {self.type_name}"


def decode(tree, arrays, depth=0):
    """The inverse of encode: None, arrays, lists, tuples or Unsupported."""
    if not isinstance(tree, dict) or len(tree) != 1:
        raise ProtocolError("a value that is not an encoded tree")
    (kind, content), = tree.items()
    if kind == "none" and content is True:
        return None
    if kind == "array" and type(content) is int:
        if not 0 <= content < len(arrays):
            raise ProtocolError(f"a reference to a missing array {content}")
        return arrays[content]
    if kind in ("list", "tuple") and isinstance(content, list):
        if depth >= MAX_DEPTH or len(content) > MAX_ITEMS:
            raise ProtocolError("a value nested too deeply or with too many items")
        items = [decode(item, arrays, depth + 1) for item in content]
        return tuple(items) if kind == "tuple" else items
    if kind == "unsupported" and isinstance(content, str):
        return Unsupported(content[:100])
    raise ProtocolError(f"an unknown value kind {str(kind)[:40]!r}")


# ---- Frames -------------------------------------------------------------------

def sendable(array):
    """The array as one of DTYPES, C-contiguous (other floats become float64,
    other integers int64)."""
    array = np.asarray(array)
    if array.dtype.str not in DTYPES:
        array = array.astype({"f": "<f8", "b": "|b1"}.get(array.dtype.kind, "<i8"))
    return np.require(array, requirements="C")      # keeps 0-d arrays 0-d


def frame(header, arrays=()):
    """-> the bytes of one frame: header (a dict) with the arrays' [dtype, shape]."""
    arrays = [sendable(a) for a in arrays]
    head = json.dumps({**header, "arrays": [[a.dtype.str, list(a.shape)] for a in arrays]},
                      allow_nan=False).encode()
    payload = b"".join(a.tobytes() for a in arrays)
    return LENGTHS.pack(len(head), len(payload)) + head + payload


def array_layout(specs, payload_size):
    """[(dtype, shape, offset)] of the arrays a header lists, checked against
    the payload's size before any array is made."""
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise ProtocolError(f"a frame with more than {MAX_ARRAYS} arrays")
    layout, offset = [], 0
    for spec in specs:
        if not (isinstance(spec, list) and len(spec) == 2 and spec[0] in DTYPES
                and isinstance(spec[1], list) and len(spec[1]) <= MAX_NDIM
                and all(type(n) is int and 0 <= n <= MAX_PAYLOAD for n in spec[1])):
            raise ProtocolError("an array that is not [dtype, shape] of a number type")
        dtype, shape = np.dtype(spec[0]), tuple(spec[1])
        layout.append((dtype, shape, offset))
        offset += math.prod(shape) * dtype.itemsize      # Python ints: no overflow
        if offset > payload_size:
            raise ProtocolError("arrays larger than the frame's payload")
    if offset != payload_size:
        raise ProtocolError("a payload with bytes that belong to no array")
    return layout


def parse(head, payload):
    """(header bytes, payload bytes or bytearray) -> (header dict, [arrays]);
    the arrays are views of the payload."""
    try:
        header = json.loads(head)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"a frame header that is not JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError("a frame header that is not a JSON object")
    arrays = [np.frombuffer(payload, dtype, math.prod(shape), offset).reshape(shape)
              for dtype, shape, offset in array_layout(header.pop("arrays", []), len(payload))]
    return header, arrays


def read_frame(read):
    """Reads one frame with read(n) -> at most n bytes (b"" at the end); sizes
    are checked before reading, the payload is read into one buffer."""
    head_size, payload_size = LENGTHS.unpack(read_exactly(read, LENGTHS.size))
    if head_size > MAX_HEADER or payload_size > MAX_PAYLOAD:
        raise ProtocolError(f"a frame of {head_size + payload_size:,} bytes, over the limit")
    head = bytes(read_exactly(read, head_size))
    return parse(head, read_exactly(read, payload_size))


def read_exactly(read, n):
    """A bytearray of n bytes; EOFError if the channel closes first."""
    buffer, got = bytearray(n), 0
    while got < n:
        chunk = read(n - got)
        if not chunk:
            raise EOFError("the other side closed the channel")
        buffer[got:got + len(chunk)] = chunk
        got += len(chunk)
    return buffer


# ---- What an answer may hold --------------------------------------------------

TEXT = {"type": "string", "maxLength": MAX_TEXT}
MAX_FRAMES = 5                   # of the student's traceback shown: innermost first
FRAME = {"type": "object", "additionalProperties": False, "required": ["line", "function", "text"],
         "properties": {"line": {"type": "integer"}, "function": TEXT, "text": TEXT,
                        "file": TEXT}}
ERROR = {"type": "object", "required": ["type", "message"],
         "properties": {"type": TEXT, "message": TEXT, "line": {"type": ["integer", "null"]},
                        "text": TEXT, "missing_folder": TEXT,
                        "frames": {"type": "array", "maxItems": MAX_FRAMES, "items": FRAME},
                        "more_frames": {"type": "integer", "minimum": 0}}}
TREE = {"type": "object", "minProperties": 1, "maxProperties": 1}   # decode checks the rest
COMMON = {"id": {"type": "integer"}, "ok": {"type": "boolean"}}


def answer_schema(**properties):
    """An answer: {"ok": false, "error": ...}, or {"ok": true, ...properties}."""
    return {"type": "object", "required": ["id", "ok"],
            "properties": {**COMMON, "error": ERROR},
            "if": {"properties": {"ok": {"const": True}}},
            "then": {"properties": properties, "required": list(properties)},
            "else": {"required": ["error"]}}


ANSWERS = {
    "ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"const": True}}},
    "import": answer_schema(files={"type": "array", "maxItems": 1000, "items": TEXT}),
    "load": answer_schema(
        functions={"type": "object", "maxProperties": 100, "additionalProperties": {
            "type": "object", "required": ["parameters", "plain_numpy"],
            "properties": {"parameters": {"type": "array", "maxItems": 100, "items": TEXT},
                           "plain_numpy": {"type": "boolean"}}}},
        notes={"type": "array", "maxItems": 1000, "items": TEXT}),
    "identity": answer_schema(uid={"type": "integer"}, capabilities={"type": "integer"},
                              readable={"type": "array", "items": TEXT}),
    "call": answer_schema(value=TREE, warnings={"type": "integer", "minimum": 0}),
    "run_script": {   # the script's own failure still sends what it recorded
        "type": "object", "required": ["id", "ok", "candidates", "calls"],
        "properties": {
            **COMMON, "error": ERROR,
            "candidates": {"type": "object", "maxProperties": 16, "additionalProperties": TREE},
            "gradients": {   # the loop's gradient evaluations (script.py's GradientTrace); none: 0
                "type": "object", "additionalProperties": False,
                "required": ["count", "first", "last", "points", "gradients"],
                "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 2 ** 20},
                               "first": TREE, "last": TREE, "points": TREE, "gradients": TREE}},
            "calls": {"type": "array", "maxItems": MAX_CALLS, "items": {
                "type": "object", "required": ["images", "filename", "kwargs"],
                "properties": {"images": TREE, "filename": TEXT, "kwargs": {
                    "type": "object", "maxProperties": 10,
                    "additionalProperties": {"type": "number"}}}}}}},
}
_validators = {}


def validator(kind):
    if kind not in _validators:
        import jsonschema
        _validators[kind] = jsonschema.Draft202012Validator(ANSWERS[kind])
    return _validators[kind]


def check_answer(kind, header, request_id=None):
    """Raises ProtocolError unless header is a valid answer of this kind (to
    the request request_id)."""
    try:
        error = next(iter(validator(kind).iter_errors(header)), None)
    except RecursionError:
        raise ProtocolError("an answer nested too deeply") from None
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the answer"
        raise ProtocolError(f"{where[:60]}: {error.message[:200]}")
    if request_id is not None and header.get("id") != request_id:
        raise ProtocolError("an answer to another request")


# ---- What an answer says of the submission's values and errors -----------------

def text(value, limit=500):
    """str(value), cut to `limit`; a value whose str() fails says so."""
    try:
        return str(value)[:limit]
    except BaseException:   # a student's exception with a hostile __str__
        return f"(a {type(value).__name__} that cannot be printed)"


def student_frames(e, path):
    """The traceback's frames in the submission's folder (its own files),
    innermost first: [(file name or "", line, function, text)]."""
    import os
    import traceback
    folder, own = os.path.join(str(path.parent), ""), str(path)
    try:
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if f.filename == own or (f.filename.startswith(folder) and os.path.isfile(
                      f.filename))]
    except BaseException:
        return []
    return [("" if f.filename == own else f.filename[len(folder):], f.lineno, f.name,
             (f.line or "").strip()) for f in reversed(frames)]


def error_info(e, path):
    """What went wrong, and where in the student's files: the innermost frame
    there ("line", "text") and up to MAX_FRAMES of them, innermost first
    (the innermost MAX_FRAMES - 1 and the outermost: the student's call)."""
    frames = student_frames(e, path)
    shown = frames if len(frames) <= MAX_FRAMES else frames[:MAX_FRAMES - 1] + frames[-1:]
    info = {"type": text(type(e).__name__, 100), "message": text(e),
            "line": frames[0][1] if frames else None,
            "text": text(frames[0][3], 200) if frames else "",
            "frames": [{"line": line, "function": text(function, 100), "text": text(source, 200),
                        **({"file": text(name, 200)} if name else {})}
                       for name, line, function, source in shown]}
    if len(frames) > len(shown):
        info["more_frames"] = len(frames) - len(shown)
    return info


def where(error):
    """' at line 17 in f: `...`, called from line 40 in g: `...`' of an error
    (error_info's, validated), or "" where no line of the student's ran."""
    frames = error.get("frames") or ([{"line": error["line"], "function": "",
                                       "text": error.get("text") or ""}]
                                     if error.get("line") else [])
    said = []
    for frame in frames:
        place = f"{frame['file']} line" if frame.get("file") else "line"
        function = frame["function"]
        named = f" in {function}" if function and function != "<module>" else ""
        source = f": `{frame['text']}`" if frame["text"] else ""
        said.append(f"{place} {frame['line']}{named}{source}")
    if said and error.get("more_frames"):
        said[-1] += f" (through {error['more_frames']} more calls)"
    return (" at " + ", called from ".join(said)) if said else ""
