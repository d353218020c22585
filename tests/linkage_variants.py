"""Person records changed the ways records of one person differ, and a few ways they
should not match: for tests that score pairs (real-time matching, the Spark engine)."""

from __future__ import annotations

import random

import polars as pl


def variants(people: pl.DataFrame, seed: int = 7) -> pl.DataFrame:
    """Each record once more, changed in one or two of the ways records of one person
    differ (and a few ways they should not match)."""
    rng = random.Random(seed)

    def typo(s: str | None) -> str | None:
        if not s or len(s) < 2:
            return s
        i = rng.randrange(len(s) - 1)
        return s[:i] + s[i + 1] + s[i] + s[i + 2:] if rng.random() < 0.5 else \
            s[:i] + rng.choice("AEIOURSTN") + s[i + 1:]

    changes = [
        lambda r: r | {"first_name": None},
        lambda r: r | {"last_name": None, "dob": None},
        lambda r: r | {"first_name": r["last_name"], "last_name": r["first_name"]},
        lambda r: r | {"first_name": r["last_name"]},       # one name in the other's place
        lambda r: r | {"first_name": typo(r["first_name"])},
        lambda r: r | {"last_name": typo(r["last_name"]), "zip": None},
        lambda r: r | {"dob": r["dob"].replace(day=r["dob"].month, month=r["dob"].day)
                       if r["dob"] and r["dob"].day <= 12 else r["dob"]},
        lambda r: r | {"dob": r["dob"].replace(year=r["dob"].year + 1)
                       if r["dob"] and not (r["dob"].month == 2 and r["dob"].day == 29)
                       else r["dob"]},
        lambda r: r | {"first_name": {"ROBERT": "BOB", "WILLIAM": "BILL"}.get(
            r["first_name"] or "", "ELIZABETH")},
        lambda r: r | ({"ssn": r["ssn"][:7] + r["ssn"][8] + r["ssn"][7],
                        "ssn_last4": r["ssn"][5:7] + r["ssn"][8] + r["ssn"][7]}
                       if r["ssn"] and r["ssn"][7] != r["ssn"][8] else {}),
        lambda r: r | {"ssn": None, "ssn_last4": r["ssn_last4"]},
        lambda r: r | {"ssn": ("8" + r["ssn"][1:]) if r["ssn"] else None},
        # one typo 1,000 or more away (not numeric neighbours), numeric neighbours
        # (issued in sequence), and a national id one typo away
        lambda r: r | ({"ssn": r["ssn"][:5] + str((int(r["ssn"][5]) + 3) % 10) + r["ssn"][6:],
                        "ssn_last4": str((int(r["ssn"][5]) + 3) % 10) + r["ssn"][6:]}
                       if r["ssn"] else {}),
        lambda r: r | {"ssn": (r["ssn"][:8] + str((int(r["ssn"][8]) + 1) % 10))
                       if r["ssn"] else None},
        lambda r: r | {"ssn": None, "ssn_last4": None,
                       "national_id": rng.choice(["0123456", "0123465", "0123457", "A123456"]),
                       "national_id_type": "state_id"},
        lambda r: r | {"ssn": None, "ssn_last4": None, "national_id": "AB1234567",
                       "national_id_type": rng.choice(["passport", "drivers_licence", None])},
        lambda r: r | {"phone": None, "zip": None, "street": None, "sex": None},
        lambda r: r | {"middle_name": "Q", "sex": "F" if r["sex"] == "M" else "M"},
        lambda r: r | {"street": "1 OTHER ST", "phone": r["phone"]},
        # a typo in the street and in the ZIP; a ZIP typo with a surname typo (found only
        # through the first name with the street)
        lambda r: r | {"street": typo(r["street"]), "zip": typo(r["zip"]), "phone": None},
        lambda r: r | {"zip": typo(r["zip"]), "last_name": typo(r["last_name"]), "dob": None},
        # another house number; non-Latin names and streets (DuckDB compares their UTF-8
        # bytes: a tester's МАРИНА / МАРИЯ was another level in the index)
        lambda r: r | {"street": "9" + (r["street"] or "")},
        lambda r: r | {"first_name": rng.choice(["МАРИНА", "МАРИЯ", "СЕРГЕЙ", "李敏", "JOSÉ"]),
                       "last_name": rng.choice(["ИВАНОВА", "СЕРГЕЕВ", "李明"]),
                       "street": rng.choice(["1 ЛЕНИНА", "1 ЛЕНИНАЯ", "2 ЛЕНИНА"])},
    ]
    rows = []
    for n, row in enumerate(people.iter_rows(named=True)):
        changed = rng.choice(changes)(dict(row))
        if rng.random() < 0.3:
            changed = rng.choice(changes)(changed)
        changed["source_record_id"] = f"V{n:05d}"
        rows.append(changed)
    return pl.DataFrame(rows, schema=people.schema)
