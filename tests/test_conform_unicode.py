"""Unicode in names and addresses: invisible characters removed, NFKC, Cyrillic and Greek
look-alike letters in Latin (Unicode TR39 confusables), and every other letter kept and
flagged, never dropped -- in the standardiser and through `conform_source`."""

from __future__ import annotations

import unicodedata

import polars as pl
import pytest

from ids_lakehouse.conform import standardise as std
from ids_lakehouse.conform.mapping import conform_source
from ids_lakehouse.sources import load_sources
from schemas.silver import contract
from tests.test_conform import medicaid_rows, traveller_rows

CYRILLIC_DZE, CYRILLIC_ES = "\u0405", "\u0421"   # look like Latin S and Latin C
INVISIBLE = {"zero width space": "\u200b", "zero width non-joiner": "\u200c",
             "zero width joiner": "\u200d", "word joiner": "\u2060",
             "byte order mark": "\ufeff", "soft hyphen": "\u00ad"}


def standardise(values: list[str | None], fn=std.name) -> list[tuple[str | None, str]]:
    raw = pl.lit(pl.Series(values, dtype=pl.String))
    out = pl.select(fn(raw).alias("v"), std.text_status(raw, fn(raw)).alias("s"))
    return out.rows()


@pytest.mark.parametrize("raw,expected", [
    (CYRILLIC_DZE + "MITH", "SMITH"),                           # Cyrillic Ѕ in a Latin name
    ("S\u041c\u0406\u0422\u041d", "SMITH"),                     # Cyrillic М, І, Т, Н
    ("Sm\u0456th", "SMITH"),                                    # Cyrillic small і
    ("J\u043ehn", "JOHN"),                                      # Cyrillic small о
    ("\u039aate", "KATE"),                                      # Greek capital kappa
    ("M\u03b1ria", "MARIA"),                                    # Greek small alpha
])
def test_look_alike_letters_become_latin(raw, expected):
    assert standardise([raw]) == [(expected, "transliterated")]


def test_a_cyrillic_es_is_a_c_and_no_letter_is_lost():
    # The tester's "SMITH" with a Cyrillic С first came out as "MITH". С's Latin look-alike
    # is C (TR39: 0421 -> 0043), so the five letters stay and the field is flagged.
    assert standardise([CYRILLIC_ES + "MITH"]) == [("CMITH", "transliterated")]


@pytest.mark.parametrize("label", sorted(INVISIBLE))
def test_an_invisible_character_inside_a_name_leaves_one_token(label):
    assert standardise([f"Mary{INVISIBLE[label]}Jane", f"{INVISIBLE[label]}Lee"]) == [
        ("MARYJANE", "valid"), ("LEE", "valid")]


def test_every_format_character_is_removed():
    cf = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"]
    out = standardise([f"Mary{c}Jane" for c in cf])
    assert {v for v, _ in out} == {"MARYJANE"}, len(cf)


@pytest.mark.parametrize("raw,expected", [
    ("\u0418\u0432\u0430\u043d\u043e\u0432", "\u0418\u0412\u0410\u041d\u041e\u0412"),  # Иванов
    ("\u0412\u0435\u0440\u0430", "\u0412\u0415\u0420\u0410"),  # Вера: wholly Cyrillic, kept
    ("\u039d\u03af\u03ba\u03bf\u03c2", "\u039d\u038a\u039a\u039f\u03a3"),  # Νίκος
    ("\u674e\u5c0f\u9f8d", "\u674e\u5c0f\u9f8d"),             # 李小龍
    ("\u0930\u093e\u092e", "\u0930\u093e\u092e"),             # राम: vowel sign kept
    ("\u0418\u0432\u0430\u043d Smith", "\u0418\u0412\u0410\u041d SMITH"),
    ("Gr\u0259ham", "GR\u018fHAM"),                           # a Latin letter with no ASCII
])
def test_unmappable_letters_are_kept_and_flagged_not_emptied(raw, expected):
    assert standardise([raw]) == [(expected, "unmapped")]


@pytest.mark.parametrize("raw,expected", [
    ("Jos\u00e9", "JOSE"), ("N\u00fa\u00f1ez", "NUNEZ"), ("Zo\u00eb", "ZOE"),
    ("\u0141ukasz", "LUKASZ"), ("S\u00f8ren", "SOREN"), ("Stra\u00dfe", "STRASSE"),
    ("\uff33\uff2d\uff29\uff34\uff28", "SMITH"),               # full-width (NFKC)
    ("\ufb01nn", "FINN"),                                      # ligature fi (NFKC)
    ("Anne\u2010Marie", "ANNE-MARIE"),                         # Unicode hyphen
    ("Ka\u02bbahumanu", "KAAHUMANU"),                          # ʻokina, as an apostrophe
    ("O\u2019Brien", "OBRIEN"),
])
def test_latin_letters_keep_working(raw, expected):
    assert standardise([raw]) == [(expected, "valid")]


