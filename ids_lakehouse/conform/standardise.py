"""Standardisation of identifying fields, vectorised in polars where a rule is simple and
delegated to well-kept libraries where it is not (phonenumbers for phones, nameparser and
usaddress in transforms).

Free text (names, street, city) is made comparable in two steps. Values that are pure
ASCII -- nearly all of them -- go straight to the polars expressions. Every distinct
non-ASCII value is first folded once in Python (`fold_text`): invisible format characters
removed, NFKC normalisation, accents stripped from Latin letters, the Latin letters that do
not decompose (Ł, Ø, ß, Æ...) spelled out, and, in a word that mixes them with Latin
letters, Cyrillic and Greek letters that look the same as a Latin letter replaced by it.
A word holding any other letter, or written wholly in another script, keeps its letters as
delivered (upper-cased) and the field's status says so: a letter is never dropped."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from phonenumbers import PhoneNumber

_SUFFIX_RE = r"\s+(JR|SR|II|III|IV)$"
# SSNs that were never issued or are known to be invalid (advertising, test numbers).
KNOWN_INVALID_SSNS = ["078051120", "219099999", "123456789", "111111111", "999999999"]

# -- Unicode ---------------------------------------------------------------------------

# Status of a standardised free-text field (code list `text_status`), most severe last.
TEXT_STATUSES = ("missing", "valid", "transliterated", "unmapped")

# Cyrillic and Greek letters whose glyph is the same as a Latin letter's, and that letter.
# Source: Unicode Technical Standard #39 (Unicode Security Mechanisms), confusables.txt,
# version 14.0.0 (https://www.unicode.org/Public/security/14.0.0/confusables.txt): its
# single-letter Latin prototypes for Cyrillic and Greek letters, keeping the case of the
# letter (TR39 maps I-shaped capitals to a small "l"; as names are compared upper-cased,
# they map to "I" here) and leaving out those only similar in some fonts (e.g. Cyrillic
# Ь -> b, г -> r, ѡ -> w; Greek σ -> o, γ -> y), symbols of Greek musical notation, and
# those that stand for two Latin letters (Ы, Ю, Ӕ). Every entry was checked against the
# file: each maps as TR39 does.
CONFUSABLES: dict[str, str] = {
    # Cyrillic capitals
    "\u0410": "A", "\u0412": "B", "\u0421": "C", "\u0415": "E", "\u050C": "G",
    "\u041D": "H", "\u0406": "I", "\u04C0": "I", "\u0408": "J", "\u041A": "K",
    "\u041C": "M", "\u041E": "O", "\u0420": "P", "\u0405": "S", "\u0422": "T",
    "\u0474": "V", "\u051C": "W", "\u0425": "X", "\u0423": "Y", "\u04AE": "Y",
    # Cyrillic small letters
    "\u0430": "a", "\u0441": "c", "\u0501": "d", "\u0435": "e", "\u04BB": "h",
    "\u0456": "i", "\u04CF": "i", "\u0458": "j", "\u043E": "o", "\u0440": "p",
    "\u051B": "q", "\u0455": "s", "\u0475": "v", "\u051D": "w", "\u0445": "x",
    "\u0443": "y", "\u04AF": "y",
    # Greek capitals
    "\u0391": "A", "\u0392": "B", "\u03F9": "C", "\u0395": "E", "\u03DC": "F",
    "\u0397": "H", "\u0399": "I", "\u037F": "J", "\u039A": "K", "\u039C": "M",
    "\u039D": "N", "\u039F": "O", "\u03A1": "P", "\u03A4": "T", "\u03A5": "Y",
    "\u03A7": "X", "\u0396": "Z",
    # Greek small letters
    "\u03B1": "a", "\u03F2": "c", "\u03B9": "i", "\u03F3": "j", "\u03BF": "o",
    "\u03C1": "p", "\u03C5": "u", "\u03BD": "v",
}
# Latin letters with no canonical decomposition, so NFKD leaves no ASCII base to keep.
LATIN_FOLD: dict[str, str] = {
    "Æ": "AE", "æ": "ae", "Ð": "D", "ð": "d", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h",
    "ı": "i", "Ł": "L", "ł": "l", "Ŋ": "NG", "ŋ": "ng", "Ø": "O", "ø": "o", "Œ": "OE",
    "œ": "oe", "ß": "ss", "ẞ": "SS", "Þ": "TH", "þ": "th", "Ŧ": "T", "ŧ": "t",
}
# Apostrophe-like characters, removed (not spaced) as the ASCII apostrophe is: O'Neil,
# Kaʻahumanu (ʻokina), Nuʼu.
APOSTROPHES = "'’‘`ʻʼʽ"
# Default-ignorable code points that are not of category Cf (Cf is tested by category):
# combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian variation
# selectors, variation selectors.
_IGNORABLE = {chr(c) for c in (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C,
                               0x180D, 0x180F, 0x3164, 0xFFA0, *range(0xFE00, 0xFE10),
                               *range(0xE0100, 0xE01F0))}


def _invisible(c: str) -> bool:
    return c in _IGNORABLE or unicodedata.category(c) == "Cf"


def _fold_word(word: str) -> str:
    """A run of letters and marks in Latin letters, or as it is when one of its letters has
    no Latin equivalent, or when it has no Latin letter at all: look-alikes are replaced
    only in a word that mixes them with Latin letters (TR39's mixed-script confusable; a
    word wholly in Cyrillic or Greek is taken to be written in that script)."""
    out, latin = [], False
    for c in unicodedata.normalize("NFKD", word):
        if c.isascii() or c in LATIN_FOLD:
            out.append(LATIN_FOLD.get(c, c))
            latin = latin or c.isalpha()
        elif unicodedata.category(c).startswith("M"):
            continue  # an accent on a Latin (or look-alike) base letter
        elif c in CONFUSABLES:
            out.append(CONFUSABLES[c])
        elif c in APOSTROPHES:
            out.append(c)
        else:
            return word
    return "".join(out) if latin else word


def clean_text(value: str) -> str:
    """Invisible format characters removed and NFKC normalisation: what a parser of
    delivered text (nameparser, usaddress) should see."""
    if value.isascii():
        return value
    text = "".join(c for c in value if not _invisible(c))
    return "".join(c for c in unicodedata.normalize("NFKC", text) if not _invisible(c))


@lru_cache(maxsize=200_000)
def fold_text(value: str) -> str:
    """One delivered value, folded as the module docstring says: invisible characters
    removed, NFKC, each Latin or mixed-script word in Latin letters where every letter has
    a Latin equivalent, dashes as "-", digits of any script as ASCII digits. Anything else
    is left as it is for the expressions (punctuation becomes a space there)."""
    text = clean_text(value)
    out, word = [], []
    for c in text:
        cat = unicodedata.category(c)
        if cat[0] in "LM" and not c.isascii() or c.isascii() and c.isalpha():
            word.append(c)
            continue
        if word:
            out.append(_fold_word("".join(word)))
            word = []
        if cat == "Pd":
            out.append("-")
        elif cat == "Nd" and not c.isascii():
            out.append(str(unicodedata.decimal(c)))
        else:
            out.append(c)
    if word:
        out.append(_fold_word("".join(word)))
    return "".join(out)


def _fold_non_ascii(values: pl.Series) -> pl.Series:
    """fold_text over the distinct non-ASCII values only; ASCII values pass untouched."""
    wide = values.str.len_bytes() != values.str.len_chars()
    if not wide.any():
        return values
    distinct = values.filter(wide).unique().to_list()
    return values.replace({v: fold_text(v) for v in distinct})


def unicode_text(expr: pl.Expr) -> pl.Expr:
    return expr.map_batches(_fold_non_ascii, return_dtype=pl.String)


def text_status(raw: pl.Expr, out: pl.Expr) -> pl.Expr:
    """Status of a standardised free-text field: `missing` (nothing left), `unmapped`
    (letters with no Latin equivalent, or a word wholly in another script, kept as
    delivered), `transliterated` (Cyrillic or Greek look-alikes in a word with Latin
    letters replaced by those Latin letters), or `valid` (Latin letters, accents removed)."""
    return (pl.when(out.is_null()).then(pl.lit("missing"))
            .when(out.str.len_bytes() != out.str.len_chars()).then(pl.lit("unmapped"))
            .when(raw.str.contains(r"[\p{Cyrillic}\p{Greek}]")).then(pl.lit("transliterated"))
            .otherwise(pl.lit("valid")))


def worst_status(*statuses: pl.Expr) -> pl.Expr:
    """The most severe of several fields' text statuses (`missing` only when all are)."""
    expr = pl.lit(TEXT_STATUSES[0])
    for level in TEXT_STATUSES[1:]:
        expr = pl.when(pl.any_horizontal([s == level for s in statuses])).then(
            pl.lit(level)).otherwise(expr)
    return expr


