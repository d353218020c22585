"""Real-time matching scores with the nightly model: on the published lake's records, and
on copies of them changed the ways records differ (nulls, typos, swapped names,
transposed dates, nicknames, one name in the other's place, identifiers one edit apart,
numeric neighbours or of another type, typos in the street and ZIP), the
real-time index pairs exactly the records Splink's blocking pairs and gives each pair
Splink's levels and probability."""

from __future__ import annotations

import polars as pl
import pytest

from ids_lakehouse import delta
from ids_lakehouse.config import Lake
from ids_lakehouse.identity import linkage, mpi, realtime
from tests.linkage_variants import variants


@pytest.fixture(scope="module")
def scored(published) -> tuple[pl.DataFrame, realtime.Index, pl.DataFrame]:
    lake = Lake(published)
    people = delta.frame(lake.silver("person_record"), columns=linkage.SILVER_COLUMNS)
    people = pl.concat([people, variants(people)])
    records = linkage.linkage_input(people)
    model, tf, version = linkage.load_model(mpi.models_dir(lake)) or pytest.fail("no model")
    xref = records.select("unique_id", pl.col("unique_id").alias("person_id"))
    index = realtime.Index(people, xref, model, tf, version)
    splink = linkage.predict(records, model, tf, spill=lake.spill(), floor=0.0)
    return records, index, splink


def test_the_index_pairs_what_the_models_blocking_pairs(scored):
    records, index, splink = scored
    ids = records["unique_id"].to_list()
    keys = realtime._keys(records)
    ours = {tuple(sorted((ids[i], ids[j]))) for i in range(len(ids))
            for j in index.blocked(keys, i) if j != i}
    theirs = set(zip(splink["unique_id_l"], splink["unique_id_r"], strict=True))
    assert len(theirs) > 5_000
    assert ours == theirs


def test_a_prediction_scored_in_parts_equals_one_scored_whole(scored, published,
                                                             monkeypatch):
    """Parts of the records are scored one after another (IDS_LINKAGE_CHUNKS, so memory
    holds one part's candidate pairs): the same pairs, levels and probabilities."""
    records, _, whole = scored
    lake = Lake(published)
    model, tf, _ = linkage.load_model(mpi.models_dir(lake)) or pytest.fail("no model")
    monkeypatch.setenv("IDS_LINKAGE_CHUNKS", "3")
    parts = linkage.predict(records, model, tf, spill=lake.spill(), floor=0.0)
    key = ["unique_id_l", "unique_id_r"]
    assert parts.height == whole.height > 5_000
    assert parts.select(key).n_unique() == parts.height
    joined = whole.join(parts, on=key, how="full", suffix="_part")
    assert joined.filter(pl.col("unique_id_l_part").is_null()).height == 0
    for g in linkage.GAMMAS:
        assert (joined[f"gamma_{g}"] == joined[f"gamma_{g}_part"]).all(), g
    assert (joined["match_probability"] - joined["match_probability_part"]).abs().max() < 1e-12


def test_each_pair_gets_the_models_levels_and_probability(scored):
    records, index, splink = scored
    row_of = {u: i for i, u in enumerate(records["unique_id"].to_list())}
    people = realtime.records(records)
    gammas = [f"gamma_{g}" for g in linkage.GAMMAS]
    worst, checked = 0.0, 0
    for pair in splink.iter_rows(named=True):
        weight, levels = index.weights.score(people[row_of[pair["unique_id_l"]]],
                                             people[row_of[pair["unique_id_r"]]])
        assert levels == tuple(pair[g] for g in gammas), pair["unique_id_l"]
        assert weight == pytest.approx(pair["match_weight"], abs=1e-9)
        worst = max(worst, abs(realtime.probability(weight) - pair["match_probability"]))
        checked += 1
    assert worst < 1e-9 and checked == splink.height
    # Every level of every comparison was exercised by these pairs.
    for name, g in zip(linkage.GAMMAS, gammas, strict=True):
        assert splink[g].n_unique() == len(realtime.LEVELS[name]), name


