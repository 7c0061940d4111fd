"""Modbus register codec (pure): wire vectors, byte/word orders, scaling, limits and reasons."""

from __future__ import annotations

import math
import struct

import pytest

from industrial.codec import BYTE_ORDERS, DATA_TYPES, WORD_ORDERS, CodecError, check_range, decode, encode, register_count

# (byte_order, word_order) per conventional name.
ABCD = ("big", "big")
BADC = ("little", "big")
CDAB = ("big", "little")
DCBA = ("little", "little")
ORDERS = {"ABCD": ABCD, "BADC": BADC, "CDAB": CDAB, "DCBA": DCBA}

F32_123_456 = struct.unpack(">f", struct.pack(">f", 123.456))[0]  # 123.456 as f32 actually stores it
F32_MAX = struct.unpack(">f", bytes.fromhex("7f7fffff"))[0]

# data type, engineering value, registers on the wire for ABCD, BADC, CDAB, DCBA.
WIRE_VECTORS = [
    ("bool", True, [1], [1], [1], [1]),
    ("bool", False, [0], [0], [0], [0]),
    ("u16", 0x1234, [0x1234], [0x3412], [0x1234], [0x3412]),
    ("i16", -1, [0xFFFF], [0xFFFF], [0xFFFF], [0xFFFF]),
    ("i16", -2, [0xFFFE], [0xFEFF], [0xFFFE], [0xFEFF]),
    ("u32", 0x12345678, [0x1234, 0x5678], [0x3412, 0x7856], [0x5678, 0x1234], [0x7856, 0x3412]),
    ("i32", -2, [0xFFFF, 0xFFFE], [0xFFFF, 0xFEFF], [0xFFFE, 0xFFFF], [0xFEFF, 0xFFFF]),
    ("i32", -0x12345678, [0xEDCB, 0xA988], [0xCBED, 0x88A9], [0xA988, 0xEDCB], [0x88A9, 0xCBED]),
    ("f32", F32_123_456, [0x42F6, 0xE979], [0xF642, 0x79E9], [0xE979, 0x42F6], [0x79E9, 0xF642]),
    ("f32", -2.5, [0xC020, 0x0000], [0x20C0, 0x0000], [0x0000, 0xC020], [0x0000, 0x20C0]),
    (
        "f64",
        123.456,  # 0x405EDD2F1A9FBE77
        [0x405E, 0xDD2F, 0x1A9F, 0xBE77],
        [0x5E40, 0x2FDD, 0x9F1A, 0x77BE],
        [0xBE77, 0x1A9F, 0xDD2F, 0x405E],
        [0x77BE, 0x9F1A, 0x2FDD, 0x5E40],
    ),
]
WIRE_CASES = [
    pytest.param(data_type, value, *ORDERS[name], registers, id=f"{data_type}-{value!r}-{name}")
    for data_type, value, *per_order in WIRE_VECTORS
    for name, registers in zip(ORDERS, per_order, strict=True)
]


@pytest.mark.parametrize(("data_type", "value", "byte_order", "word_order", "registers"), WIRE_CASES)
def test_it_encodes_to_the_known_wire_registers(data_type: str, value: object, byte_order: str, word_order: str, registers: list[int]) -> None:
    assert encode(value, data_type, byte_order=byte_order, word_order=word_order) == registers  # type: ignore[arg-type]


@pytest.mark.parametrize(("data_type", "value", "byte_order", "word_order", "registers"), WIRE_CASES)
def test_it_decodes_the_known_wire_registers(data_type: str, value: object, byte_order: str, word_order: str, registers: list[int]) -> None:
    decoded = decode(registers, data_type, byte_order=byte_order, word_order=word_order)
    assert decoded == value
    assert type(decoded) is type(value)


def test_f32_vector_is_123_456_to_single_precision() -> None:
    assert decode([0x42F6, 0xE979], "f32") == pytest.approx(123.456, rel=1e-7)


ROUND_TRIP_VALUES: dict[str, list[bool | int | float]] = {
    "bool": [True, False],
    "u16": [0, 1, 0x00FF, 0xFF00, 65535],
    "i16": [-32768, -1, 0, 1, 32767],
    "u32": [0, 1, 0x0001_0000, 0xDEAD_BEEF, 4294967295],
    "i32": [-2147483648, -65536, -1, 0, 65535, 2147483647],
    "f32": [0.0, -0.5, 1.0, 2.0**-126, F32_MAX, -F32_MAX, F32_123_456],
    "f64": [0.0, -0.1, math.pi, 1e300, -1e-300, math.ulp(0.0)],
}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
@pytest.mark.parametrize("data_type", DATA_TYPES)
def test_every_type_round_trips_in_every_order(data_type: str, order: tuple[str, str]) -> None:
    byte_order, word_order = order
    for value in ROUND_TRIP_VALUES[data_type]:
        registers = encode(value, data_type, byte_order=byte_order, word_order=word_order)
        assert len(registers) == register_count(data_type)
        assert all(0 <= register <= 0xFFFF for register in registers)
        assert decode(registers, data_type, byte_order=byte_order, word_order=word_order) == value