# What becomes a space: punctuation, symbols, separators, controls and, in names, numbers.
# Letters and marks of any script stay, and so do private-use code points and those the
# regex engine's Unicode tables do not know yet (letters newer than its tables): never
# dropped. Hyphens stay; in streets ASCII digits and "#" too.
NAME_SPACE = r"[^\p{L}\p{M}\p{Cn}\p{Co}\- ]"
STREET_SPACE = r"[^\p{L}\p{M}\p{Cn}\p{Co}0-9#\- ]"


def blank_to_null(expr: pl.Expr) -> pl.Expr:
    stripped = expr.cast(pl.String).str.strip_chars()
    return pl.when(stripped == "").then(None).otherwise(stripped)


def name(expr: pl.Expr) -> pl.Expr:
    """Upper case, accents and punctuation removed, hyphens kept, spaces collapsed;
    look-alike letters in Latin, other letters kept (see `fold_text`)."""
    out = (unicode_text(expr).str.to_uppercase()
           .str.replace_all(f"[{APOSTROPHES}.]", "").str.replace_all(NAME_SPACE, " ")
           .str.replace_all(r"\s+", " ").str.strip_chars())
    return out.replace("", None)  # (one reference: the chain is evaluated once)


def street(expr: pl.Expr) -> pl.Expr:
    """Upper case, accents and punctuation removed; house and unit numbers kept."""
    out = (unicode_text(expr).str.to_uppercase()
           .str.replace_all(f"[.,{APOSTROPHES}]", "")
           .str.replace_all(STREET_SPACE, " ")
           .str.replace_all(r"\s+", " ").str.strip_chars())
    return out.replace("", None)  # (one reference: the chain is evaluated once)