def test_a_model_the_scorer_does_not_implement_is_refused(published):
    lake = Lake(published)
    model, tf, _ = linkage.load_model(mpi.models_dir(lake)) or pytest.fail("no model")
    changed = model | {"comparisons": [
        c | {"comparison_levels": c["comparison_levels"][:-2] + c["comparison_levels"][-1:]}
        if c["output_column_name"] == "dob" else c for c in model["comparisons"]]}
    with pytest.raises(realtime.ModelMismatch, match="comparisons"):
        realtime.Weights.of(changed, tf)
    rules = model | {"blocking_rules_to_generate_predictions":
                     model["blocking_rules_to_generate_predictions"][:-1]}
    with pytest.raises(realtime.ModelMismatch, match="blocking rules"):
        realtime.Weights.of(rules, tf)


def test_a_lookup_without_optional_fields_is_standardised_as_with_them():
    """The optional fields nobody in a batch gave are not standardised (their outputs are
    a null's, computed once): the same person reads the same alone as beside someone who
    gave every field, and as conform reads it."""
    import json

    from ids_lakehouse.sharing.lookups import LookupBody, standardise

    bare = {"ref": "a", "first_name": "Suzie", "last_name": "Jenkins", "dob": "1980-06-24",
            "phone": "(458) 750-9026"}
    full = {"ref": "b", "first_name": "Al", "middle_name": "J", "last_name": "Roe",
            "dob": "1970-01-02", "ssn": "536-22-1457", "zip": "98101", "street": "1 Main St",
            "national_id": "X1", "national_id_type": "PASSPORT"}
    def read(*people: dict) -> tuple:
        return standardise(LookupBody.parse(json.dumps({"people": people}).encode()).people,
                           None)

    alone, _, unused_alone = read(bare)
    both, _, unused_both = read(bare, full)
    assert alone.equals(both.head(1)) and unused_alone[0] == unused_both[0]
    assert (both.row(1, named=True)["ssn"], both.row(1, named=True)["zip"]) == \
        ("536221457", "98101")


def test_values_kept_between_batches_read_as_when_first_standardised():
    """Names, sex and postcodes are taken from earlier batches when all of a batch's are
    known: the same linkage input as standardising them afresh, alone or beside others.
    A field the agreement withholds is not read at all: as if the partner had not given
    it, and named as not permitted."""
    import json

    from ids_lakehouse.sharing import lookups
    from ids_lakehouse.sharing.lookups import LookupBody, standardise

    people = [
        {"ref": "a", "first_name": "  José-María ", "last_name": "O'Neil Jr.",
         "dob": "1980-06-24", "sex": "f", "zip": "98101-1234", "phone": "(458) 750-9026"},
        {"ref": "b", "first_name": "ＡＮＮ", "middle_name": "q", "last_name": "van der Berg",
         "dob": "1970-01-02", "zip": "ABCDE", "ssn": "536-22-1457", "street": "1 Main St."},
        {"ref": "c", "first_name": "Bob", "last_name": "Smith", "dob": "2001-12-31",
         "sex": "M", "zip": "00000", "national_id": "X1", "national_id_type": "PASSPORT"}]

    def parsed(*given: dict) -> list:
        return LookupBody.parse(json.dumps({"people": given}).encode()).people

    lookups._KEPT.clear()
    fresh, problems, unused = standardise(parsed(*people), None, "agreement-a")
    assert lookups._KEPT, "nothing was kept"
    assert {k[0] for k in lookups._KEPT} == {"agreement-a"}     # kept for it alone
    again, problems_again, unused_again = standardise(parsed(*people), None, "agreement-a")
    assert fresh.equals(again) and (problems, unused) == (problems_again, unused_again)
    for i, person in enumerate(people):
        alone = standardise(parsed(person), None, "agreement-a")[0]
        assert alone.drop("unique_id").equals(fresh[i].drop("unique_id")), person["ref"]

    permitted = frozenset({"person_id", "first_name", "last_name", "dob", "zip", "phone"})
    withheld, _, unused = standardise(parsed(*people), permitted, "agreement-a")
    kept = ("ref", "first_name", "last_name", "dob", "zip", "phone")
    bare = standardise(parsed(*({k: v for k, v in p.items() if k in kept} for p in people)))[0]
    assert withheld.equals(bare)
    assert unused[0]["sex"] == "not_permitted" and unused[2]["national_id"] == "not_permitted"
    assert {"middle_name", "ssn", "street"} <= set(unused[1])
    assert all(u[f] == "not_permitted" for u in unused for f in u if f not in ("zip", "phone"))
    # A type given without its id is named too (it was dropped without a word).
    typed = parsed({"ref": "d", "first_name": "Ann", "last_name": "Lee", "dob": "1990-01-01",
                    "national_id_type": "PASSPORT"})
    assert standardise(typed, permitted)[2] == [{"national_id": "not_permitted"}]


