"""Synthetic benchmark inputs, generated once (vectorised numpy/polars) and cached under
bench/out/landing/<source>/ (git-ignored).

`medicaid_extract(n)` has exactly the 18 delivered columns of
data_model/sources/medicaid.yaml with realistic text values: names, ISO dates, dashed SSNs,
street addresses (a few containing a comma, so CSV quoting is exercised), WA cities, ZIPs,
county FIPS codes, phones, eligibility spells and aid categories. Optional fields are empty
in a realistic share of rows (null in Parquet, an empty field in CSV)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import polars as pl

from bench.common import OUT, log, run_in_subprocess

GEN_VERSION = 2          # bump when the generator changes, so caches are rebuilt
SEED = 20250101
LANDING = OUT / "landing"

FIRST = """James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara
Richard Susan Joseph Jessica Thomas Sarah Christopher Karen Charles Lisa Daniel Nancy Matthew
Betty Anthony Sandra Mark Margaret Donald Ashley Steven Kimberly Andrew Emily Paul Donna Joshua
Michelle Kenneth Carol Kevin Amanda Brian Melissa George Deborah Timothy Stephanie Ronald
Dorothy Jason Rebecca Edward Sharon Jeffrey Laura Ryan Cynthia Jacob Amy Gary Kathleen Nicholas
Angela Eric Shirley Jonathan Brenda Stephen Emma Larry Anna Justin Pamela Scott Nicole Brandon
Samantha Benjamin Katherine Samuel Christine Gregory Debra Alexander Rachel Patrick Carolyn
Frank Janet Raymond Maria Jack Olivia Dennis Heather Jerry Helen Tyler Catherine Aaron Diane
Jose Julie Adam Victoria Nathan Joyce Henry Lauren Zachary Kelly Douglas Christina Peter Ruth
Kyle Joan Noah Virginia Ethan Judith Jeremy Evelyn Walter Hannah Christian Andrea Keith Megan
Roger Cheryl Terry Jacqueline Austin Madison Sean Teresa Gerald Abigail Carl Sophia Harold
Martha Dylan Sara Arthur Gloria Lawrence Janice Jordan Kathryn Jesse Ann Bryan Isabella Billy
Judy Bruce Charlotte Gabriel Julia Joe Grace Logan Amber Alan Alice Juan Jean Albert Denise
Willie Frances Elijah Danielle Wayne Marilyn Randy Natalie Vincent Beverly Mason Diana Roy
Brittany Ralph Theresa Bobby Kayla Russell Alexis Bradley Doris Philip Lori Eugene Tiffany
Mei Hoang Nguyen Aaliyah Jamal DeShawn Priya Ananya Mohammed Fatima Yuki Hiroshi Ximena Mateo
Sofia Santiago Valentina Camila Diego Luis Carmen Rosa Miguel Ana""".split()
LAST = """Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez
Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White
Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen
Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips
Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers
Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson
Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders
Patel Myers Long Ross Foster Jimenez Powell Jenkins Perry Russell Sullivan Bell Coleman Butler
Henderson Barnes Gonzales Fisher Vasquez Simmons Romero Jordan Patterson Alexander Hamilton
Graham Reynolds Griffin Wallace Moreno West Cole Hayes Bryant Herrera Gibson Ellis Tran Medina
Aguilar Stevens Murray Ford Castro Marshall Owens Harrison Fernandez McDonald Woods Washington
Kennedy Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter
Hunter Gordon Mendez Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black
Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson
Nichols Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold Pierce
Vu Pham Yazzie Begay O'Brien O'Connor McCarthy Garcia-Lopez Nakamura Sato Okafor Mbeki
Haddad Kowalski""".split() + ["De La Cruz", "Van Dyke", "St. John"]
STREETS = """Main Oak Pine Maple Cedar Elm Washington Lake Hill Park View Spruce Madison Jefferson
Lincoln Jackson Franklin Sunset Highland Meadow Forest River Spring Valley Ridge Church Mill
Union Broadway Rainier Aurora Pacific Columbia Olympic Cascade Evergreen Alder Birch Fir Willow
Harbor Market Commercial Division Capitol Airport Canyon Orchard Prospect Summit Vista
""".split() + ["Martin Luther King Jr", "Old Military", "Lake City"]
SUFFIXES = ["St", "Ave", "Rd", "Blvd", "Dr", "Ln", "Way", "Ct", "Pl", "Hwy"]
DIRECTIONS = ["", "", "", "", "N ", "S ", "E ", "W ", "NE ", "NW ", "SE ", "SW "]
# (city, state+county FIPS, first ZIP, ZIP span)
CITIES = [("Seattle", "53033", 98101, 99), ("Spokane", "53063", 99201, 24),
          ("Tacoma", "53053", 98402, 21), ("Vancouver", "53011", 98660, 23),
          ("Bellevue", "53033", 98004, 4), ("Kent", "53033", 98030, 3),
          ("Everett", "53061", 98201, 7), ("Renton", "53033", 98055, 4),
          ("Yakima", "53077", 98901, 7), ("Spokane Valley", "53063", 99206, 11),
          ("Federal Way", "53033", 98003, 20), ("Kirkland", "53033", 98033, 1),
          ("Bellingham", "53073", 98225, 1), ("Auburn", "53033", 98001, 1),
          ("Kennewick", "53005", 99336, 2), ("Pasco", "53021", 99301, 1),
          ("Marysville", "53061", 98270, 1), ("Redmond", "53033", 98052, 1),
          ("Olympia", "53067", 98501, 5), ("Wenatchee", "53007", 98801, 1),
          ("Walla Walla", "53071", 99362, 1), ("Longview", "53015", 98632, 1),
          ("Aberdeen", "53027", 98520, 1), ("Port Angeles", "53009", 98362, 1),
          ("Moses Lake", "53025", 98837, 1), ("Mount Vernon", "53057", 98273, 1),
          ("Bremerton", "53035", 98310, 2), ("Lakewood", "53053", 98499, 0),
          ("Pullman", "53075", 99163, 1), ("Omak", "53047", 98841, 0)]
CITY_P = np.array([30, 12, 12, 9, 6, 5, 5, 4, 4, 4, 4, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 1,
                   1, 1, 1, 2, 2, 1, 1], dtype=float)
AID = ["MAGI-ADULT", "MAGI-CHILD", "MAGI-PARENT", "MAGI-PREG", "ABD", "SSI", "TANF", "CHIP",
       "LTC", "QMB", "SLMB", "FOSTER", "MEDICALLY-NEEDY"]
AID_P = np.array([30, 25, 10, 4, 6, 6, 5, 5, 2, 3, 2, 1, 1], dtype=float)
_AREAS = np.array([a for a in range(1, 900) if a != 666])


def _pick(rng: np.random.Generator, values: list[str], n: int,
          p: np.ndarray | None = None) -> pl.Series:
    idx = rng.choice(len(values), size=n, p=None if p is None else p / p.sum())
    return pl.Series(values, dtype=pl.String).gather(idx)


def _days(rng: np.random.Generator, start: str, span: int, n: int) -> np.ndarray:
    return np.datetime64(start, "D") + rng.integers(0, span, n)


def medicaid_frame(n: int, seed: int = SEED) -> pl.DataFrame:
    """`n` rows of all-text Medicaid eligibility records; null = not supplied."""
    rng = np.random.default_rng(seed)
    city = rng.choice(len(CITIES), size=n, p=CITY_P / CITY_P.sum())
    start = _days(rng, "2019-01-01", 2500, n)
    ints = pl.DataFrame({
        "seq": np.arange(n, dtype=np.int64) + 10_000_000,
        "dob": pl.Series(_days(rng, "1930-01-01", 34_000, n)),
        "start": pl.Series(start),
        "end": pl.Series(start + rng.integers(30, 1500, n)),
        "has_end": rng.random(n) < 0.6,
        "has_middle": rng.random(n) < 0.65,
        "middle_initial": rng.random(n) < 0.4,
        "area": _AREAS[rng.integers(0, len(_AREAS), n)],
        "group": rng.integers(1, 100, n),
        "serial": rng.integers(1, 10_000, n),
        "has_ssn": rng.random(n) < 0.93,
        "house": rng.integers(1, 20_000, n),
        "apt": rng.integers(1, 400, n),
        "apt_kind": rng.choice(3, size=n, p=[0.85, 0.10, 0.05]),  # none, " Apt", ", Apt"
        "zip_off": np.array([CITIES[c][3] for c in range(len(CITIES))])[city]
                   * rng.random(n),
        "zip_base": np.array([c[2] for c in CITIES])[city],
        "phone_area": rng.choice([206, 253, 360, 425, 509, 564], size=n),
        "phone_mid": rng.integers(200, 1000, n),
        "phone_end": rng.integers(0, 10_000, n),
        "has_phone": rng.random(n) < 0.8,
        "race": rng.choice(7, size=n, p=[0.55, 0.08, 0.03, 0.08, 0.01, 0.05, 0.20]),
    }).with_columns(
        first=_pick(rng, FIRST, n), middle=_pick(rng, FIRST, n), last=_pick(rng, LAST, n),
        street=_pick(rng, STREETS, n), suffix=_pick(rng, SUFFIXES, n),
        direction=_pick(rng, DIRECTIONS, n),
        sex=_pick(rng, ["F", "M", "U"], n, np.array([49.0, 49.0, 2.0])),
        hispanic=_pick(rng, ["N", "Y", "U"], n, np.array([70.0, 20.0, 10.0])),
        state=_pick(rng, ["WA", "OR", "ID"], n, np.array([97.0, 2.0, 1.0])),
        aid=_pick(rng, AID, n, AID_P),
        city=pl.Series([c[0] for c in CITIES]).gather(city),
        county=pl.Series([c[1] for c in CITIES]).gather(city),
    )

    def z(col: str, width: int) -> pl.Expr:
        return pl.col(col).cast(pl.String).str.zfill(width)

    iso = "%Y-%m-%d"
    apt = (pl.when(pl.col("apt_kind") == 1).then(pl.lit(" Apt ") + pl.col("apt").cast(pl.String))
           .when(pl.col("apt_kind") == 2).then(pl.lit(", Apt ") + pl.col("apt").cast(pl.String))
           .otherwise(pl.lit("")))
    return ints.select(
        member_id=pl.lit("MC") + pl.col("seq").cast(pl.String),
        first_name=pl.col("first").str.to_uppercase(),
        middle_name=pl.when(~pl.col("has_middle")).then(None)
        .when(pl.col("middle_initial")).then(pl.col("middle").str.slice(0, 1))
        .otherwise(pl.col("middle").str.to_uppercase()),
        last_name=pl.col("last").str.to_uppercase(),
        date_of_birth=pl.col("dob").dt.strftime(iso),
        sex=pl.col("sex"),
        ssn=pl.when(pl.col("has_ssn")).then(
            pl.concat_str([z("area", 3), z("group", 2), z("serial", 4)], separator="-")),
        race_code=pl.when(pl.col("race") > 0).then(pl.col("race").cast(pl.String)),
        hispanic=pl.col("hispanic"),
        address_line1=pl.concat_str([pl.col("house").cast(pl.String), pl.lit(" "),
                                     pl.col("direction"), pl.col("street"), pl.lit(" "),
                                     pl.col("suffix"), apt]),
        city=pl.col("city").str.to_uppercase(),
        state=pl.col("state"),
        zip=(pl.col("zip_base") + pl.col("zip_off").cast(pl.Int64)).cast(pl.String).str.zfill(5),
        county_code=pl.col("county").str.slice(2),   # county within the state, as Medicaid sends it
        phone=pl.when(pl.col("has_phone")).then(pl.format(
            "({}) {}-{}", pl.col("phone_area"), pl.col("phone_mid"), z("phone_end", 4))),
        eligibility_start=pl.col("start").dt.strftime(iso),
        eligibility_end=pl.when(pl.col("has_end")).then(pl.col("end").dt.strftime(iso)),
        aid_category=pl.col("aid"),
    )


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def medicaid_extract(n: int, formats: tuple[str, ...] = ("csv", "parquet")
                     ) -> dict[str, Path]:
    """Paths of the cached `n`-row extract in each format (generated when missing). Files
    sit at LANDING/medicaid/<name>, as `landed_file` expects."""
    folder = LANDING / "medicaid"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"medicaid_{n}_g{GEN_VERSION}_s{SEED}"
    paths = {fmt: folder / f"{stem}.{fmt}" for fmt in formats}
    missing = [fmt for fmt, p in paths.items() if not p.exists()]
    if missing:
        # In a subprocess, so the benchmark's parent process stays small.
        s = run_in_subprocess("data:task_generate", n=n,
                              paths={f: str(paths[f]) for f in missing})
        log(f"generated {n:,}-row medicaid extract ({', '.join(missing)}) in "
            f"{s.seconds:.1f}s")
    return paths


def task_generate(n: int, paths: dict[str, str]) -> dict:
    started = time.perf_counter()
    frame = medicaid_frame(n)
    if "csv" in paths:
        _atomic(Path(paths["csv"]), lambda p: frame.write_csv(p))
    if "parquet" in paths:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = frame.to_arrow()
        table = table.cast(pa.schema([(c, pa.string()) for c in table.column_names]))
        _atomic(Path(paths["parquet"]), lambda p: pq.write_table(table, p))
    return {"seconds": time.perf_counter() - started, "base_rss_mb": 0.0}