def suffix(last: pl.Expr) -> pl.Expr:
    return last.str.extract(_SUFFIX_RE, 1)


def without_suffix(last: pl.Expr) -> pl.Expr:
    return last.str.replace(_SUFFIX_RE, "")


def ssn_frame(raw: pl.Expr, folded: pl.Expr | None = None) -> list[pl.Expr]:
    """ssn (9 digits or null), ssn_last4, ssn_raw (as delivered) and ssn_status: invalid
    numbers are nulled with the reason, never guessed. (Identifiers, postcodes, phones
    and dates are read after `fold_text`: full-width or other-script digits are digits.)

    `folded`: the raw column already through `unicode_text`, as a column of the frame.
    These frames use their input a dozen times and Polars runs a Python function once
    per use (it does not share it between uses): folding once beforehand spares the
    rest, which on a lookup's few rows was most of the time. Over many rows `with_ssn`
    gives the same columns at a fraction of the cost."""
    s = (unicode_text(raw) if folded is None else folded).str.strip_chars()
    digits = s.str.replace_all(r"[\s-]", "")
    return _ssn_columns(raw, digits, _ssn_status(s, digits))


def with_ssn(frame: pl.DataFrame, raw: str = "ssn", folded: str = "_fold_ssn"
             ) -> pl.DataFrame:
    """`frame` with `ssn_frame`'s columns (`raw` replaced by the validated ssn), the digits
    and the status each computed once: in one expression Polars recomputed the digits
    (a regex) six times per status and the status three times, 3.5 s of a 1,000,000-row
    conform. `folded`: `raw` through `unicode_text`, a column of the frame."""
    s = pl.col(folded).str.strip_chars()
    temp = ("_ssn_s", "_ssn_digits", "_ssn_status")
    return (frame.with_columns(s.alias(temp[0]), s.str.replace_all(r"[\s-]", "").alias(temp[1]))
            .with_columns(_ssn_status(pl.col(temp[0]), pl.col(temp[1])).alias(temp[2]))
            .with_columns(_ssn_columns(pl.col(raw), pl.col(temp[1]), pl.col(temp[2])))
            .drop(temp))


def _ssn_status(s: pl.Expr, digits: pl.Expr) -> pl.Expr:
    """The status of a stripped, folded SSN `s` whose separators are removed in `digits`."""
    partial = digits.str.contains(r"^[Xx*]{5}[0-9]{4}$")
    nine = digits.str.contains(r"^[0-9]{9}$")
    area, group, serial = digits.str.slice(0, 3), digits.str.slice(3, 2), digits.str.slice(5, 4)
    return (pl.when(s.is_null() | (s == "")).then(pl.lit("missing"))
            .when(partial).then(pl.lit("partial"))
            .when(~nine).then(pl.lit("invalid_format"))
            .when((area == "000") | (area == "666") | area.str.starts_with("9"))
            .then(pl.lit("invalid_area"))
            .when(group == "00").then(pl.lit("invalid_group"))
            .when(serial == "0000").then(pl.lit("invalid_serial"))
            .when(digits.is_in(KNOWN_INVALID_SSNS)).then(pl.lit("invalid_known"))
            .otherwise(pl.lit("valid")))


