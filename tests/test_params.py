"""RPC parameters checked for form: CLN's amount forms, strict booleans, hashes and node ids; fuzzed."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncln import params
from asyncln.errors import AsynclnError, Code


@pytest.mark.parametrize("value, msat", [
    (1000, 1000), ("1000", 1000), ("1000msat", 1000), ("1sat", 1000), ("0.00000001btc", 1000),
    ("1btc", 100_000_000_000), ("0.00000000001btc", 1), (0, 0),
])
def test_amounts_in_every_form_lightning_cli_accepts(value, msat):
    assert params.amount("amount_msat", value) == msat


@pytest.mark.parametrize("value", [
    "lots", "-1", -1, "1.5sat", "1 sat", "0.000000000001btc", True, None, 1.5, "", "1000SAT", [], {},
])
def test_malformed_amounts_name_the_parameter_and_the_forms(value):
    with pytest.raises(AsynclnError) as e:
        params.amount("maxfee_msat", value)
    assert e.value.code == Code.INVALID_PARAMS
    assert "maxfee_msat" in str(e.value) and '"1sat"' in str(e.value)


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("true", True), ("false", False)])
def test_booleans(value, expected):
    assert params.boolean("clear", value) is expected


@pytest.mark.parametrize("value", ["maybe", "yes", "1", 1, 0, "True", None, ""])
def test_anything_else_is_not_a_boolean(value):
    with pytest.raises(AsynclnError) as e:
        params.boolean("clear", value)
    assert e.value.code == Code.INVALID_PARAMS and "true or false" in str(e.value)


def test_hashes_and_node_ids_are_checked_for_form():
    assert params.payment_hash("payment_hash", "AB" * 32) == "ab" * 32
    assert params.node_id("trampoline", "02" + "CD" * 32) == "02" + "cd" * 32
    for bad in ("xyz", "ab" * 31, "ab" * 33, 12345, None, "04" + "cd" * 32):
        for check in (params.payment_hash, params.node_id):
            with pytest.raises(AsynclnError) as e:
                check("x", bad)
            assert e.value.code == Code.INVALID_PARAMS


def test_integers_are_whole_and_not_negative():
    assert params.integer("count", 3) == 3 and params.integer("count", "3") == 3
    for bad in (-1, "-1", 1.0, True, "three", "٣"):
        with pytest.raises(AsynclnError):
            params.integer("count", bad)


@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
                 st.lists(st.integers(), max_size=2)))
def test_every_checker_accepts_or_raises_only_invalid_params(value):
    for check in (params.amount, params.integer, params.boolean, params.payment_hash, params.node_id,
                  params.text):
        try:
            check("p", value)
        except AsynclnError as e:
            assert e.code == Code.INVALID_PARAMS and str(e).startswith("p: ")