def test_no_letter_is_ever_dropped():
    """Every letter of Unicode (as Python knows it), between two Latin letters, comes out
    with as many letters as its NFKC form has. (NFKC turns a few presentation forms of
    diacritics into a space and a combining mark, and Hangul fillers are invisible;
    apostrophe-like letters are removed as "'" is.)"""
    def letters(s: str) -> int:
        # a letter newer than Python's Unicode tables is unassigned (Cn) to it
        return sum(unicodedata.category(c)[0] == "L" or unicodedata.category(c) == "Cn"
                   for c in s if c not in std.APOSTROPHES)

    values = [f"A{chr(c)}B" for c in range(0x80, 0x30000)
              if unicodedata.category(chr(c))[0] == "L" and chr(c) not in std.APOSTROPHES]
    out = pl.select(std.name(pl.lit(pl.Series(values)))).to_series().to_list()
    lost = [v for v, o in zip(values, out)
            if o is None or letters(o) < letters(std.clean_text(v))]
    assert len(values) > 100_000 and not lost, lost[:10]


def test_streets_and_cities_too():
    assert standardise(["1 M\u0430in St.", "12 Rue de l\u2019\u00c9glise", "\u0663 Elm Ave #4"],
                       std.street) == [("1 MAIN ST", "transliterated"),
                                       ("12 RUE DE LEGLISE", "valid"), ("3 ELM AVE #4", "valid")]
    assert standardise(["\u0405eattle", "Sea\u200bttle"]) == [("SEATTLE", "transliterated"),
                                                              ("SEATTLE", "valid")]


def test_only_distinct_non_ascii_values_reach_python(monkeypatch):
    calls = []
    real = std.fold_text.__wrapped__

    def counting(value: str) -> str:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(std, "fold_text", counting)
    def name(values: list[str | None]) -> list[str | None]:
        return pl.select(std.name(pl.lit(pl.Series(values, dtype=pl.String)))).to_series()

    ascii_only = ["SMITH", "O'NEIL", None] * 1000
    assert name(ascii_only)[0] == "SMITH" and calls == []
    out = name(ascii_only + ["Jos\u00e9"] * 500 + ["\u0405mith"] * 500)
    assert sorted(calls) == sorted(["Jos\u00e9", "\u0405mith"])   # once per distinct value
    assert out.tail(1).to_list() == ["SMITH"]


# -- through conform_source ---------------------------------------------------------------

@pytest.fixture
def medicaid():
    return load_sources()["medicaid"]


def test_conform_standardises_unicode_names_and_flags_them(medicaid):
    bronze = medicaid_rows(
        {"last_name": CYRILLIC_DZE + "MITH", "first_name": "Mary\u200bJane"},
        {"last_name": "\u0418\u0432\u0430\u043d\u043e\u0432", "middle_name": ""},
        {"city": "\u0405eattle", "address_line1": "1 M\u0430in St"},
        {"last_name": "Jos\u00e9 Jr"},
    )
    result = conform_source(medicaid, bronze, contract)
    assert result.quarantine.height == 0   # flagged on the field; the record is kept
    person = result.entities["person_record"].sort("_row_number")
    assert person["last_name"].to_list() == ["SMITH", "\u0418\u0412\u0410\u041d\u041e\u0412",
                                             "LEE", "JOSE"]
    assert person["name_suffix"].to_list() == [None, None, None, "JR"]
    assert person["first_name"][0] == "MARYJANE"
    assert person["last_name_raw"].to_list()[:2] == [CYRILLIC_DZE + "MITH",
                                                     "\u0418\u0432\u0430\u043d\u043e\u0432"]
    assert person["name_status"].to_list() == ["transliterated", "unmapped", "valid", "valid"]
    assert person["city"][2] == "SEATTLE" and person["street"][2] == "1 MAIN ST"
    assert person["address_status"].to_list() == ["valid", "valid", "transliterated", "valid"]


def test_conform_parses_one_line_names_after_removing_invisible_characters():
    travellers = load_sources()["travellers"]
    bronze = traveller_rows({"full_name": "LEE,\u200b Mary\u200bJane", "destination_address":
                             "1234 Smith\u00a0Avenue, Seattle WA 98101"})
    result = conform_source(travellers, bronze, contract)
    assert result.quarantine.height == 0
    row = result.entities["person_record"].row(0, named=True)
    assert (row["first_name"], row["last_name"], row["name_status"]) == (
        "MARYJANE", "LEE", "valid")
    assert (row["zip"], row["zip_status"], row["county_fips"]) == ("98101", "valid", "033")