def _person(first: str, last: str, ssn: str | None = None, dob: str = "2010-05-04",
            street: str | None = "1 MAIN ST", zip_: str | None = "12345") -> realtime.Record:
    import datetime as dt

    born = dt.date.fromisoformat(dob)
    return realtime.Record(first, frozenset(), None, last, born, born.strftime("%Y%m%d"), None,
                           ssn, ssn[-4:] if ssn else None, None, None, street, zip_, None)


def _levels(q: realtime.Record, r: realtime.Record) -> dict[str, int]:
    return {name: realtime.GAMMA[name](q, r) for name in linkage.GAMMAS}


def test_the_levels_the_code_names_are_the_models_levels():
    """Guards and lookups read levels by number: each number is its label's."""
    g = realtime._gamma
    assert linkage.FIRST_NAME_DISAGREES == g("first_name", "All other comparisons")
    assert linkage.FIRST_NAME_CROSSED == g("first_name", "one name in the other's place")
    assert linkage.FIRST_NAME_SWAPPED == g("first_name", "first and last swapped")
    assert linkage.LAST_NAME_SWAPPED == g("last_name", "first and last swapped")
    assert linkage.DOB_SAME_YEAR == g("dob", "same year")
    assert linkage.IDENTIFIER_EXACT == g("identifier", "exact")
    assert linkage.IDENTIFIER_ONE_EDIT_APART == g("identifier", linkage.IDENTIFIER_TYPO_LABEL)
    assert linkage.IDENTIFIER_ONE_EDIT == g("identifier", "one edit apart")


def test_a_lookup_confirms_only_exact_names_or_nicknames():
    """A first name close to the surname reaches "first and last swapped" (typo-tolerant):
    that is not a confirmation (found by a tester: WILLAIM WILLIAMS matched)."""
    person = _person("WILLIAM", "WILLIAMS")
    for typed in ("WILLAIM", "WILLIAMS", "WILLIAMSON"):
        levels = _levels(_person(typed, "WILLIAMS"), person)
        assert not realtime._agree(tuple(levels.values()), realtime.CONFIRMED), typed
    assert realtime._agree(tuple(_levels(person, person).values()), realtime.CONFIRMED)


def test_twins_with_close_identifiers_and_crossed_names_stay_held():
    """Twins (same surname, birth date, address) whose SSNs were issued in sequence, 1 to
    999 apart, one digit different: held for review; a typo further away lifts the guard.
    A first name that is the other's surname is no agreement for the guard."""
    for a, b in (("123456715", "123456716"), ("123456715", "123456725"),
                 ("123456715", "123456815"), ("123456715", "123456015")):
        levels = _levels(_person("OLIVIA", "HARRINGTON", a), _person("AMELIA", "HARRINGTON", b))
        assert linkage.held_reason(levels["first_name"], levels["identifier"], levels["dob"],
                                   levels["last_name"]) == linkage.TWINS_GUARD, (a, b)
    levels = _levels(_person("OLIVIA", "HARRINGTON", "123456715"),
                     _person("AMELIA", "HARRINGTON", "123450715"))
    assert levels["identifier"] == linkage.IDENTIFIER_ONE_EDIT_APART
    assert linkage.held_reason(levels["first_name"], levels["identifier"], levels["dob"],
                               levels["last_name"]) is None
    # Two adjacent digits transposed move the number by a multiple of 9: under 1,000
    # apart the two may have been issued in sequence (a tester merged 27 of 27 such twins
    # when transpositions 90 or more apart were lifted), 1,000 or more apart it is a typo.
    for b, lifted in (("123456751", False), ("123456789", False), ("123456175", False),
                      ("123457615", False), ("123465715", True)):
        levels = _levels(_person("OLIVIA", "HARRINGTON", "123456715"),
                         _person("AMELIA", "HARRINGTON", b))
        assert (levels["identifier"] == linkage.IDENTIFIER_ONE_EDIT_APART) == lifted, b
        assert (linkage.held_reason(levels["first_name"], levels["identifier"],
                                    levels["dob"], levels["last_name"]) is None) == lifted, b
    crossed = _levels(_person("JAMES", "THOMAS", street="1 A ST"),
                      _person("THOMAS", "LEE", street="2 B ST"))
    assert crossed["first_name"] == linkage.FIRST_NAME_CROSSED
    assert linkage.held_reason(crossed["first_name"], crossed["identifier"],
                               crossed["dob"], crossed["last_name"]) == linkage.TWINS_GUARD