def test_the_orders_really_differ_for_multi_register_types() -> None:
    assert len({tuple(encode(0x12345678, "u32", byte_order=b, word_order=w)) for b, w in ORDERS.values()}) == 4
    assert len({tuple(encode(123.456, "f64", byte_order=b, word_order=w)) for b, w in ORDERS.values()}) == 4


@pytest.mark.parametrize(("data_type", "count"), [("bool", 1), ("u16", 1), ("i16", 1), ("u32", 2), ("i32", 2), ("f32", 2), ("f64", 4)])
def test_register_count(data_type: str, count: int) -> None:
    assert register_count(data_type) == count
    assert DATA_TYPES[data_type] == count


def test_order_names() -> None:
    assert BYTE_ORDERS == ("big", "little")
    assert WORD_ORDERS == ("big", "little")


# --- scale and offset -------------------------------------------------------------


def test_scale_and_offset_apply_on_decode_and_invert_on_encode() -> None:
    assert decode([215], "u16", scale=0.1, offset=-10) == pytest.approx(11.5)
    assert encode(11.5, "u16", scale=0.1, offset=-10) == [215]


@pytest.mark.parametrize(
    ("registers", "data_type", "scale", "offset", "expected"),
    [
        ([0xFF9C], "i16", 0.5, 0.0, -50.0),
        ([0x0001, 0x86A0], "u32", 0.001, 0.0, 100.0),
        ([0x0001, 0x86A0], "u32", 1.0, 0.5, 100000.5),
        ([0x4120, 0x0000], "f32", 2.0, 1.0, 21.0),
        ([0x3FF0, 0, 0, 0], "f64", -1.0, 0.0, -1.0),
    ],
)
def test_scaled_values_decode_to_float(registers: list[int], data_type: str, scale: float, offset: float, expected: float) -> None:
    decoded = decode(registers, data_type, scale=scale, offset=offset)
    assert type(decoded) is float
    assert decoded == pytest.approx(expected)
    assert encode(expected, data_type, scale=scale, offset=offset) == registers


@pytest.mark.parametrize(("scale", "offset"), [(1, 5), (1.0, 5.0), (1, -7)])
def test_integer_types_stay_int_with_unit_scale_and_integral_offset(scale: float, offset: float) -> None:
    decoded = decode([10], "u16", scale=scale, offset=offset)
    assert decoded == 10 + offset
    assert type(decoded) is int


@pytest.mark.parametrize(("scale", "offset"), [(2, 0), (1, 0.5), (0.1, 0)])
def test_integer_types_become_float_with_any_other_scaling(scale: float, offset: float) -> None:
    assert type(decode([10], "u16", scale=scale, offset=offset)) is float


def test_bool_ignores_scale_and_offset() -> None:
    assert decode([1], "bool", scale=0, offset=99) is True
    assert encode(True, "bool", scale=0, offset=99) == [1]


@pytest.mark.parametrize(("value", "raw"), [(2.4, 2), (2.5, 2), (2.6, 3), (3.5, 4), (-2.5, -2), (-0.4, 0)])
def test_integer_writes_round_half_to_even(value: float, raw: int) -> None:
    assert decode(encode(value, "i16"), "i16") == raw


# --- integer limits -------------------------------------------------------------------

INT_LIMITS = [("u16", 0, 65535), ("i16", -32768, 32767), ("u32", 0, 4294967295), ("i32", -2147483648, 2147483647)]


@pytest.mark.parametrize(("data_type", "low", "high"), INT_LIMITS)
def test_integer_limits_encode(data_type: str, low: int, high: int) -> None:
    for value in (low, high):
        assert decode(encode(value, data_type), data_type) == value


@pytest.mark.parametrize(("data_type", "low", "high"), INT_LIMITS)
def test_one_past_the_integer_limits_is_rejected(data_type: str, low: int, high: int) -> None:
    for value in (low - 1, high + 1):
        with pytest.raises(CodecError) as excinfo:
            encode(value, data_type)
        assert excinfo.value.reason == f"value {value} is outside {data_type} range {low}..{high}"