def _ssn_columns(raw: pl.Expr, digits: pl.Expr, status: pl.Expr) -> list[pl.Expr]:
    return [pl.when(status == "valid").then(digits).otherwise(None).alias("ssn"),
            pl.when(status.is_in(["valid", "partial"])).then(digits.str.slice(5, 4))
            .otherwise(None).alias("ssn_last4"),
            raw.alias("ssn_raw"), status.alias("ssn_status")]


def _whole(pattern: str) -> str:
    """A declared pattern matched against the whole value (its groups keep their numbers)."""
    return f"^(?:{pattern})$"


def _status(raw: pl.Expr, value: pl.Expr) -> pl.Expr:
    """value_status: missing (nothing delivered), invalid (delivered, not usable), valid."""
    return (pl.when(raw.is_null() | (raw.str.strip_chars() == "")).then(pl.lit("missing"))
            .when(value.is_null()).then(pl.lit("invalid")).otherwise(pl.lit("valid")))


def postcode_frame(raw: pl.Expr, pattern: str, folded: pl.Expr | None = None
                   ) -> list[pl.Expr]:
    """zip (the postcode as `pattern` reads it: its first group if it has one, else the
    whole normalised value), zip_raw (as delivered) and zip_status. The value is
    upper-cased with runs of spaces made one before matching; all zeros is invalid. A
    postcode that does not match is nulled with the status, never guessed. `folded`: as
    for `ssn_frame`."""
    s = ((unicode_text(raw) if folded is None else folded)
         .str.strip_chars().str.to_uppercase().str.replace_all(r"\s+", " "))
    group = 1 if re.compile(pattern).groups else 0
    code = s.str.extract(_whole(pattern), group)
    code = pl.when(code.str.contains(r"^[0\s-]+$")).then(None).otherwise(code)
    return [code.alias("zip"), raw.alias("zip_raw"),
            _status(raw, code).alias("zip_status")]


def state_frame(raw: pl.Expr, codes: list[str]) -> list[pl.Expr]:
    """state (one of the declared codes, upper case, or null), state_raw, state_status."""
    s = raw.str.strip_chars().str.to_uppercase()
    code = pl.when(s.is_in(codes)).then(s).otherwise(None)
    return [code.alias("state"), raw.alias("state_raw"), _status(raw, code).alias("state_status")]


ID_SEPARATORS = r"[\s\-./]"
RUNS = "01234567890123456789"   # 1234567890, 0123456789, 9876543210: placeholders


def national_id_frame(raw: pl.Expr, id_type: str | None, pattern: str | None,
                      folded: pl.Expr | None = None) -> list[pl.Expr]:
    """national_id (upper case, spaces, hyphens, dots and slashes removed; null unless it
    matches the declared pattern, and is neither a decimal rendering nor a placeholder of
    at most two distinct characters), its type, raw value and status. `folded`: as for
    `ssn_frame`."""
    s = ((unicode_text(raw) if folded is None else folded)
         .str.strip_chars().str.to_uppercase().str.replace_all(ID_SEPARATORS, ""))
    # A number a spreadsheet rendered as a decimal ("12345678.0") is not the identifier
    # without its dot; placeholders (0000000000, 9999999999) are no one's identifier.
    decimal = raw.str.contains(r"^\s*[0-9]+\.0+\s*$")
    placeholder = (s.str.split("").list.n_unique() <= 2) | (
        (s.str.len_chars() >= 6) & (pl.lit(RUNS).str.contains(s, literal=True)
                                    | pl.lit(RUNS[::-1]).str.contains(s, literal=True)))
    ok = (s.str.contains(_whole(pattern)) & s.str.contains(r"^[A-Z0-9]{1,40}$")
          & ~decimal & ~placeholder) if pattern else pl.lit(False)
    value = pl.when(ok).then(s).otherwise(None)
    return [value.alias("national_id"),
            pl.when(value.is_not_null()).then(pl.lit(id_type)).otherwise(None)
            .cast(pl.String).alias("national_id_type"),
            raw.alias("national_id_raw"), _status(raw, value).alias("national_id_status")]


