"""Source definitions: the shipped ones load; a malformed one fails naming file and key."""

from __future__ import annotations

import re

import pytest
import yaml

from ids_lakehouse.sources import SourceDefinitionError, load_source, load_sources, sources_dir


def test_shipped_definitions_load():
    assert set(load_sources()) == {"medicaid", "hmis", "schools", "childcare", "births",
                                   "travellers"}


@pytest.mark.parametrize("change,key", [
    ({"encoding": "klingon-8"}, "key 'encoding': Value error, unknown encoding"),
    ({"format": "pdf"}, "key 'format'"),
    ({"record_id": "no_such_column"}, "record_id 'no_such_column' is not in 'columns'"),
    ({"required_columns": ["DOB", "Shoe"]}, "required_columns names columns not in"),
    ({"extra_columns": "ignore"}, "key 'extra_columns'"),
    ({"delimiter": ";"}, "key 'delimiter': Extra inputs are not permitted"),
    ({"source": "HMIS"}, "key 'source'"),
])
def test_malformed_definition_names_file_and_key(tmp_path, change, key):
    data = yaml.safe_load((sources_dir() / "hmis.yaml").read_text())
    data.update(change)
    path = tmp_path / "hmis.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SourceDefinitionError) as info:
        load_source(path)
    assert str(path) in str(info.value) and key in str(info.value), str(info.value)


def test_mapping_must_name_delivered_columns_and_known_transforms(tmp_path):
    data = yaml.safe_load((sources_dir() / "hmis.yaml").read_text())
    data["mapping"]["person_record"]["dob"] = {"column": "BirthDay", "format": "%m/%d/%Y"}
    data["mapping"]["person_record"]["race"]["transform"] = "guess_race"
    path = tmp_path / "hmis.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SourceDefinitionError, match="mapping.person_record.dob"):
        load_source(path)


def test_file_name_must_match_source(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text((sources_dir() / "hmis.yaml").read_text())
    with pytest.raises(SourceDefinitionError, match="must match the file name"):
        load_source(path)


def test_not_yaml_is_reported(tmp_path):
    path = tmp_path / "hmis.yaml"
    path.write_text("source: [unclosed\n")
    with pytest.raises(SourceDefinitionError, match="not valid YAML"):
        load_source(path)


@pytest.mark.parametrize("change,message", [
    ({"mapping": {"person_record": {"nhs_no": {"column": "SSN"}}}},
     r"mapping.person_record: fields the data model does not have: \['nhs_no'\]"),
    ({"conventions": {"country": "UK"}}, r"conventions.country.*the United Kingdom is GB"),
    ({"mapping": {"person_record": {"dob": {"column": "DOB", "format": "dd.mm.yyyy"}}}},
     r"mapping.person_record.dob: 'format' is a strptime format"),
    ({"mapping": {"person_record": {"national_id": {"column": "SSN", "id_type": "SSN",
                                                    "pattern": "[0-9]{9}"}}}},
     r"a US SSN is mapped to 'ssn'"),
    ({"mapping": {"person_record": {"national_id": {"column": "SSN", "id_type": "X_ID",
                                                    "pattern": "[0-9]*"}}}},
     r"pattern matches an empty value"),
    ({"mapping": {"person_record": {"national_id": {"column": "SSN", "id_type": "US_SSN",
                                                    "pattern": "[0-9]{9}"}}}},
     r"a US SSN is mapped to 'ssn'"),
    ({"mapping": {"person_record": {"dob": {"column": "DOB", "format": "%d.%m"}}}},
     r"with the year, month and day"),
    ({"mapping": {"person_record": {"dob": {"column": "DOB", "format": "%d.%m.%Q"}}}},
     r"with the year, month and day"),
    ({"conventions": {"postcode_pattern": "[0-9]{0,4}"}}, r"matches an empty value"),
])
def test_declaration_mistakes_name_the_file_and_key(tmp_path, change, message):
    data = yaml.safe_load((sources_dir() / "hmis.yaml").read_text())
    for key, value in change.items():
        if key == "mapping":
            data["mapping"]["person_record"].update(value["person_record"])
        else:
            data[key] = value
    path = tmp_path / "hmis.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SourceDefinitionError, match=r"hmis\.yaml") as err:
        load_source(path)
    assert re.search(message, str(err.value)), str(err.value)