def test_names_either_way_block_only_when_both_names_are_known():
    """The swapped-names blocking key is null when a name is missing, in Splink's SQL and
    in the index: DuckDB's least() and greatest() skip nulls and would have put every
    record with a lone surname in one block with every other of that surname."""
    import duckdb

    rows = [("ANN", None), (None, "ANN"), ("LEE", "ANN"), ("ANN", "LEE")]
    values = ", ".join("(" + ", ".join("NULL" if v is None else f"'{v}'" for v in r) + ")"
                       for r in rows)
    sql = duckdb.sql(f"SELECT {linkage.NAMES_EITHER_WAY} FROM (VALUES {values}) "
                     "t(first_name, last_name)").fetchall()
    assert [k for (k,) in sql] == [None, None, "ANN|LEE", "ANN|LEE"]
    frame = pl.DataFrame(rows, schema={"first_name": pl.String, "last_name": pl.String},
                         orient="row")
    assert frame.select(realtime._names_either_way())["first_name"].to_list() == \
        [None, None, "ANN|LEE", "ANN|LEE"]


def test_first_and_last_swapped_is_counted_once(published):
    """Both name comparisons see a swap; its weight is the first name's alone (the last
    name's swap level is fixed at m = u). Counted twice it outweighed both names agreeing
    exactly, and a second JACK RYAN, written RYAN JACK, born another day, living
    elsewhere, with no identifier, was linked to the first."""
    lake = Lake(published)
    model, tf, _ = linkage.load_model(mpi.models_dir(lake)) or pytest.fail("no model")
    weights = realtime.Weights.of(model, tf)
    swap = realtime._gamma("last_name", "first and last swapped")
    assert weights.levels["last_name"][swap] == 0.0
    assert weights.levels["first_name"][realtime._gamma("first_name", "first and last swapped")] > 0
    jack, ryan = (_person("JACK", "RYAN", dob="1969-07-24"),
                  _person("RYAN", "JACK", dob="1940-01-14", street="22 ECHO PL", zip_="99999"))
    weight, levels = weights.score(jack, ryan)
    assert levels[linkage.GAMMAS.index("first_name")] == linkage.FIRST_NAME_SWAPPED
    assert realtime.probability(weight) < linkage.MATCH_THRESHOLD


def test_a_surname_typo_with_the_same_first_name_is_no_swap():
    """JOHN JOHNSON / JOHN JOHNSTON met the swap condition (initials and Jaro-Winkler of
    first against last): the surname took the swap level, weight 0, and the swap guard."""
    levels = _levels(_person("JOHN", "JOHNSON"), _person("JOHN", "JOHNSTON"))
    assert levels["last_name"] == realtime._gamma(
        "last_name", "Jaro-Winkler distance of last_name >= 0.92")
    assert levels["first_name"] == realtime._gamma("first_name", "Exact match on first_name")