@pytest.mark.parametrize(
    ("registers", "data_type", "expected"),
    [
        ([0xFFFF], "u16", 65535),
        ([0x8000], "i16", -32768),
        ([0x7FFF], "i16", 32767),
        ([0xFFFF, 0xFFFF], "u32", 4294967295),
        ([0x8000, 0x0000], "i32", -2147483648),
        ([0x7FFF, 0xFFFF], "i32", 2147483647),
    ],
)
def test_integer_limits_decode(registers: list[int], data_type: str, expected: int) -> None:
    assert decode(registers, data_type) == expected


@pytest.mark.parametrize(
    ("value", "kwargs", "reason"),
    [
        (70000, {}, "value 70000 is outside u16 range 0..65535"),
        (65535.5, {}, "value 65535.5 rounds to 65536, outside u16 range 0..65535"),
        (7000, {"scale": 0.1}, "value 7000 with scale 0.1 and offset 0.0 gives raw 70000, outside u16 range 0..65535"),
        (4, {"offset": 5}, "value 4 with scale 1.0 and offset 5 gives raw -1, outside u16 range 0..65535"),
        (10**400, {}, f"value {10**400} is outside u16 range 0..65535"),
        (10**400, {"scale": 0.5}, f"value {10**400} is outside u16 range 0..65535"),
    ],
)
def test_out_of_range_writes_name_the_raw_value(value: float, kwargs: dict[str, float], reason: str) -> None:
    with pytest.raises(CodecError) as excinfo:
        encode(value, "u16", **kwargs)  # type: ignore[arg-type]
    assert excinfo.value.reason == reason


def test_f32_overflow_is_rejected_but_f32_max_is_not() -> None:
    assert encode(F32_MAX, "f32") == [0x7F7F, 0xFFFF]
    with pytest.raises(CodecError) as excinfo:
        encode(1e39, "f32")
    assert excinfo.value.reason == f"value 1e+39 is outside f32 range ±{F32_MAX}"
    with pytest.raises(CodecError, match="gives raw 2e\\+39, outside f32 range"):
        encode(1e38, "f32", scale=0.05)


def test_f64_scaling_overflow_is_rejected() -> None:
    with pytest.raises(CodecError, match="overflows f64"):
        encode(1e308, "f64", scale=1e-10)
    with pytest.raises(CodecError, match="is not finite"):
        decode([0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF], "f64", scale=10)


# --- NaN and infinity ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("registers", "data_type", "byte_order", "word_order", "reason"),
    [
        ([0x7FC0, 0x0000], "f32", "big", "big", "f32 decoded to NaN"),
        ([0xC07F, 0x0000], "f32", "little", "big", "f32 decoded to NaN"),
        ([0x0000, 0x7FC0], "f32", "big", "little", "f32 decoded to NaN"),
        ([0x7F80, 0x0000], "f32", "big", "big", "f32 decoded to +inf"),
        ([0xFF80, 0x0000], "f32", "big", "big", "f32 decoded to -inf"),
        ([0x7FF8, 0, 0, 0], "f64", "big", "big", "f64 decoded to NaN"),
        ([0, 0, 0, 0xF0FF], "f64", "little", "little", "f64 decoded to -inf"),
        ([0x7FF0, 0, 0, 0], "f64", "big", "big", "f64 decoded to +inf"),
    ],
)
def test_nan_and_inf_registers_are_a_bad_point(registers: list[int], data_type: str, byte_order: str, word_order: str, reason: str) -> None:
    with pytest.raises(CodecError) as excinfo:
        decode(registers, data_type, byte_order=byte_order, word_order=word_order)
    assert excinfo.value.reason == reason


