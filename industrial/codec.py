"""Encode and decode Modbus register values (pure: stdlib only, no Django, no pymodbus).

Modbus only moves 16-bit registers (and single bits for coils / discrete inputs).
Anything wider than 16 bits is spread over consecutive registers, and vendors
disagree about the order, so every point carries a byte order and a word order.
Keeping the conversion here, free of I/O and Django, lets it be tested exhaustively
and reused by the poller, the write path and the config validator alike.

Registers are a sequence of ints 0..65535 exactly as pymodbus returns them: each
int is the register's value as transmitted big-endian on the wire.

* ``byte_order`` is the order of the two bytes *inside* each register: ``big`` is
  the Modbus standard, ``little`` means the device swapped them.
* ``word_order`` is the order of the registers: ``big`` puts the most significant
  register first (lowest address), ``little`` puts it last.

For a 32-bit value whose big-endian bytes are A B C D (A most significant), e.g.
``0x12345678``:

=========  ==========  ==========  =====================  ====================
name       byte_order  word_order  registers              example (0x12345678)
=========  ==========  ==========  =====================  ====================
ABCD       big         big         [0xAB.., 0xCD..]       [0x1234, 0x5678]
BADC       little      big         [0xBA.., 0xDC..]       [0x3412, 0x7856]
CDAB       big         little      [0xCD.., 0xAB..]       [0x5678, 0x1234]
DCBA       little      little      [0xDC.., 0xBA..]       [0x7856, 0x3412]
=========  ==========  ==========  =====================  ====================

The same rules extend to f64 (four registers; ``word_order=little`` reverses all
four). For one-register types (u16, i16) the word order has no effect and
``byte_order=little`` swaps the two bytes of the single register. ``bool`` is
meant for coils and discrete inputs but may also be read from a holding or input
register, where any non-zero value is True (byte and word order are then moot).

Engineering value = raw * scale + offset. Writes apply the inverse,
raw = (value - offset) / scale; for integer types that is rounded to the nearest
integer with Python's ``round`` (ties go to the even integer, so 2.5 -> 2 and
3.5 -> 4) and then checked against the type's raw range. Every failure raises
:class:`CodecError` whose ``reason`` is short enough to show next to a bad point.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final

#: Data type name -> number of 16-bit registers it occupies (bool: one coil bit
#: or one register). Read-only so a caller cannot accidentally teach the codec a
#: type it cannot handle.
DATA_TYPES: Final[Mapping[str, int]] = MappingProxyType({"bool": 1, "u16": 1, "i16": 1, "u32": 2, "i32": 2, "f32": 2, "f64": 4})
BYTE_ORDERS: Final = ("big", "little")
WORD_ORDERS: Final = ("big", "little")

# Raw (pre-scale) ranges of the integer types, inclusive.
_INT_RANGES: Final[Mapping[str, tuple[int, int]]] = MappingProxyType(
    {"u16": (0, 0xFFFF), "i16": (-0x8000, 0x7FFF), "u32": (0, 0xFFFF_FFFF), "i32": (-0x8000_0000, 0x7FFF_FFFF)}
)
_FLOAT_FORMATS: Final[Mapping[str, str]] = MappingProxyType({"f32": ">f", "f64": ">d"})
_F32_MAX: Final = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]


class CodecError(ValueError):
    """A value or register block that cannot be converted; ``reason`` says why.

    Subclasses ValueError so generic callers still catch it, while the poller can
    store ``reason`` verbatim as the point's bad-quality explanation.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def register_count(data_type: str) -> int:
    """Number of registers (or coil bits, for bool) a point of ``data_type`` spans.

    The poller needs this to size and batch its reads before it has any data.
    """
    _check_data_type(data_type)
    return DATA_TYPES[data_type]


def decode(
    registers: Sequence[int],
    data_type: str,
    *,
    byte_order: str = "big",
    word_order: str = "big",
    scale: float = 1.0,
    offset: float = 0.0,
) -> bool | int | float:
    """Turn raw registers into an engineering value.

    Integer types stay ``int`` when scale is 1 and offset is integral, so counters
    and enums don't turn into floats; any other scaling yields ``float``. ``bool``
    ignores scale and offset. NaN and infinities raise CodecError: a PLC reporting
    NaN is a bad point, not a reading, and the caller marks it bad with the reason.
    """
    _check_orders(data_type, byte_order, word_order)
    expected = DATA_TYPES[data_type]
    if len(registers) != expected:
        noun = "register" if expected == 1 else "registers"
        raise CodecError(f"expected {expected} {noun} for {data_type}, got {len(registers)}")
    for register in registers:
        if not isinstance(register, int) or not 0 <= register <= 0xFFFF:
            raise CodecError(f"register value {register!r} is not a 16-bit unsigned integer")
    if data_type == "bool":
        return registers[0] != 0
    _check_scaling(scale, offset)

    data = _to_bytes(registers, byte_order, word_order)
    raw: int | float
    if data_type in _INT_RANGES:
        raw = int.from_bytes(data, "big", signed=data_type.startswith("i"))
        if scale == 1 and float(offset).is_integer():
            return raw + int(offset)
    else:
        raw = struct.unpack(_FLOAT_FORMATS[data_type], data)[0]
        if math.isnan(raw):
            raise CodecError(f"{data_type} decoded to NaN")
        if math.isinf(raw):
            raise CodecError(f"{data_type} decoded to {'+' if raw > 0 else '-'}inf")
    result = raw * scale + offset
    if not math.isfinite(result):  # a huge scale can overflow a finite raw value
        raise CodecError(f"{data_type} raw value {raw}{_scaling_text(scale, offset)} is not finite")
    return float(result)