def test_swapped_names_without_a_date_of_birth_or_identifier_are_held():
    """A tester's RYAN JACK / JACK RYAN, one date of birth missing, one ZIP, no
    identifier, was linked at 0.98: the swap level has no term-frequency adjustment. Held
    for a steward; a date of birth within one edit, or an identifier, lets it through."""
    def reason(a: realtime.Record, b: realtime.Record) -> str | None:
        levels = _levels(a, b)
        return linkage.held_reason(levels["first_name"], levels["identifier"], levels["dob"],
                                   levels["last_name"])

    ryan = _person("RYAN", "JACK", street="22 ECHO PL")
    undated = realtime.Record("JACK", frozenset(), None, "RYAN", None, None, None, None, None,
                              None, None, "1 MAIN ST", "12345", None)
    assert reason(undated, ryan) == linkage.SWAP_UNCONFIRMED
    assert reason(_person("JACK", "RYAN", dob="2010-05-14"), ryan) is None   # one edit
    assert reason(_person("JACK", "RYAN", ssn="123456789"),
                  _person("RYAN", "JACK", ssn="123456789")) is None
    assert reason(undated, _person("JACK", "RYAN")) is None   # not swapped: the model's
    # A nickname of the other's surname takes the first name's nickname level: the guard
    # reads the last name's swap level too (a tester's JOHN JACK / JACK JOHN).
    john = realtime.Record("JOHN", frozenset({"JOHN", "JACK", "JOHNNY"}), None, "JACK", None,
                           None, None, None, None, None, None, "1 MAIN ST", "12345", None)
    jack = _person("JACK", "JOHN")
    assert _levels(john, jack)["first_name"] == realtime._gamma("first_name", "nickname")
    assert reason(john, jack) == linkage.SWAP_UNCONFIRMED


