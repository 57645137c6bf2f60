"""Frames and broker answers are read by orjson for speed, and read exactly as the json module
reads them: the same value, or the same error, for whatever a broker or a hostile socket sends."""
from __future__ import annotations

import json
import math

import pytest

from broker import jsonread

CASES = [
    b'{"OrderNo": "5126112300001", "Quantity": 10, "Price": 1400.5}',
    '{"OrderNo": "5126112300001", "Quantity": 10}',  # a text frame
    b'{"Price": NaN}', b'{"Price": Infinity}', b'[1e400]', b'[-1e400]',
    b'{"Quantity": 123456789012345678901234567890}', b'{"Quantity": -123456789012345678901}',
    b'{"OrderNo": "123456789012345678901234"}',  # a long run of digits in a string: read alike too
    b'"\\ud800"', '"\\ud800"', b'{"a": 1, "a": 2}', b'\xff\xfe\x00', b'\xef\xbb\xbf{}', b"[" * 5000 + b"]" * 5000,
    b'{"a": 1,}', b"", b"   ", b'{"Remarks": "caf\xc3\xa9 \\u00e9"}', b'1.0000000000000002', b"-0", b"-0.0",
    b'{"tab": "a\tb"}', b"nul\x00", b'{"a": [1, 2, {"b": null}]}',
]


def _reading(read, raw):
    try:
        value = read(raw)
    except RecursionError:
        return ("error", "RecursionError")
    except ValueError as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("value", repr(value), [math.copysign(1, v) for v in ([value] if isinstance(value, float) else [])])


@pytest.mark.parametrize("raw", CASES, ids=[repr(c[:30]) for c in CASES])
def test_a_text_is_read_as_the_json_module_reads_it(raw):
    assert _reading(jsonread.loads, raw) == _reading(json.loads, raw)