def encode(
    value: bool | int | float,
    data_type: str,
    *,
    byte_order: str = "big",
    word_order: str = "big",
    scale: float = 1.0,
    offset: float = 0.0,
) -> list[int]:
    """Turn an engineering value into registers to write; the inverse of :func:`decode`.

    Only a real ``bool`` is accepted for bool (so ``1`` cannot silently switch a
    relay), and a ``bool`` is rejected for numeric types (so ``True`` is never
    written as 1 to a setpoint). Integer types round (ties to even) and then must
    fit the type's raw range; f32 must not overflow single precision. Returns one
    int per register, in wire order; a bool gives ``[1]`` or ``[0]``.
    """
    _check_orders(data_type, byte_order, word_order)
    if data_type == "bool":
        if not isinstance(value, bool):
            raise CodecError(f"bool takes True or False, got {type(value).__name__} {value!r}")
        return [1 if value else 0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(f"{data_type} takes a number, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CodecError(f"value {value} is not a finite number")
    _check_scaling(scale, offset)
    scaled = scale != 1 or offset != 0

    if data_type in _INT_RANGES:
        low, high = _INT_RANGES[data_type]
        raw = _raw_int(value, scale, offset, data_type, low, high)
        if not low <= raw <= high:
            if scaled:
                raise CodecError(f"value {value}{_scaling_text(scale, offset)} gives raw {raw}, outside {data_type} range {low}..{high}")
            if raw != value:
                raise CodecError(f"value {value} rounds to {raw}, outside {data_type} range {low}..{high}")
            raise CodecError(f"value {value} is outside {data_type} range {low}..{high}")
        data = raw.to_bytes(DATA_TYPES[data_type] * 2, "big", signed=data_type.startswith("i"))
    else:
        try:
            raw_float = (float(value) - offset) / scale
        except OverflowError:  # int too large for a float
            raise CodecError(f"value {value} is outside {data_type} range")
        if not math.isfinite(raw_float):
            raise CodecError(f"value {value}{_scaling_text(scale, offset)} overflows {data_type}")
        try:
            data = struct.pack(_FLOAT_FORMATS[data_type], raw_float)
        except OverflowError:  # only f32: finite double beyond single precision
            prefix = f"value {value}{_scaling_text(scale, offset)} gives raw {raw_float}," if scaled else f"value {value} is"
            raise CodecError(f"{prefix} outside f32 range ±{_F32_MAX}")
    return _from_bytes(data, byte_order, word_order)


def check_range(value: float, minimum: float | None, maximum: float | None) -> None:
    """Raise CodecError if ``value`` lies outside the configured engineering limits.

    ``None`` means unbounded on that side. Kept here, next to the codec, so the
    write path rejects an out-of-limit setpoint with the same kind of reason as
    an unencodable one. NaN is rejected because it would slip past both
    comparisons.
    """
    if isinstance(value, float) and math.isnan(value):
        raise CodecError(f"value {value} is not a number")
    if minimum is not None and value < minimum:
        raise CodecError(f"value {value:g} is below the minimum {minimum:g}")
    if maximum is not None and value > maximum:
        raise CodecError(f"value {value:g} is above the maximum {maximum:g}")


def _check_data_type(data_type: str) -> None:
    if not isinstance(data_type, str) or data_type not in DATA_TYPES:
        raise CodecError(f"unknown data type {data_type!r}; expected one of {', '.join(DATA_TYPES)}")


def _check_orders(data_type: str, byte_order: str, word_order: str) -> None:
    _check_data_type(data_type)
    if byte_order not in BYTE_ORDERS:
        raise CodecError(f"unknown byte order {byte_order!r}; expected big or little")
    if word_order not in WORD_ORDERS:
        raise CodecError(f"unknown word order {word_order!r}; expected big or little")


def _check_scaling(scale: float, offset: float) -> None:
    for name, number in (("scale", scale), ("offset", offset)):
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise CodecError(f"{name} must be a finite number, got {number!r}")
    if scale == 0:
        raise CodecError("scale must not be 0")


def _scaling_text(scale: float, offset: float) -> str:
    return f" with scale {scale} and offset {offset}"


def _raw_int(value: int | float, scale: float, offset: float, data_type: str, low: int, high: int) -> int:
    # Exact integer arithmetic when no real scaling is involved, so huge ints and
    # values beyond 2**53 are range-checked precisely instead of via float.
    if isinstance(value, int) and scale == 1 and float(offset).is_integer():
        return value - int(offset)
    try:
        raw_float = (float(value) - offset) / scale
    except OverflowError:  # int too large for a float: certainly out of range
        raise CodecError(f"value {value} is outside {data_type} range {low}..{high}")
    if not math.isfinite(raw_float):
        raise CodecError(f"value {value}{_scaling_text(scale, offset)} is outside {data_type} range {low}..{high}")
    return round(raw_float)


def _to_bytes(registers: Sequence[int], byte_order: str, word_order: str) -> bytes:
    """Reassemble the value's big-endian bytes (most significant byte first)."""
    words = list(registers) if word_order == "big" else list(reversed(registers))
    return b"".join(word.to_bytes(2, "big" if byte_order == "big" else "little") for word in words)


def _from_bytes(data: bytes, byte_order: str, word_order: str) -> list[int]:
    """Split big-endian bytes into registers in the device's wire order."""
    words = [int.from_bytes(data[i : i + 2], "big" if byte_order == "big" else "little") for i in range(0, len(data), 2)]
    return words if word_order == "big" else words[::-1]
