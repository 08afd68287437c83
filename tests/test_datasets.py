"""Tests for the bundled example data sets (``glmm_sm.datasets``)."""

import numpy as np
import pandas as pd
import pytest

import glmm_sm.datasets as ds

EXPECTED_ROWS = {
    "salamander": 360,
    "BoothHobert": 150,
    "Booth2": 150,
    "bacteria": 220,
    "cbpp2": 842,
    "murder": 1308,
    "radish2": 233,
}

EXPECTED_DTYPES = {
    "salamander": {"Mate": "int64", "Cross": "category", "Female": "category", "Male": "category"},
    "BoothHobert": {"y": "int64", "x1": "float64", "z1": "category"},
    "Booth2": {"y": "int64", "x1": "float64", "z1": "category", "z2": "int64"},
    "bacteria": {
        "y": "category",
        "ap": "category",
        "hilo": "category",
        "week": "int64",
        "ID": "category",
        "trt": "category",
        "y2": "int64",
    },
    "cbpp2": {"Y": "int64", "period": "category", "herd": "category"},
    "murder": {"y": "int64", "race": "category", "black": "category", "white": "category"},
    "radish2": {
        "Site": "category",
        "Block": "category",
        "Region": "category",
        "Pop": "category",
        "varb": "category",
        "resp": "int64",
        "id": "int64",
    },
}


def test_all():
    assert ds.__all__ == ["load", "names", "describe"]


def test_names():
    assert ds.names() == [
        "Booth2",
        "BoothHobert",
        "bacteria",
        "cbpp2",
        "murder",
        "radish2",
        "salamander",
    ]


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_load_rows_and_dtypes(name):
    df = ds.load(name)
    assert isinstance(df, pd.DataFrame)
    assert len(df) == EXPECTED_ROWS[name]
    assert df.dtypes.astype(str).to_dict() == EXPECTED_DTYPES[name]
    assert not df.isna().any().any()


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_describe(name):
    text = ds.describe(name)
    assert isinstance(text, str)
    assert str(EXPECTED_ROWS[name]) in text
    assert "\n" not in text


def test_salamander():
    df = ds.load("salamander")
    expected = [str(i) for i in range(10, 70)]
    for col in ("Female", "Male"):
        assert isinstance(df[col].dtype, pd.CategoricalDtype)
        assert not df[col].cat.ordered
        assert len(df[col].cat.categories) == 60
        assert list(df[col].cat.categories) == expected
    assert list(df["Cross"].cat.categories) == ["R/R", "R/W", "W/R", "W/W"]
    assert df["Mate"].dtype == np.int64
    assert set(df["Mate"].unique()) == {0, 1}
    assert df.loc[0, "Cross"] == "R/R"


def test_booth_hobert():
    df = ds.load("BoothHobert")
    assert list(df["z1"].cat.categories) == [str(i) for i in range(1, 11)]
    assert df["y"].dtype == np.int64
    assert df["x1"].dtype == np.float64
    np.testing.assert_allclose(df["x1"].iloc[:15], np.arange(1, 16) / 15)
    # Numeric level order: "10" is the last level, not the second.
    assert (df["z1"].cat.codes.to_numpy() == np.repeat(np.arange(10), 15)).all()


def test_bacteria_trt_order():
    df = ds.load("bacteria")
    assert list(df["trt"].cat.categories) == ["placebo", "drug", "drug+"]
    assert len(df["ID"].cat.categories) == 50
    assert ((df["y"] == "y") == (df["y2"] == 1)).all()


def test_numeric_level_order_other_sets():
    assert list(ds.load("cbpp2")["herd"].cat.categories) == [str(i) for i in range(1, 16)]
    assert list(ds.load("radish2")["Block"].cat.categories) == [str(i) for i in range(1, 11)]
    murder = ds.load("murder")
    assert murder["y"].between(1, 7).all()
    assert list(murder["race"].cat.categories) == ["Black", "White"]


def test_unknown_name():
    with pytest.raises(ValueError) as excinfo:
        ds.load("nonexistent_data")
    message = str(excinfo.value)
    assert "nonexistent_data" in message
    for name in ds.names():
        assert name in message
    with pytest.raises(ValueError, match="salamander"):
        ds.describe("frogs")


def test_non_string_name():
    with pytest.raises(TypeError):
        ds.load(1)
    with pytest.raises(TypeError):
        ds.describe(None)


@pytest.mark.parametrize("alias", ["boothhobert", "BOOTHHOBERT", "BoothHobert", "bOoThHoBeRt"])
def test_case_insensitive(alias):
    df = ds.load(alias)
    pd.testing.assert_frame_equal(df, ds.load("BoothHobert"))
    assert ds.describe(alias) == ds.describe("BoothHobert")


def test_fresh_copies():
    first = ds.load("salamander")
    first.loc[:, "Mate"] = 7
    first["extra"] = 1.0
    first["Cross"] = first["Cross"].cat.rename_categories(["a", "b", "c", "d"])
    second = ds.load("salamander")
    assert first is not second
    assert set(second["Mate"].unique()) == {0, 1}
    assert "extra" not in second.columns
    assert list(second["Cross"].cat.categories) == ["R/R", "R/W", "W/R", "W/W"]


def test_corrupted_factor_value_is_detected(monkeypatch):
    original = ds._read_levels

    def truncated_levels():
        meta = original()
        meta["bacteria"]["factors"]["trt"]["levels"] = ["placebo", "drug"]
        return meta

    monkeypatch.setattr(ds, "_read_levels", truncated_levels)
    with pytest.raises(ValueError, match="drug\\+"):
        ds.load("bacteria")
