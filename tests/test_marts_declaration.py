"""data_model/marts.yaml declares each mart once; everything about a mart is derived from it
(and an invalid declaration fails at load, naming the file and key)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ids_lakehouse import catalog, zones
from ids_lakehouse.agreements import load_agreements
from ids_lakehouse.declarations import DeclarationError
from ids_lakehouse.deid.policy import load_policy
from ids_lakehouse.marts.declaration import load_marts, load_marts_file, marts_file
from schemas.gold import contract

DATA_MODEL = marts_file().parent
MARTS = load_marts().marts


def test_each_mart_is_declared_in_marts_yaml_alone():
    """Other declaration files may refer to a mart (an agreement names what it releases)
    but none declares one: no mart name is a key of zones.yaml, disclosure.yaml or
    model.yaml, and every mart an agreement names is declared."""
    for name in ("zones.yaml", "disclosure.yaml", "model.yaml"):
        text = (DATA_MODEL / name).read_text()
        assert not [m for m in MARTS if m in text], name
    for agreement in load_agreements().values():
        assert set(agreement.permitted) | set(agreement.release) <= set(MARTS), agreement.id


def test_contracts_catalog_zones_and_quasi_identifiers_come_from_the_declaration():
    dictionary = catalog.data_dictionary()
    for name, mart in MARTS.items():
        assert list(contract(name).columns) == list(mart.columns)
        assert mart.description in dictionary
        assert zones.zone_of("gold", name) == (mart.zone or zones.zone_of("gold"))
    assert zones.zone_of("gold", "contact_directory") == "restricted"
    research = MARTS["research_person"].columns
    assert load_policy().research_quasi_identifiers == [
        c for c, d in research.items() if d.classification == "quasi_identifier"]
    views = load_marts().views()
    assert views["research"] == {"persons": "research_person",
                                 "participation": "research_participation"}
    assert "contact_directory" not in {m for v in views.values() for m in v.values()}


@pytest.mark.parametrize("change, key", [
    (lambda d: d["marts"]["indicators"].update(purpose="marketing"), "marts.indicators.purpose"),
    (lambda d: d["marts"]["indicators"]["columns"]["year"].update(lineage=["gold.x"]),
     "lineage"),
    (lambda d: d["marts"]["indicators"].update(unique=["nope"]), "unique"),
    (lambda d: d["marts"]["research_person"]["columns"]["sex"].update(code_list="gender"),
     "code_list"),
    (lambda d: d["marts"]["program_overlap"].update(view="person_counts"), "already the view"),
    # Declarations that would leak or break a night:
    (lambda d: d["marts"]["indicators"]["columns"]["year"].update(
        lineage=["silver/no_such_table.x"]), "names no silver entity"),
    (lambda d: d["marts"]["indicators"]["columns"]["year"].update(
        lineage=["identity/person_xref.nope"]), "names no column of person_xref"),
    (lambda d: d["marts"]["research_person"]["columns"]["zip3"].update(
        pattern="(?=[0-9])[0-9]{3}"), "look-around"),
    (lambda d: d["marts"]["indicators"].update(view="x; DROP SCHEMA research"), "view"),
    (lambda d: d["purposes"]["research"].update(warehouse_schema="a-b"), "warehouse_schema"),
    (lambda d: d["marts"]["indicators"]["columns"]["year"].update(pattern="[0-9]+"),
     "apply to String columns"),
    (lambda d: d["marts"]["indicators"]["columns"]["program"].update(non_negative=True),
     "non_negative applies to numbers"),
    (lambda d: d["marts"]["contact_directory"].pop("zone"), "direct identifiers"),
    (lambda d: d["marts"]["research_person"]["columns"].update(
        ssn={"type": "String", "description": "x", "classification": "direct_identifier"}),
     "direct identifiers"),
    (lambda d: d["marts"]["research_participation"].update(k_anonymous=True),
     "only one mart"),
])
def test_a_bad_declaration_names_the_file_and_key(tmp_path: Path, change, key):
    declared = yaml.safe_load(marts_file().read_text())
    change(declared)
    bad = tmp_path / "marts.yaml"
    bad.write_text(yaml.safe_dump(declared))
    with pytest.raises(DeclarationError) as exc:
        load_marts_file(bad)
    assert str(bad) in str(exc.value) and key in str(exc.value)


def test_every_declared_mart_has_one_builder():
    from ids_lakehouse.marts import publish

    built = [*publish.PUBLISHED, *publish.RESEARCH]
    assert sorted(built) == sorted(MARTS) and len(set(built)) == len(built)
    assert set(publish.RESEARCH) == set(load_marts().of_purpose("research"))


def test_a_key_declared_twice_is_refused(tmp_path: Path):
    text = marts_file().read_text()
    twice = tmp_path / "marts.yaml"
    twice.write_text(text + "\n  research_person:\n    purpose: research\n")
    with pytest.raises(DeclarationError, match="declared twice"):
        load_marts_file(twice)
