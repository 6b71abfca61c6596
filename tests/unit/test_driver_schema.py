"""clove.drivers.schema.build: every supported field type, and errors that name the key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from clove.drivers.schema import FieldError, build, describe_type, fields_doc, invalid


@dataclass(frozen=True, slots=True)
class Scalars:
    s: str
    i: int
    f: float
    b: bool
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class Optionals:
    name: str | None = None
    rate: float | None = None
    either: int | str = 0


@dataclass(frozen=True, slots=True)
class Containers:
    ids: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    lines: dict[str, int] = field(default_factory=dict)
    gains: dict[str, float] = field(default_factory=dict)
    groups: tuple[dict[str, int], ...] = ()
    maybe_ids: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Choices:
    mode: Literal["read", "write"] = "read"
    level: Literal[0, 1] = 0
    anything: Any = None


@dataclass(frozen=True, slots=True)
class Ranged:
    baud: int = 9600

    def __post_init__(self) -> None:
        if self.baud <= 0:
            raise invalid("baud", f"must be positive, got {self.baud}")


@dataclass(frozen=True, slots=True)
class PlainValueError:
    x: int = 0

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x went negative")


@dataclass(frozen=True, slots=True)
class WithDerived:
    a: int = 0
    derived: int = field(init=False, default=7)


class NotADataclass:
    a: int = 0


def field_error(cls: type[Any], data: dict[Any, Any], **kw: Any) -> FieldError:
    with pytest.raises(FieldError) as info:
        build(cls, data, **kw)
    return info.value


# -- scalars -------------------------------------------------------------------------------------


def test_scalars_build_with_the_right_types() -> None:
    got = build(Scalars, {"s": "x", "i": 3, "f": 2.5, "b": True, "raw": b"\x00\x01"})
    assert got == Scalars(s="x", i=3, f=2.5, b=True, raw=b"\x00\x01")


def test_defaults_fill_missing_optional_keys() -> None:
    assert build(Scalars, {"s": "", "i": 0, "f": 0.0, "b": False}).raw == b""
    assert build(Optionals, {}) == Optionals()
    assert build(Containers, {}).lines == {}


def test_int_is_promoted_to_float() -> None:
    got = build(Scalars, {"s": "x", "i": 1, "f": 3, "b": False})
    assert got.f == 3.0
    assert type(got.f) is float


def test_bytearray_becomes_bytes() -> None:
    got = build(Scalars, {"s": "x", "i": 1, "f": 1.0, "b": False, "raw": bytearray(b"ab")})
    assert got.raw == b"ab"
    assert type(got.raw) is bytes


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("i", True, "i: expected int, got bool True"),
        ("i", False, "i: expected int, got bool False"),
        ("i", 1.0, "i: expected int, got number 1.0"),
        ("i", "1", "i: expected int, got string '1'"),
        ("f", True, "f: expected number, got bool True"),
        ("f", "1.5", "f: expected number, got string '1.5'"),
        ("b", 1, "b: expected bool, got int 1"),
        ("b", "true", "b: expected bool, got string 'true'"),
        ("s", b"x", "s: expected string, got bytes b'x'"),
        ("s", 5, "s: expected string, got int 5"),
        ("raw", "text", "raw: expected bytes, got string 'text'"),
        ("raw", [1, 2], "raw: expected bytes, got array [1, 2]"),
    ],
)
def test_wrong_scalar_types_name_the_key(key: str, value: Any, message: str) -> None:
    data: dict[str, Any] = {"s": "x", "i": 1, "f": 1.0, "b": False}
    data[key] = value
    err = field_error(Scalars, data)
    assert err.key == key
    assert str(err) == message


def test_bool_is_never_an_int_even_nested() -> None:
    assert field_error(Containers, {"ids": [1, True]}).key == "ids[1]"
    assert field_error(Containers, {"lines": {"estop": False}}).key == "lines.estop"


def test_long_values_are_cut_in_messages() -> None:
    err = field_error(Scalars, {"s": "x", "i": "y" * 500, "f": 1.0, "b": False})
    assert err.key == "i"
    assert len(err.message) < 200


# -- missing and unknown keys --------------------------------------------------------------------


def test_missing_required_key_is_named() -> None:
    err = field_error(Scalars, {"s": "x", "f": 1.0, "b": True})
    assert (err.key, err.message, str(err)) == ("i", "required", "i: required")


def test_first_missing_key_in_field_order() -> None:
    assert field_error(Scalars, {}).key == "s"


def test_unknown_key_is_named_with_the_known_ones() -> None:
    err = field_error(Scalars, {"s": "x", "i": 1, "f": 1.0, "b": True, "bogus": 1})
    assert err.key == "bogus"
    assert str(err) == "bogus: unknown key (known: b, f, i, raw, s)"


def test_unknown_keys_are_reported_before_missing_ones_and_sorted() -> None:
    err = field_error(Scalars, {"zeta": 1, "alpha": 2})
    assert err.key == "alpha"
    assert "unknown key" in err.message


def test_unknown_key_on_a_class_without_fields() -> None:
    @dataclass(frozen=True)
    class Empty:
        pass

    err = field_error(Empty, {"x": 1})
    assert str(err) == "x: unknown key (known: none)"
    assert build(Empty, {}) == Empty()


def test_init_false_fields_are_not_keys() -> None:
    assert build(WithDerived, {"a": 1}).derived == 7
    err = field_error(WithDerived, {"derived": 3})
    assert err.key == "derived"
    assert "(known: a)" in err.message


def test_unknown_keys_of_mixed_types_still_give_field_error() -> None:
    err = field_error(Ranged, {"bogus": 1, b"raw": 2})
    assert err.key in ("bogus", "b'raw'")


def test_a_single_non_str_unknown_key_is_named() -> None:
    err = field_error(Ranged, {b"baud": 1})
    assert err.key == "b'baud'"


def test_ignore_skips_someone_elses_keys() -> None:
    framework = frozenset({"driver", "limits"})
    assert build(Ranged, {"baud": 115200, "driver": "serial", "limits": {}}, ignore=framework) == Ranged(
        baud=115200
    )
    assert field_error(Ranged, {"baud": 1, "driver": "serial"}).key == "driver"
    assert field_error(Ranged, {"driver": "x", "bogus": 1}, ignore=framework).key == "bogus"


def test_ignored_keys_are_not_type_checked_or_passed_on() -> None:
    got = build(Ranged, {"driver": object()}, ignore=frozenset({"driver"}))
    assert got == Ranged()


# -- optional, unions ----------------------------------------------------------------------------


def test_optional_accepts_none_and_the_type() -> None:
    assert build(Optionals, {"name": None, "rate": None}) == Optionals()
    got = build(Optionals, {"name": "can0", "rate": 100})
    assert got.name == "can0"
    assert got.rate == 100.0
    assert type(got.rate) is float


def test_optional_wrong_type_names_the_key_and_the_arms() -> None:
    err = field_error(Optionals, {"name": 5})
    assert str(err) == "name: expected string, got int 5"
    err = field_error(Optionals, {"rate": True})
    assert str(err) == "rate: expected number, got bool True"


def test_union_tries_each_arm() -> None:
    assert build(Optionals, {"either": 3}).either == 3
    assert build(Optionals, {"either": "three"}).either == "three"
    err = field_error(Optionals, {"either": None})
    assert str(err) == "either: expected int or string, got NoneType None"
    assert field_error(Optionals, {"either": True}).key == "either"


# -- arrays and tables ---------------------------------------------------------------------------


def test_arrays_become_tuples() -> None:
    got = build(Containers, {"ids": [1, 2, 3], "names": ("a", "b")})
    assert got.ids == (1, 2, 3)
    assert got.names == ("a", "b")
    assert type(got.ids) is tuple


def test_array_item_errors_name_the_index() -> None:
    err = field_error(Containers, {"ids": [1, "x", 3]})
    assert err.key == "ids[1]"
    assert str(err) == "ids[1]: expected int, got string 'x'"


def test_array_field_refuses_non_arrays() -> None:
    assert (
        str(field_error(Containers, {"names": "abc"})) == "names: expected array of string, got string 'abc'"
    )
    assert field_error(Containers, {"ids": {"a": 1}}).key == "ids"


def test_tables_become_dicts() -> None:
    got = build(Containers, {"lines": {"estop": 17, "door": 22}, "gains": {"p": 1, "i": 0.5}})
    assert got.lines == {"estop": 17, "door": 22}
    assert got.gains == {"p": 1.0, "i": 0.5}
    assert type(got.gains["p"]) is float


def test_table_value_errors_name_the_dotted_key() -> None:
    err = field_error(Containers, {"lines": {"estop": 17, "door": "x"}})
    assert err.key == "lines.door"
    assert str(err) == "lines.door: expected int, got string 'x'"


def test_table_field_refuses_non_tables_and_non_str_keys() -> None:
    assert str(field_error(Containers, {"lines": [17]})) == "lines: expected table of int, got array [17]"
    assert field_error(Containers, {"lines": {1: 17}}).key == "lines"


def test_nested_containers_name_the_full_path() -> None:
    got = build(Containers, {"groups": [{"a": 1}, {"b": 2}]})
    assert got.groups == ({"a": 1}, {"b": 2})
    assert field_error(Containers, {"groups": [{"a": 1}, {"b": "x"}]}).key == "groups[1].b"


def test_optional_array() -> None:
    assert build(Containers, {"maybe_ids": None}).maybe_ids is None
    assert build(Containers, {"maybe_ids": [4]}).maybe_ids == (4,)
    err = field_error(Containers, {"maybe_ids": [4, "x"]})
    assert err.key == "maybe_ids[1]"  # X | None reports X's own, precise error
    assert err.message == "expected int, got string 'x'"


# -- Literal and Any -----------------------------------------------------------------------------


def test_literal_accepts_only_its_values() -> None:
    assert build(Choices, {"mode": "write", "level": 1}) == Choices(mode="write", level=1)
    err = field_error(Choices, {"mode": "erase"})
    assert str(err) == "mode: expected one of 'read', 'write', got 'erase'"


@pytest.mark.parametrize("value", [True, 1.0, "1"])
def test_literal_int_refuses_equal_values_of_other_types(value: Any) -> None:
    err = field_error(Choices, {"level": value})
    assert err.key == "level"


@pytest.mark.parametrize("value", [None, 1, "x", [1, {"a": b"b"}], {"k": object}])
def test_any_passes_the_value_through(value: Any) -> None:
    assert build(Choices, {"anything": value}).anything is value


# -- __post_init__ -------------------------------------------------------------------------------


def test_post_init_invalid_propagates_with_its_key() -> None:
    err = field_error(Ranged, {"baud": 0})
    assert err.key == "baud"
    assert str(err) == "baud: must be positive, got 0"
    assert build(Ranged, {"baud": 1}).baud == 1


def test_post_init_plain_value_error_becomes_a_table_error() -> None:
    err = field_error(PlainValueError, {"x": -1})
    assert err.key == ""
    assert str(err) == "x went negative"


def test_field_error_is_a_value_error_with_key_and_message() -> None:
    err = invalid("rate", "too fast")
    assert isinstance(err, ValueError)
    assert (err.key, err.message, str(err)) == ("rate", "too fast", "rate: too fast")
    assert str(FieldError("", "whole table")) == "whole table"


def test_results_are_frozen() -> None:
    got = build(Ranged, {"baud": 5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.baud = 6  # type: ignore[misc]


def test_not_a_dataclass_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a dataclass"):
        build(NotADataclass, {})


# -- describing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "text"),
    [
        (str, "string"),
        (int, "int"),
        (float, "number"),
        (bool, "bool"),
        (bytes, "bytes"),
        (Any, "any value"),
        (int | None, "int"),
        (int | str, "int or string"),
        (tuple[str, ...], "array of string"),
        (dict[str, float], "table of number"),
        (Literal["a", 1], "one of 'a', 1"),
        (tuple[int, ...] | None, "array of int"),
    ],
)
def test_describe_type(hint: Any, text: str) -> None:
    assert describe_type(hint) == text


def test_fields_doc() -> None:
    doc = {d["name"]: d for d in fields_doc(Scalars)}
    assert list(doc) == ["s", "i", "f", "b", "raw"]
    assert doc["s"] == {"name": "s", "type": "string", "required": True, "default": None}
    assert doc["raw"] == {"name": "raw", "type": "bytes", "required": False, "default": b""}
    containers = {d["name"]: d for d in fields_doc(Containers)}
    assert containers["lines"]["default"] == {}  # from the default_factory
    assert containers["lines"]["required"] is False
    assert [d["name"] for d in fields_doc(WithDerived)] == ["a"]