def _e164(number: str, region: str) -> tuple[str | None, str]:
    """(E.164, status) of one delivered number: valid when in an assigned range, possible
    when only its length and its country's numbering pattern fit (kept), invalid (None)
    otherwise. A number written with the international prefix 00 that does not read as a
    number of `region` is read as +."""
    import phonenumbers

    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        parsed = None
    if (parsed is None or not phonenumbers.is_possible_number(parsed)) and \
            number.lstrip().startswith("00"):
        return _e164("+" + number.lstrip()[2:], region)
    if parsed is None or len(set(str(parsed.national_number))) <= 2:
        return None, "invalid"  # (999-999-9999, 555-555-5555, 000-000-0001: placeholders)
    if phonenumbers.is_valid_number(parsed):
        status = "valid"
    elif phonenumbers.is_possible_number(parsed) and _fits_country(parsed):
        status = "possible"
    else:
        return None, "invalid"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), status


def _fits_country(parsed: PhoneNumber) -> bool:
    """The number fits its country's general numbering pattern (e.g. a North American
    area code does not start with 0 or 1), though perhaps not a range known to be in use."""
    import phonenumbers

    country = parsed.country_code
    assert country is not None          # phonenumbers.parse sets it on every number
    region = phonenumbers.region_code_for_country_code(country)
    meta = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country, region)
    desc = meta.general_desc if meta else None
    pattern = desc.national_number_pattern if desc else None
    if not pattern:
        return False
    return re.fullmatch(pattern, str(parsed.national_number)) is not None


def phones(values: pl.Series, region: str = "US", stripped: bool = False) -> pl.DataFrame:
    """E.164 phone, phone_raw and phone_status for each value, parsing each distinct value
    once; a number without a country code is read as `region`'s. North American numbers
    written the common ways are decided in Polars by libphonenumber's own metadata
    (`_nanp`); everything else goes through libphonenumber. `stripped`: the values have
    no surrounding white space and none is empty (a lookup's, by its model), so
    `blank_to_null` would change nothing."""
    if not stripped:
        values = pl.select(blank_to_null(pl.lit(values.cast(pl.String)))).to_series()
    if values.len() < NANP_MIN:
        # Too few for the fast path: each distinct value through libphonenumber, without
        # the frames below (a lookup's one number spent 1.5 ms in them, 0.05 in parsing).
        raw = values.to_list()
        decided = {v: _e164(fold_text(v), region) for v in set(raw) if v is not None}
        return pl.DataFrame({"phone": [decided[v][0] if v is not None else None for v in raw],
                             "phone_raw": raw,
                             "phone_status": [decided[v][1] if v is not None else "missing"
                                              for v in raw]},
                            schema=dict.fromkeys(("phone", "phone_raw", "phone_status"),
                                                 pl.String))
    distinct = values.drop_nulls().unique()
    schema = {"_in": pl.String, "_e164": pl.String, "_status": pl.String}
    fast = _nanp(distinct) if region in _NANP_REGIONS and distinct.len() >= NANP_MIN \
        else pl.DataFrame(schema=schema)
    rest = distinct.filter(~distinct.is_in(fast["_in"].implode())).to_list()
    parsed = [_e164(fold_text(v), region) for v in rest]
    table = pl.concat([fast, pl.DataFrame({"_in": rest, "_e164": [p[0] for p in parsed],
                                           "_status": [p[1] for p in parsed]},
                                          schema=schema)])
    joined = pl.DataFrame({"_in": values}).join(table, on="_in", how="left",
                                                maintain_order="left")
    return joined.select(pl.col("_e164").alias("phone"), pl.col("_in").alias("phone_raw"),
                         pl.col("_status").fill_null("missing").alias("phone_status"))


# A North American number as people write it: optional +1 or 1, the area code (in
# parentheses or not), exchange and line, separated by at most one space, dot or hyphen.
_NANP_SHAPE = (r"^ *(?:\+?1[ .-]?)?(?:\(([2-9][0-9]{2})\)|([2-9][0-9]{2}))[ .-]?"
               r"([0-9]{3})[ .-]?([0-9]{4}) *$")
_NANP_REGIONS = ("US",)   # the default regions whose numbers the fast path may read
# The fast path costs 45-75 ms whatever the size (its expression holds some 250 patterns,
# compiled each time); libphonenumber costs ~0.05 ms a number. Measured crossover: about
# 1,500 distinct numbers (1,000: 73 vs 50 ms; 5,000: 102 vs 191 ms). A real-time lookup's
# one number took 73 ms this way, most of the gateway's time per lookup.
NANP_MIN = 2_000