@pytest.mark.parametrize("data_type", ["u16", "i32", "f32", "f64"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_not_written(data_type: str, value: float) -> None:
    with pytest.raises(CodecError) as excinfo:
        encode(value, data_type)
    assert excinfo.value.reason == f"value {value} is not a finite number"


# --- malformed registers, names, scaling and value types ----------------------------------


@pytest.mark.parametrize(
    ("registers", "data_type", "reason"),
    [
        ([1], "f32", "expected 2 registers for f32, got 1"),
        ([1, 2], "u16", "expected 1 register for u16, got 2"),
        ([], "bool", "expected 1 register for bool, got 0"),
        ([1, 2, 3], "f64", "expected 4 registers for f64, got 3"),
        ([1, 2, 3], "u32", "expected 2 registers for u32, got 3"),
    ],
)
def test_wrong_register_count_is_rejected(registers: list[int], data_type: str, reason: str) -> None:
    with pytest.raises(CodecError) as excinfo:
        decode(registers, data_type)
    assert excinfo.value.reason == reason


@pytest.mark.parametrize(
    ("registers", "reason"),
    [
        ([70000], "register value 70000 is not a 16-bit unsigned integer"),
        ([-1], "register value -1 is not a 16-bit unsigned integer"),
        ([1.0], "register value 1.0 is not a 16-bit unsigned integer"),
        (["1"], "register value '1' is not a 16-bit unsigned integer"),
        ([None], "register value None is not a 16-bit unsigned integer"),
    ],
)
def test_register_values_outside_16_bits_are_rejected(registers: list[object], reason: str) -> None:
    with pytest.raises(CodecError) as excinfo:
        decode(registers, "u16")  # type: ignore[arg-type]
    assert excinfo.value.reason == reason


def test_a_bad_register_in_a_wider_type_is_rejected() -> None:
    with pytest.raises(CodecError, match="register value 65536 is not a 16-bit unsigned integer"):
        decode([0, 65536], "u32")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"data_type": "u8"}, "unknown data type 'u8'; expected one of bool, u16, i16, u32, i32, f32, f64"),
        ({"data_type": "F32"}, "unknown data type 'F32'; expected one of bool, u16, i16, u32, i32, f32, f64"),
        ({"byte_order": "middle"}, "unknown byte order 'middle'; expected big or little"),
        ({"word_order": "BIG"}, "unknown word order 'BIG'; expected big or little"),
        ({"scale": 0}, "scale must not be 0"),
        ({"scale": 0.0}, "scale must not be 0"),
        ({"scale": math.nan}, "scale must be a finite number, got nan"),
        ({"offset": math.inf}, "offset must be a finite number, got inf"),
        ({"scale": "2"}, "scale must be a finite number, got '2'"),
    ],
)
def test_bad_configuration_is_rejected_by_encode_and_decode(kwargs: dict[str, object], reason: str) -> None:
    options: dict[str, object] = {"data_type": "u16", **kwargs}
    with pytest.raises(CodecError) as excinfo:
        decode([1], **options)  # type: ignore[arg-type]
    assert excinfo.value.reason == reason
    with pytest.raises(CodecError) as excinfo:
        encode(1, **options)  # type: ignore[arg-type]
    assert excinfo.value.reason == reason


def test_register_count_rejects_an_unknown_type() -> None:
    with pytest.raises(CodecError, match="unknown data type 'float'"):
        register_count("float")


@pytest.mark.parametrize(
    ("value", "data_type", "reason"),
    [
        (1, "bool", "bool takes True or False, got int 1"),
        ("on", "bool", "bool takes True or False, got str 'on'"),
        (True, "u16", "u16 takes a number, got bool True"),
        (False, "f32", "f32 takes a number, got bool False"),
        ("5", "i16", "i16 takes a number, got str '5'"),
        (None, "f64", "f64 takes a number, got NoneType None"),
    ],
)
def test_value_types_are_strict(value: object, data_type: str, reason: str) -> None:
    with pytest.raises(CodecError) as excinfo:
        encode(value, data_type)  # type: ignore[arg-type]
    assert excinfo.value.reason == reason


def test_codec_error_is_a_value_error_with_its_reason_as_message() -> None:
    error = CodecError("f32 decoded to NaN")
    assert isinstance(error, ValueError)
    assert str(error) == error.reason == "f32 decoded to NaN"


# --- bool ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("registers", "expected"), [([0], False), ([1], True), ([0xFFFF], True), ([0x0100], True), ([True], True), ([False], False)])
@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_bool_from_coils_or_registers_is_non_zero(registers: list[int], expected: bool, order: tuple[str, str]) -> None:
    assert decode(registers, "bool", byte_order=order[0], word_order=order[1]) is expected


# --- check_range -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "minimum", "maximum"), [(0, 0, 400), (400, 0, 400), (21.5, 5, 35), (1e9, None, None), (-1e9, None, 0), (1e9, 0, None)])
def test_check_range_accepts_values_within_limits(value: float, minimum: float | None, maximum: float | None) -> None:
    check_range(value, minimum, maximum)


@pytest.mark.parametrize(
    ("value", "minimum", "maximum", "reason"),
    [
        (500, 0, 400, "value 500 is above the maximum 400"),
        (500, None, 400, "value 500 is above the maximum 400"),
        (-5, 0, None, "value -5 is below the minimum 0"),
        (4.9, 5, 35, "value 4.9 is below the minimum 5"),
        (math.nan, None, None, "value nan is not a number"),
    ],
)
def test_check_range_names_the_violated_limit(value: float, minimum: float | None, maximum: float | None, reason: str) -> None:
    with pytest.raises(CodecError) as excinfo:
        check_range(value, minimum, maximum)
    assert excinfo.value.reason == reason