def _sql_same_address(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """linkage.SAME_ADDRESS as DuckDB evaluates it, for (street, zip) a and b."""
    import duckdb

    row = duckdb.sql(f"SELECT coalesce({linkage.SAME_ADDRESS}, false) FROM (SELECT ? AS "
                     "street_l, ? AS zip_l, ? AS street_r, ? AS zip_r)",
                     params=[*a, *b]).fetchone()
    assert row is not None
    return bool(row[0])


def test_a_neighbour_is_not_the_same_address_and_a_typo_is():
    """'Same street and ZIP, or one typo': a letter typo in the street, or two adjacent
    ZIP digits transposed. Neighbours are not typos: another house or flat number, or a
    ZIP one digit off (a tester's JOHN SMITHs at 2600 and 2601)."""
    same = realtime._gamma("location", "same street and ZIP, or one typo")

    def level(street: str, zip_: str) -> int:
        got = _levels(_person("JOHN", "SMITH", street="12 MAIN STREET", zip_="2650"),
                      _person("JOHN", "SMITH", street=street, zip_=zip_))["location"]
        # the model's SQL says the same, either way round
        for a, b in ((("12 MAIN STREET", "2650"), (street, zip_)),
                     ((street, zip_), ("12 MAIN STREET", "2650"))):
            assert _sql_same_address(a, b) == (got == same), (a, b)
        return got

    for street, zip_ in (("12 MAIN STREET", "2650"), ("12 MAIN STRET", "2650"),
                         ("12 MAINSTREET", "2650"), ("12 MAIN STREET", "2560"),
                         ("12 MAIM STREET", "6250")):
        assert level(street, zip_) == same, (street, zip_)
    for street, zip_ in (("13 MAIN STREET", "2650"), ("12 MAIN STREET", "2651"),
                         ("1 MAIN STREET", "2650"), ("12 MAIN STREET APT 1", "2650"),
                         ("12 MAIN STRET", "2651"), ("12 N MAIN STREET", "2650")):
        assert level(street, zip_) != same, (street, zip_)
    # a letter that is a flat, a direction or a street type is a neighbour too
    for a, b in (("12 MAIN ST APT A", "12 MAIN ST APT B"), ("12 N MAIN ST", "12 S MAIN ST"),
                 ("12 ELM ST", "12 ELM CT"), ("12 OAK RD", "12 OAK DR"),
                 ("400 OAK AVE 3A", "400 OAK AVE 3B"), ("12 3RD ST", "1 23RD ST"),
                 ("12 THETA ST APT 305A", "12 THETA ST APT 305B"),
                 ("16-A KAPPA ST", "16-B KAPPA ST"), ("1 MAIN ST APT-A", "1 MAIN ST APT-B")):
        assert _levels(_person("JOHN", "SMITH", street=a),
                       _person("JOHN", "SMITH", street=b))["location"] != same, (a, b)
        assert not _sql_same_address((a, "12345"), (b, "12345")), (a, b)
    # A street in another script is compared as written (Python's and DuckDB's Unicode
    # tables differ: a letter one knows and the other does not split them)
    for a, b in (("1 ЛЕНИНА УЛ", "1 ЛЕНИНЫ УЛ"), ("1 \U00031350\U00031351\U00031352 ST",
                                                  "1 \U00031350\U00031351\U00031353 ST")):
        assert _levels(_person("JOHN", "SMITH", street=a),
                       _person("JOHN", "SMITH", street=b))["location"] != same, (a, b)
        assert not _sql_same_address((a, "12345"), (b, "12345")), (a, b)
    # a street too long to be an address is compared exactly (the edit distance's memory
    # grows with the square of the length)
    long = "1 " + "A" * linkage.LONGEST_STREET_COMPARED
    assert _levels(_person("JOHN", "SMITH", street=long),
                   _person("JOHN", "SMITH", street=long + "B"))["location"] != same


def _sql_identifier_level(a: tuple[str | None, str | None, str | None],
                          b: tuple[str | None, str | None, str | None]) -> int:
    """The model's identifier level as DuckDB evaluates it, for (ssn, national_id_type,
    national_id) a and b."""
    import duckdb

    comparison = next(c.get_comparison("duckdb") for c in linkage._comparisons()
                      if c.get_comparison("duckdb").output_column_name == "identifier")
    cases = " ".join(f"WHEN {lv.sql_condition} THEN {lv.comparison_vector_value}"
                     for lv in comparison.comparison_levels if lv.sql_condition != "ELSE")
    row = duckdb.sql(
        f"SELECT CASE {cases} ELSE 0 END FROM (SELECT ? AS ssn_l, right(?, 4) AS ssn_last4_l, "
        "? AS national_id_type_l, ? AS national_id_l, ? AS ssn_r, right(?, 4) AS ssn_last4_r, "
        "? AS national_id_type_r, ? AS national_id_r)",
        params=[a[0], a[0], a[1], a[2], b[0], b[0], b[1], b[2]]).fetchone()
    assert row is not None
    return int(row[0])


def test_an_identifier_typo_is_told_from_a_sequence_as_the_model_tells_it():
    """'One typo apart, not in sequence': one edit (a changed digit or two adjacent digits
    transposed) 1,000 or more apart; closer, the two may have been issued in sequence
    (twins). The scorer and the model's SQL agree, either way round, on SSNs and
    national ids; other identifiers are not judged."""
    apart, near = linkage.IDENTIFIER_ONE_EDIT_APART, linkage.IDENTIFIER_ONE_EDIT
    cases = [("123456715", "123456716", near), ("123456715", "123456725", near),
             ("123456715", "123456815", near), ("123456715", "123450715", apart),
             ("123456715", "123456751", near),    # transposed, last two digits: 36 apart
             ("123456789", "123456798", near),    # 9 apart
             ("123456715", "123456175", near),    # transposed, 540 apart
             ("123456715", "123457615", near),    # 900 apart
             ("123456715", "123465715", apart),   # 9,000 apart
             ("022704368", "022704638", near),    # 270 apart: an attack's twins
             ("4210506", "4210560", near), ("1125271", "1125721", near),
             ("0123456", "0123546", near),        # 90 apart
             ("0123456", "0124356", near),        # 900 apart
             ("0123456", "0132456", apart),       # 9,000 apart
             ("0123498", "0123489", near),        # 9 apart
             ("12345678", "123456789", apart),
             ("A123456", "A123465", near), ("A123456", "A124356", near),
             ("123456715", "123456715", linkage.IDENTIFIER_EXACT)]
    for a, b, want in cases:
        for x, y in ((a, b), (b, a)):
            for q, r, sql in (
                    (_person("OLIVIA", "HARRINGTON", x), _person("AMELIA", "HARRINGTON", y),
                     _sql_identifier_level((x, None, None), (y, None, None))),
                    (realtime.Record("OLIVIA", frozenset(), None, "HARRINGTON", None, None,
                                     None, None, None, x, "state_id", None, None, None),
                     realtime.Record("AMELIA", frozenset(), None, "HARRINGTON", None, None,
                                     None, None, None, y, "state_id", None, None, None),
                     _sql_identifier_level((None, "state_id", x), (None, "state_id", y)))):
                if q.ssn is not None and not q.ssn.isdigit():
                    continue    # an SSN is standardised to digits before it gets here
                assert _levels(q, r)["identifier"] == sql == want, (x, y)