def _nanp(values: pl.Series) -> pl.DataFrame:
    """(_in, _e164, _status) of the values of the common North American shape, decided as
    `_e164` decides them (tests compare the two on a large sample): valid when
    libphonenumber's metadata gives the number a type in the region it assigns it to (the
    first of the country code's regions whose leading digits match, or, without leading
    digits, whose patterns give it a type), possible when it fits the country's general
    pattern, invalid (placeholders too) otherwise."""
    import phonenumbers

    frame = pl.DataFrame({"_in": values}).filter(pl.col("_in").str.contains(_NANP_SHAPE))
    groups = pl.col("_in").str.extract_groups(_NANP_SHAPE)
    national = pl.concat_str(groups.struct["1"].fill_null(groups.struct["2"]),
                             groups.struct["3"], groups.struct["4"])
    frame = frame.with_columns(national.alias("_n"))
    n = pl.col("_n")
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]
    metas = [phonenumbers.PhoneMetadata.metadata_for_region(r) for r in regions]
    typed = {r: _has_type(n, m) for r, m in zip(regions, metas, strict=True) if m}
    valid: pl.Expr = pl.lit(False)
    # The first matching region decides: built from the last one backwards.
    for r, m in reversed(list(zip(regions, metas, strict=True))):
        if m is None:
            continue
        chosen = (n.str.contains(f"^(?:{m.leading_digits})") if m.leading_digits is not None
                  else typed[r])
        valid = pl.when(chosen).then(typed[r]).otherwise(valid)
    main = phonenumbers.PhoneMetadata.metadata_for_region("US")
    general = main.general_desc if main else None
    assert general is not None and general.national_number_pattern
    possible = n.str.contains(f"^(?:{general.national_number_pattern})$")
    placeholder = n.str.split("").list.n_unique() <= 2
    status = (pl.when(placeholder).then(pl.lit("invalid")).when(valid).then(pl.lit("valid"))
              .when(possible).then(pl.lit("possible")).otherwise(pl.lit("invalid")))
    return frame.select(
        "_in", pl.when(status != "invalid").then(pl.lit("+1") + n).otherwise(None)
        .cast(pl.String).alias("_e164"), status.alias("_status"))


def _matches(n: pl.Expr, desc: Any) -> pl.Expr:
    """libphonenumber's _is_number_matching_desc: a possible length, the whole pattern."""
    if desc is None or not desc.national_number_pattern:
        return pl.lit(False)
    fits = n.str.contains(f"^(?:{desc.national_number_pattern})$")
    if desc.possible_length:
        fits = fits & n.str.len_chars().is_in(list(desc.possible_length))
    return fits


def _has_type(n: pl.Expr, meta: Any) -> pl.Expr:
    """libphonenumber's _number_type_helper(...) != UNKNOWN."""
    kinds = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager",
             "uan", "voicemail", "fixed_line", "mobile")
    any_kind = pl.lit(False)
    for kind in kinds:
        any_kind = any_kind | _matches(n, getattr(meta, kind))
    return _matches(n, meta.general_desc) & any_kind


def email_frame(raw: pl.Expr) -> list[pl.Expr]:
    """email (lower case, or null when not an address), email_raw and email_status."""
    e = raw.str.strip_chars().str.to_lowercase()
    value = pl.when(e.str.contains(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")).then(e).otherwise(None)
    return [value.alias("email"), raw.alias("email_raw"), _status(raw, value).alias("email_status")]


# The state whose counties the `county_fips` code list holds.
COUNTY_STATE = "WA"


@lru_cache(maxsize=1)
def zip_county() -> dict[str, str]:
    """ZIP -> county FIPS for COUNTY_STATE's ZIPs, from the `zipcodes` package."""
    import csv
    from importlib import resources

    import zipcodes

    text = resources.files("data_model").joinpath("code_lists/county_fips.csv").read_text()
    rows = csv.DictReader(x for x in text.splitlines() if not x.startswith("#"))
    fips_by_name = {r["county_name"]: r["county_fips"] for r in rows}
    return {z["zip_code"]: fips_by_name[z["county"]]
            # zipcodes' functions are unannotated
            for z in zipcodes.filter_by(state=COUNTY_STATE)  # type: ignore[no-untyped-call]
            if z["county"] in fips_by_name}
