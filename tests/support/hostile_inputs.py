"""Hostile inputs for the fuzz tests (tests/worker/test_dead_letters_fuzz.py, tests/e2e/test_fuzz_worker.py)
and the fast-path checks (tests/worker/test_fast_paths.py).

What any producer can put on ``products``, well beyond the ordinary malformed cases of
tests/worker/test_dead_letters.py and tests/e2e/test_dead_letter_stream.py:

* `raw_values(max_size)`: any bytes: empty, binary, huge, invalid UTF-8 (also spliced into JSON),
  BOM-prefixed / UTF-16 / CESU-8 encoded JSON, truncated JSON, JSON that is not an object, sizes at
  the limit, plus everything `hostile_products` and `valid_products` make.
* `hostile_products(max_string)`: JSON objects written by hand, as text, so that what ``json.dumps``
  cannot write can be: duplicate keys, ``NaN``/``Infinity``, integers of thousands of digits (beyond
  Python's int-string limit), ``\\ud800`` escapes, nesting beyond the recursion limit, extreme and
  malformed ``event_time``s, wrong types for every field, megabyte strings, control characters.
  Each draw says which field it spoiled (`Hostile.culprit`) and whether the contract says plainly that
  the value is a schema violation (`Hostile.strict`).
* `valid_products()`: ordinary products (ordinary text, ids and dates) that must stay valid.
* `kafka_keys(max_size)`: None, empty, binary, text, invalid UTF-8, huge.
* `CORPUS`: the worst cases, fixed and named, for the live worker test (failures reproducible by name).
* `draw_examples(strategy, n, seed)`: ``n`` examples of a strategy, the same on every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

T = TypeVar("T")

MAX_MESSAGE_BYTES = 1_000_000  # STREAM_MAX_MESSAGE_BYTES default
MAX_OUTPUT_BYTES = 1_048_576  # STREAM_MAX_OUTPUT_BYTES default (Kafka's message.max.bytes)
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
FIELDS = ("product_id", "title", "tags", "description", "event_time")


class Blob(bytes):
    """bytes whose repr stays short: hypothesis prints failing examples, and some are megabytes."""

    def __repr__(self) -> str:
        if len(self) <= 400:
            return bytes.__repr__(self)
        return f"Blob({bytes(self[:200])!r} ... {bytes(self[-40:])!r}, {len(self):,} bytes)"


class Text(str):
    """str whose repr stays short (see `Blob`)."""

    def __repr__(self) -> str:
        if len(self) <= 400:
            return str.__repr__(self)
        return f"Text({str(self[:200])!r} ... {str(self[-40:])!r}, {len(self):,} chars)"


# Hypothesis settings of the fuzz tests: no deadline (megabyte inputs), the failing blob printed, and
# no explain phase (it re-runs a failing megabyte example hundreds of times to comment on it).
FUZZ = settings(
    deadline=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.large_base_example],
)

def blob(value: bytes | None) -> Blob | None:
    return None if value is None else Blob(value)


@dataclass(frozen=True)
class Hostile:
    """One hostile product. ``culprit``: the only key whose value is not ordinary (None when several
    are, or the fault is not a key's). ``strict``: the contract plainly makes it a schema violation
    of ``culprit`` (a wrong type, a missing or blank required field)."""

    value: bytes
    culprit: str | None
    strict: bool = False


@dataclass(frozen=True)
class ValidProduct:
    value: bytes
    doc: dict[str, Any]


# -- building blocks: JSON text ---------------------------------------------------------------------


def jstr(text: str, ascii_only: bool = True) -> str:
    """A JSON string literal. ``ascii_only`` escapes everything non-ASCII, lone surrogates included
    (as ``\\udXXX`` escapes, which Python's json decodes back into lone surrogates)."""
    return json.dumps(text, ensure_ascii=ascii_only)


def obj(pairs: list[tuple[str, str]], sep: str = ", ", colon: str = ": ") -> str:
    """A JSON object from (key, value JSON text) pairs, in order; keys may repeat."""
    return "{" + sep.join(f"{jstr(k)}{colon}{v}" for k, v in pairs) + "}"


def huge_int(digits: int, first: str = "9", rest: str = "9", negative: bool = False) -> str:
    return ("-" if negative else "") + first + rest * (digits - 1)


def nested(depth: int, leaf: str = "1", kind: str = "[") -> str:
    if kind == "[":
        return "[" * depth + leaf + "]" * depth
    return '{"a": ' * depth + leaf + "}" * depth


def repeat_to(unit: str | bytes, size: int) -> Any:
    """``unit`` repeated and cut to exactly ``size`` characters (or bytes)."""
    if not unit or size <= 0:
        return unit[:0]
    return (unit * (size // len(unit) + 1))[:size]


# -- characters and strings -------------------------------------------------------------------------

ORDINARY_CHARS = st.characters(exclude_categories=("Cs", "Cc"))
HOSTILE_CHARS = [
    "\x00", "\x01", "\x08", "\x1b", "\x1c", "\x1f", "\x7f", "\x85", "\xa0", "\u00ad", "\u0301",
    "\u200b", "\u200d", "\u2028", "\u2029", "\u202e", "\u3000", "\ufeff", "\ufffd", "\ufffe", "\uffff",
    "\ud800", "\udbff", "\udc00", "\udfff", "\U0001f600", "\U0010ffff", "\t", "\n", "\r", " ", "\\", '"',
]
WHITESPACE_ONLY = ["", " ", "   ", "\t", "\n", "\r\n", "\t \n", "\u3000", "\xa0", "\u2028", "\u2029",
                   "\x1c\x1d\x1e\x1f", "\x85", "\u2003\u2009", "\x0b\x0c"]
SURROGATE_TEXTS = ["\ud800", "\udfff", "\udc00x", "x\ud800", "\ud800\ud800", "\udbff", "Caneca \ud83d", "\ude00 azul",
                   "\ud83d\ude00\ud800"]

ordinary_text = st.text(ORDINARY_CHARS, max_size=40)
hostile_text = st.text(st.one_of(st.sampled_from(HOSTILE_CHARS), st.characters()), min_size=1, max_size=40)


def big_text(max_size: int) -> st.SearchStrategy[str]:
    """Long strings made cheaply: a short unit (ordinary or hostile characters) repeated."""
    units = st.one_of(st.text(ORDINARY_CHARS, min_size=1, max_size=8), hostile_text.map(lambda s: s[:8]),
                      st.sampled_from(["a", "Caneca ", "\u00e7\u00e3o ", "\U0001f600", "\x00", "\ud800", "a b c "]))
    sizes = st.one_of(st.integers(1_000, max(1_000, max_size)), st.sampled_from([max_size, max_size // 2]))
    return st.builds(repeat_to, units, sizes).map(Text)


def json_strings(max_string: int) -> st.SearchStrategy[str]:
    """JSON string literals, ordinary to hostile (raw control characters and bad escapes included)."""
    return st.one_of(
        st.builds(jstr, ordinary_text, st.booleans()),
        hostile_text.map(jstr),
        st.sampled_from(SURROGATE_TEXTS).map(jstr),
        st.sampled_from(WHITESPACE_ONLY).map(jstr),
        big_text(max_string).map(jstr),
        st.sampled_from(['"a\x00b"', '"tab\there"', '"line\nbreak"', '"\\x41"', '"\\u12"', '"\\ud800\\"',
                         '"\\uDFFF\\uD800"', '"\\u0000"', "'single'", '"unterminated']),
    )


# -- numbers ----------------------------------------------------------------------------------------

HUGE_INTS = st.builds(huge_int,
                      st.one_of(st.integers(1_000, 4_400), st.integers(4_290, 4_310), st.integers(4_300, 20_000)),
                      st.sampled_from("123456789"), st.sampled_from("0123456789"), st.booleans())
SPECIAL_FLOATS = ["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "-NaN", "1e-400", "-0.0", "0.0", "1.5", "-1.5",
                  "1.7976931348623157e308", "-1.7976931348623157e308", "5e-324", "1E+2", "1e999999999",
                  "123456789012345678901234567890.5", "1" + "0" * 400 + ".0", "0." + "1" * 5000, "1" * 5000 + "e-4990"]
numbers = st.one_of(
    HUGE_INTS,
    st.sampled_from(SPECIAL_FLOATS),
    st.integers().map(str),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats().map(json.dumps),  # NaN -> NaN, inf -> Infinity
)

# -- event_time -------------------------------------------------------------------------------------

YEARS = ["0001", "9999", "0000", "10000", "-0001", "+0001", "0099", "1969", "1970", "2024", "99999"]
MONTH_DAYS = ["01-01", "12-31", "02-29", "02-30", "13-01", "00-00", "1-1"]
TIMES = ["T00:00:00", "T23:59:59", "T23:59:60", "T24:00:00", "T23:59:59.999999", "T00:00:00.0000000001",
         " 00:00:00", "t12:00:00", "", "T00:00", "T12"]
OFFSETS = ["+01:00", "-05:00", "", "Z", "z", "+00:00", "-00:00", "-01:00", "+05:30", "+14:00", "-14:00", "+23:59",
           "-23:59", "+24:00", "+99:99", "+0100", "+01", "+01:00:30", " UTC"]
EXTREME_DATES = ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-01:00",
                 "0001-01-01T00:00:00", "0001-01-01", "9999-12-31T23:59:59-05:00", "9999-12-31T23:59:59.999999-14:00",
                 "9999-12-31T23:59:59+05:00", "9999-12-31T23:59:59Z", "9999-12-31", "1970-01-01T00:00:00+00:01",
                 "1969-12-31T23:59:59Z"]
MALFORMED_DATES = ["", " ", "now", "soon", "2024", "2024-W01-1", "2024-001", "\uff11\uff19\uff17\uff10-01-01",
                   "\u0661\u0669\u0667\u0660", "1700000000000", "-1", "-1700000000000", " 1700000000000 ",
                   "1e12", "0x10", "1" * 5000, "-" + "9" * 5000, "NaN", "Infinity", "2024-01-01T00:00:00\x00",
                   "2024-01-01T00:00:00\ud800"]
EPOCH_INTS = [-1, -(2**63), -(10**18), 0, 1, MAX_EPOCH_MS, MAX_EPOCH_MS + 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30]
EPOCH_FLOATS = ["0.5", "-0.5", "-0.0", "1.5e12", "1e300", "-1e300", "1e400", "-1e400", "NaN", "Infinity", "-Infinity",
                f"{MAX_EPOCH_MS}.0", f"{MAX_EPOCH_MS}.4", f"{MAX_EPOCH_MS}.9", f"{MAX_EPOCH_MS + 1}.0", "1e-300",
                "253402300799999.99999999"]

event_times = st.one_of(
    st.sampled_from(EXTREME_DATES).map(jstr),
    st.builds(lambda y, md, t, o: jstr(f"{y}-{md}{t}{o}"), st.sampled_from(YEARS), st.sampled_from(MONTH_DAYS),
              st.sampled_from(TIMES), st.sampled_from(OFFSETS)),
    st.sampled_from(MALFORMED_DATES).map(jstr),
    st.sampled_from(EPOCH_INTS).map(str),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(EPOCH_FLOATS),
    st.floats().map(json.dumps),
    HUGE_INTS,
    st.builds(lambda d: jstr(str(d)), HUGE_INTS),  # epoch as a string of thousands of digits
    st.sampled_from(["true", "false", "null", "{}", "[]", "[2024, 1, 1]", '{"$date": 1700000000000}']),
)

# -- any JSON value ---------------------------------------------------------------------------------

DEPTHS = st.one_of(st.integers(1, 50), st.integers(900, 1_100), st.integers(1_000, 20_000))


def json_any(max_string: int) -> st.SearchStrategy[str]:
    scalars = st.one_of(json_strings(max_string), numbers, st.sampled_from(["true", "false", "null"]))
    return st.one_of(
        scalars,
        st.builds(nested, DEPTHS, st.sampled_from(["1", '"x"', "[]", "{}", "NaN", huge_int(5_000)]),
                  st.sampled_from(["[", "{"])),
        st.lists(scalars, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(["a", "title", "", "\ud800"]), scalars), max_size=3).map(obj),
    )


# -- ordinary fields (what real traffic looks like) -------------------------------------------------

blank_free = st.text(ORDINARY_CHARS | st.sampled_from([" ", "\t", "\n"]), min_size=1, max_size=60).filter(
    lambda s: s.strip())
ordinary_ids = st.one_of(st.integers(0, 10**15), st.integers(-(2**63), 2**63 - 1),
                         st.text(ORDINARY_CHARS | st.just(" "), min_size=1, max_size=30).filter(lambda s: s.strip()))
ordinary_tags = st.one_of(st.none(), st.lists(st.text(ORDINARY_CHARS, max_size=15), max_size=8),
                          st.text(ORDINARY_CHARS | st.just(" "), max_size=60))
minutes = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
ordinary_datetimes = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1),
                                  timezones=st.one_of(st.none(), st.just(UTC), minutes))
ordinary_event_times = st.one_of(
    st.none(),
    st.builds(lambda d, sep: d.isoformat(sep=sep), ordinary_datetimes, st.sampled_from(["T", " "])),
    st.builds(lambda d: d.strftime("%Y-%m-%d %H:%M:%S"), ordinary_datetimes),  # the Elo7 catalog's form
    st.integers(0, 4_102_444_800_000),
)


@st.composite
def valid_products(draw: st.DrawFn) -> ValidProduct:
    """An ordinary product: must classify as Valid."""
    doc: dict[str, Any] = {"product_id": draw(ordinary_ids), "title": draw(blank_free)}
    for name, strategy in (("tags", ordinary_tags), ("description", st.none() | ordinary_text),
                           ("event_time", ordinary_event_times)):
        value = draw(strategy)
        if value is not None or draw(st.booleans()):
            doc[name] = value
    extra = draw(st.dictionaries(st.sampled_from(["price", "seller_id", "query", "category", "position"]),
                                 st.one_of(st.integers(-(10**9), 10**9), st.floats(-1e9, 1e9), ordinary_text,
                                           st.booleans(), st.none()), max_size=3))
    doc = {**extra, **doc}
    keys = draw(st.permutations(list(doc)))
    doc = {k: doc[k] for k in keys}
    return ValidProduct(Blob(json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8")), doc)


@st.composite
def _ordinary_field_texts(draw: st.DrawFn) -> dict[str, str]:
    product = draw(valid_products())
    return {k: json.dumps(v, ensure_ascii=True) for k, v in product.doc.items()}


# -- hostile products -------------------------------------------------------------------------------

# Plain schema violations under the contract (messages.py): a wrong type, a blank required field, an
# unparseable or out-of-range time. Each must be a schema_violation naming its field.
STRICT: dict[str, list[str]] = {
    "product_id": ["true", "false", "null", "1.5", "1.0", "-0.0", "{}", '{"id": 1}', "[]", '["p1"]', "[1]", '""',
                   '"   "', '"\\t\\n"', '"\\u3000"'],
    "title": ["7", "1.5", "true", "null", "[]", '["Caneca"]', "{}", '{"pt": "Caneca"}', '""', '"   "', '"\\u3000"',
              '"\\t\\n\\r"', '"\\u2028"'],
    "tags": ["7", "1.5", "true", "{}", '{"a": "b"}', "[1]", '["a", 2]', "[null]", '[["a"]]', "[true]", '[{"a": 1}]'],
    "description": ["7", "1.5", "true", "[]", '["a"]', "{}"],
    "event_time": ["true", "false", "{}", "[]", "[2024]", '"soon"', '"2024-13-01T00:00:00"', '"2024-02-30T00:00:00"',
                   '"1700000000000"', '"-5"', "-1", "-1.5", str(MAX_EPOCH_MS + 1), "1e300", '"0000-01-01T00:00:00"',
                   '"10000-01-01T00:00:00"'],
}


def field_values(name: str, max_string: int) -> st.SearchStrategy[str]:
    """Hostile JSON text for one field (ambiguous cases included: the fix may accept or reject them)."""
    big = big_text(max_string)
    common = json_any(max_string)
    if name == "product_id":
        return st.one_of(common, HUGE_INTS, st.sampled_from(SPECIAL_FLOATS), big.map(jstr),
                         st.sampled_from([*SURROGATE_TEXTS, "\x00", "id\x00", "\x7f"]).map(jstr))
    if name in ("title", "description"):
        return st.one_of(common, big.map(jstr), big.map(lambda s: jstr(s, ascii_only=not _encodable(s))),
                         st.sampled_from(SURROGATE_TEXTS + WHITESPACE_ONLY + ["\x00", "a\x00b", "\x00" * 10]).map(jstr))
    if name == "tags":
        many = st.builds(lambda tag, n: "[" + ", ".join([jstr(tag)] * n) + "]",
                         st.sampled_from(["a", "", " ", "\ud800"]),
                         st.integers(1, max(1, max_string // 8)))
        return st.one_of(common, big.map(jstr), many, st.builds(nested, DEPTHS, st.just('"a"')),
                         st.lists(json_strings(64), max_size=5).map(lambda xs: "[" + ", ".join(xs) + "]"),
                         st.sampled_from(SURROGATE_TEXTS).map(lambda s: "[" + jstr(s) + "]"))
    if name == "event_time":
        return st.one_of(event_times, event_times, common)
    return st.one_of(common, HUGE_INTS, st.builds(nested, DEPTHS))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


IGNORED_NAMES = ["n", "price", "extra", "seller_id", "Title", "product_id_", "meta", "\u00e7"]


@st.composite
def hostile_products(draw: st.DrawFn, max_string: int = MAX_MESSAGE_BYTES) -> Hostile:
    """A hand-written JSON product with one or more hostile parts (see module docstring)."""
    fields = draw(_ordinary_field_texts())
    pairs = list(fields.items())
    # hypothesis leans towards the first choices: the open-ended kinds come first
    kind = draw(st.sampled_from(["field", "ignored", "duplicate", "strict", "field", "many", "duplicate-first",
                                 "missing"]))
    culprit: str | None
    strict = False
    if kind == "strict":
        culprit = draw(st.sampled_from(FIELDS))
        value = draw(st.sampled_from(STRICT[culprit]))
        pairs = [(k, v) for k, v in pairs if k != culprit] + [(culprit, value)]
        strict = True
    elif kind == "missing":
        culprit = draw(st.sampled_from(["product_id", "title"]))
        pairs = [(k, v) for k, v in pairs if k != culprit]
        strict = True
    elif kind == "field":
        culprit = draw(st.sampled_from(FIELDS))
        pairs = [(k, v) for k, v in pairs if k != culprit] + [(culprit, draw(field_values(culprit, max_string)))]
    elif kind == "ignored":
        culprit = draw(st.sampled_from(IGNORED_NAMES))
        pairs = [(k, v) for k, v in pairs if k != culprit] + [(culprit, draw(field_values(culprit, max_string)))]
    elif kind in ("duplicate", "duplicate-first"):
        # Python's json keeps the last; both orders, so a fix may not depend on which one wins.
        culprit = draw(st.sampled_from(FIELDS))
        hostile = draw(st.one_of(st.sampled_from(STRICT[culprit]), field_values(culprit, max_string)))
        ordinary = fields.get(culprit, '"ok"')
        pairs = [(k, v) for k, v in pairs if k != culprit]
        pairs += [(culprit, hostile), (culprit, ordinary)] if kind == "duplicate-first" else [(culprit, ordinary),
                                                                                               (culprit, hostile)]
    else:  # many
        culprit = None
        names = draw(st.lists(st.sampled_from((*FIELDS, "n")), min_size=2, max_size=4, unique=True))
        pairs = [(k, v) for k, v in pairs if k not in names]
        pairs += [(name, draw(field_values(name, max_string // 4))) for name in names]
    order = draw(st.permutations(range(len(pairs))))
    pairs = [pairs[i] for i in order]
    sep, colon = draw(st.sampled_from([(", ", ": "), (",", ":"), (" ,\n\t", " :\r\n ")]))
    text = obj(pairs, sep, colon)
    if draw(st.integers(0, 9)) == 0:
        text = draw(st.sampled_from([" ", "\n", "\t", "\r\n"])) + text + draw(st.sampled_from(["", " ", "\n"]))
    return Hostile(Blob(text.encode("utf-8")), culprit, strict)


# -- raw bytes --------------------------------------------------------------------------------------

INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xe2\x82", b"\xf0\x28\x8c\xbc",
                b"\xf0\x90\x28\xbc", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
                b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xc3"]
NOT_OBJECTS = [b"null", b"true", b"1", b"-0", b"1e400", b"NaN", b"-Infinity", b'"x"', b'""', b"[]", b"[{}]",
               b'[{"product_id": 1, "title": "Caneca"}]', b" ", b"\n", b"{", b"}", b"{}", b'{"product_id"}',
               b'{"product_id": 1, "title": "Caneca"', b'{"product_id": 1, "title": "Caneca"}}',
               b'{"product_id": 1, "title": "Caneca"} {}', b'{"product_id": 1, "title": "Caneca",}',
               b"{'product_id': 1, 'title': 'Caneca'}", b"\x00", b"\x00" * 100]
BOMS = [b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00"]


def _splice(value: bytes, insert: bytes, where: float) -> bytes:
    i = int(len(value) * where)
    return value[:i] + insert + value[i:]


def raw_values(max_size: int = MAX_MESSAGE_BYTES + 1_000) -> st.SearchStrategy[bytes]:
    """Any bytes a producer can send (values up to about ``max_size`` bytes)."""
    products = valid_products().map(lambda p: p.value)
    units = st.one_of(st.binary(min_size=1, max_size=16), st.sampled_from([*INVALID_UTF8, b"a", b" ", b"[", b"{"]))
    sizes = st.one_of(st.integers(0, max_size), st.sampled_from(
        [MAX_MESSAGE_BYTES - 1, MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1, max_size]).filter(lambda n: n <= max_size))
    return st.one_of(
        st.just(b""),
        st.binary(max_size=300),
        st.sampled_from(INVALID_UTF8),
        st.builds(repeat_to, units, sizes),
        st.builds(_splice, products, st.sampled_from(INVALID_UTF8), st.floats(0, 1)),
        st.builds(lambda bom, p: bom + p, st.sampled_from(BOMS), products),
        st.builds(lambda p, codec: p.decode().encode(codec), products,
                  st.sampled_from(["utf-16", "utf-16-be", "utf-32"])),
        st.builds(lambda s: ('{"product_id": 1, "title": "' + s + '"}').encode("utf-8", "surrogatepass"),
                  st.sampled_from(SURROGATE_TEXTS)),  # CESU-8-style raw surrogate bytes: not UTF-8
        st.sampled_from(NOT_OBJECTS),
        st.builds(lambda p, f: p[: int(len(p) * f)], products, st.floats(0, 1)),
        st.builds(lambda d, k: nested(d, "1", k).encode(), DEPTHS, st.sampled_from(["[", "{"])),
        st.builds(lambda p, n: p + b" " * n, products, st.integers(0, max_size)).filter(lambda v: len(v) <= max_size),
        hostile_products(max_string=max_size).map(lambda h: h.value).filter(lambda v: len(v) <= max_size),
        products,
    ).map(Blob)


# -- keys -------------------------------------------------------------------------------------------


def kafka_keys(max_size: int = MAX_MESSAGE_BYTES) -> st.SearchStrategy[bytes | None]:
    units = st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from([b"k", b"\x00", b"\xff", b"\xed\xa0\x80"]))
    return st.one_of(
        st.none(),
        st.just(b""),
        st.binary(max_size=64),
        ordinary_text.map(lambda s: s.encode("utf-8")),
        ordinary_ids.map(lambda p: str(p).encode("utf-8")),
        st.sampled_from(INVALID_UTF8),
        st.builds(repeat_to, units, st.integers(1_000, max(1_000, max_size))),
    ).map(blob)


# -- deterministic sampling -------------------------------------------------------------------------


def draw_examples(strategy: st.SearchStrategy[T], n: int, seed_: int = 20_240_601) -> list[T]:
    """Up to ``n`` distinct draws of ``strategy``, the same on every run (fixed seed, no database).

    (``strategy.example()`` is neither deterministic nor meant for tests.)"""
    out: list[T] = []

    @seed(seed_)
    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: T) -> None:
        out.append(example)

    collect()
    return out[:n]


# -- the fixed corpus -------------------------------------------------------------------------------

Entry = tuple[str, bytes | None, bytes | None]  # (name, key, value)

_NINES = huge_int(5_000)
_BIG = 900_000  # ~900 KB: under STREAM_MAX_MESSAGE_BYTES, but a base64 copy of it is not under 1 MiB


def _p(**fields: str) -> bytes:
    """A product as JSON text from field JSON texts (product_id and title default to ordinary ones)."""
    pairs = [("product_id", fields.pop("product_id", '"corpus"')), ("title", fields.pop("title", '"Caneca azul"'))]
    pairs = [(k, v) for k, v in pairs if v is not None] + [(k.replace("__", ""), v) for k, v in fields.items()]
    return obj(pairs).encode("utf-8")


def _big_json_string(literal: str, size: int = _BIG) -> str:
    """A JSON string literal of about ``size`` bytes: ``literal`` (already JSON-escaped) repeated."""
    return '"' + literal * max(1, size // len(literal.encode("utf-8"))) + '"'


def _corpus() -> list[Entry]:
    e: list[tuple[str, bytes | None]] = [
        # the known crash: integers beyond Python's int-string limit (4300 digits)
        ("bigint-ignored-5000", _p(n=_NINES)),
        ("bigint-ignored-negative-20000", _p(n=huge_int(20_000, negative=True))),
        ("bigint-ignored-in-list", _p(n="[1, " + _NINES + "]")),
        ("bigint-ignored-in-object", _p(meta='{"x": {"y": ' + _NINES + "}}")),
        ("bigint-product-id-5000", _p(product_id=_NINES)),
        ("bigint-product-id-4300", _p(product_id=huge_int(4_300))),
        ("bigint-product-id-4299", _p(product_id=huge_int(4_299))),
        ("bigint-title", _p(title=_NINES)),
        ("bigint-tags", _p(tags="[" + _NINES + "]")),
        ("bigint-event-time", _p(event_time=_NINES)),
        ("bigint-event-time-negative", _p(event_time=huge_int(5_000, negative=True))),
        ("bigint-event-time-string", _p(event_time=jstr(_NINES))),
        ("bigint-duplicate-overwritten", _p(n=_NINES, __n="1")),
        # the known crash: datetimes that overflow when moved to UTC
        ("time-0001+01:00", _p(event_time='"0001-01-01T00:00:00+01:00"')),
        ("time-0001+14:00", _p(event_time='"0001-01-01T00:00:00+14:00"')),
        ("time-9999-05:00", _p(event_time='"9999-12-31T23:59:59-05:00"')),
        ("time-9999-14:00-micro", _p(event_time='"9999-12-31T23:59:59.999999-14:00"')),
        ("time-0001-naive", _p(event_time='"0001-01-01T00:00:00"')),
        ("time-9999-date-only", _p(event_time='"9999-12-31"')),
        ("time-year-0", _p(event_time='"0000-01-01T00:00:00Z"')),
        ("time-year-10000", _p(event_time='"10000-01-01T00:00:00Z"')),
        ("time-negative-year", _p(event_time='"-0001-01-01T00:00:00Z"')),
        ("time-offset-24h", _p(event_time='"2024-01-01T00:00:00+24:00"')),
        ("time-leap-second", _p(event_time='"2016-12-31T23:59:60Z"')),
        ("time-fullwidth-digits", _p(event_time=jstr("\uff12\uff10\uff12\uff14-01-01"))),
        ("time-nul", _p(event_time='"2024-01-01T00:00:00\\u0000"')),
        ("time-surrogate", _p(event_time='"2024-01-01T00:00:00\\ud800"')),
        ("epoch-negative", _p(event_time="-1")),
        ("epoch-min-int64", _p(event_time=str(-(2**63)))),
        ("epoch-max", _p(event_time=str(MAX_EPOCH_MS))),
        ("epoch-max+1", _p(event_time=str(MAX_EPOCH_MS + 1))),
        ("epoch-max-float", _p(event_time=f"{MAX_EPOCH_MS}.9")),
        ("epoch-2^64", _p(event_time=str(2**64))),
        ("epoch-float-1e300", _p(event_time="1e300")),
        ("epoch-float-1e400", _p(event_time="1e400")),
        ("epoch-nan", _p(event_time="NaN")),
        ("epoch-negative-infinity", _p(event_time="-Infinity")),
        ("epoch-string", _p(event_time='"1700000000000"')),
        ("epoch-string-negative", _p(event_time='"-1700000000000"')),
        # floats and non-finite numbers
        ("float-1e400-id", _p(product_id="1e400")),
        ("float-id", _p(product_id="1.0")),
        ("nan-id", _p(product_id="NaN")),
        ("infinity-title", _p(title="Infinity")),
        ("nan-ignored", _p(price="NaN", weight="-Infinity", size="1e400")),
        # nesting
        ("deep-ignored-100000", _p(n=nested(100_000))),
        ("deep-ignored-objects-5000", _p(n=nested(5_000, kind="{"))),
        ("deep-ignored-990", _p(n=nested(990))),
        ("deep-tags-3000", _p(tags=nested(3_000, '"a"'))),
        ("deep-tags-500", _p(tags=nested(500, '"a"'))),
        ("deep-top-level", nested(200_000).encode()),
        # duplicate keys
        ("dup-title-last-invalid", _p(__title="null")),
        ("dup-title-last-valid", b'{"product_id": "dup", "title": null, "title": "Caneca"}'),
        ("dup-id-types", b'{"product_id": "a", "title": "Caneca", "product_id": {"id": 1}}'),
        ("dup-event-time", _p(event_time='"2024-01-01T00:00:00Z"', __event_time='"0001-01-01T00:00:00+01:00"')),
        # lone surrogates, control characters, NUL
        ("surrogate-title", _p(title='"Caneca \\ud800"')),
        ("surrogate-product-id", _p(product_id='"\\udfff"')),
        ("surrogate-tags", _p(tags='["ok", "\\ud800"]')),
        ("surrogate-tags-string", _p(tags='"a \\udc00 b"')),
        ("surrogate-description", _p(description='"\\ud83d"')),
        ("surrogate-raw-bytes", b'{"product_id": "x", "title": "Caneca \xed\xa0\x80"}'),
        ("nul-title", _p(title='"\\u0000"')),
        ("nul-product-id", _p(product_id='"\\u0000"')),
        ("control-chars-everywhere", _p(product_id='"\\u0001\\u001f"', title='"a\\u0000\\u0008\\u001b[31mred"',
                                        tags='["\\u007f", "\\u2028"]', description='"\\u0085\\ufeff\\uffff"')),
        ("raw-control-in-string", b'{"product_id": "x", "title": "a\x00b"}'),
        ("bidi-override-title", _p(title=jstr("\u202eacenaC"))),
        # ids and titles of the wrong kind
        ("empty-id", _p(product_id='""')),
        ("null-id", _p(product_id="null")),
        ("whitespace-id", _p(product_id='"\\t \\u3000"')),
        ("bool-id", _p(product_id="true")),
        ("object-id", _p(product_id='{"id": 1}')),
        ("list-id", _p(product_id='[1]')),
        ("negative-id", _p(product_id="-1")),
        ("whitespace-title", _p(title='" \\t\\n\\u3000\\u2028 "')),
        ("no-title", _p(title=None)),
        ("no-id", _p(product_id=None)),
        ("tags-wrong-type", _p(tags='{"a": 1}')),
        ("description-wrong-type", _p(description="[1]")),
        # not JSON objects, odd encodings
        ("empty-value", b""),
        ("tombstone", None),
        ("json-null", b"null"),
        ("json-array", b"[]"),
        ("bom-json", b"\xef\xbb\xbf" + _p()),
        ("utf16-json", _p().decode().encode("utf-16")),
        ("binary", bytes(range(256))),
        ("single-quotes", b"{'product_id': 1, 'title': 'Caneca'}"),
        ("trailing-garbage", _p() + b" {}"),
        # megabytes (values under STREAM_MAX_MESSAGE_BYTES, but their copies are not under 1 MiB)
        ("mb-title", _p(title=_big_json_string("Caneca azul "))),
        ("mb-product-id", _p(product_id=_big_json_string("p"))),
        ("mb-description", _p(description=_big_json_string("descri\u00e7\u00e3o "))),
        ("mb-tags-string", _p(tags=_big_json_string("tag "))),
        ("mb-tags-list", _p(tags="[" + ", ".join(['"t"'] * (_BIG // 5)) + "]")),
        ("mb-ignored", _p(n=_big_json_string("x"))),
        ("mb-invalid-utf8", repeat_to(b"\xff\xfe", _BIG)),
        ("mb-surrogate-title", _p(title=_big_json_string("\\ud800"))),
        ("mb-whitespace-title", _p(title=_big_json_string(" "))),
        ("mb-not-an-object", b"[" + b"1," * (_BIG // 2) + b"1]"),
        ("at-limit-invalid-utf8", repeat_to(b"\xff", MAX_MESSAGE_BYTES)),
    ]
    entries: list[Entry] = [(name, name.encode(), value) for name, value in e]
    # hostile keys: the dead letters are keyed by them; valid products are keyed by product_id
    entries += [
        ("key-none-valid", None, _p(product_id='"key-none"')),
        ("key-none-invalid", None, b"not json"),
        ("key-empty-valid", b"", _p(product_id='"key-empty"')),
        ("key-binary-invalid", bytes(range(256)), b'{"product_id": true}'),
        ("key-invalid-utf8-bigint", b"\xff\xed\xa0\x80", _p(n=_NINES)),
        ("key-huge-valid", repeat_to(b"k", 500_000), _p(product_id='"key-huge"')),
        ("key-huge-invalid", repeat_to(b"\x00\xff", 500_000), b"{"),
        ("key-huge-value-huge-invalid", repeat_to(b"K", 400_000), repeat_to(b"\xc3\x28", 500_000)),
        ("key-huge-value-mb-title", repeat_to(b"K", 300_000), _p(title=_big_json_string("Caneca ", 600_000))),
    ]
    return [(name, blob(key), blob(value)) for name, key, value in entries]


CORPUS: list[Entry] = _corpus()
assert len({name for name, _, _ in CORPUS}) == len(CORPUS), "corpus names must be unique"
assert all((len(k or b"") + len(v or b"")) < MAX_MESSAGE_BYTES + 1_000 for _, k, v in CORPUS)

# Corpus entries whose value is an ordinary valid product (they must reach `categories`).
CORPUS_VALID = {"key-none-valid", "key-empty-valid", "key-huge-valid"}

__all__ = [
    "CORPUS", "CORPUS_VALID", "FIELDS", "MAX_MESSAGE_BYTES", "MAX_OUTPUT_BYTES", "STRICT", "Blob", "Hostile", "Text",
    "ValidProduct", "draw_examples", "hostile_products", "kafka_keys", "raw_values", "valid_products",
]

