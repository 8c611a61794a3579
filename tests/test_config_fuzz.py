"""The config parser against hostile files: whatever the bytes, the outcome is a Config or a
ConfigError that names the file; every number that gets through is finite and in its range."""

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from firmware.config import Config, ConfigError, parse_config, validate_config

SOURCE = "fuzz.toml"
SCHEMA = Config.model_json_schema()
PAIR = {
    "peer_lan_address": "192.0.2.12",
    "peer_sync_address": "198.51.100.2",
    "virtual_ip": "192.0.2.100/24",
}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _variants(prop: dict) -> list[dict]:
    """The alternatives of a property (an optional key is `anyOf` it and null), refs resolved."""
    if "$ref" in prop:
        prop = SCHEMA["$defs"][prop["$ref"].rsplit("/", 1)[-1]]
    return [_variants(p)[0] if "$ref" in p else p for p in prop.get("anyOf", [prop])]


def leaf_keys(schema: dict = SCHEMA, prefix: tuple[str, ...] = ()) -> Iterator[tuple]:
    """(path, schema) of every key that holds a value, sections walked (cameras aside)."""
    for name, prop in schema.get("properties", {}).items():
        for v in _variants(prop):
            if v.get("type") == "object" and "properties" in v:
                yield from leaf_keys(v, (*prefix, name))
            elif v.get("type") != "null" and name != "camera":
                yield (*prefix, name), v


NUMBERS = sorted({p: s for p, s in leaf_keys() if s.get("type") in ("integer", "number")}.items())
KEYS = dict(sorted(dict(leaf_keys()).items()))


def _with(path: tuple[str, ...], value) -> dict:
    """A config with one value set, and what its section needs besides."""
    raw: dict = {"pair": dict(PAIR)} if path[0] == "pair" else {}
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return raw


def test_the_walk_finds_the_known_keys():
    assert ("recorder", "retention_days") in dict(NUMBERS)
    assert ("pair", "health_weights", "ups_low") in dict(NUMBERS)
    assert ("api", "listen_address") in KEYS and len(NUMBERS) > 40


@pytest.mark.parametrize(("path", "schema"), NUMBERS, ids=[".".join(p) for p, _ in NUMBERS])
def test_every_number_is_typed_finite_and_bounded(path, schema):
    """No number key without a range both ways, and none takes a bool, a string or inf."""
    assert {"minimum", "exclusiveMinimum"} & schema.keys(), "no lower bound"
    assert {"maximum", "exclusiveMaximum"} & schema.keys(), "no upper bound"
    key = ".".join(path)
    for bad in (True, "1", math.inf, -math.inf, math.nan, 1e300, -1e300, 10**30):
        with pytest.raises(ConfigError) as e:
            validate_config(_with(path, bad), SOURCE)
        assert f"{SOURCE}: {key}: " in str(e.value), bad


def _check(data: str | bytes) -> None:
    try:
        cfg = parse_config(data, SOURCE)
    except ConfigError as e:
        lines = str(e).splitlines()
        assert lines and all(ln.startswith(f"{SOURCE}: ") for ln in lines), str(e)
        event("refused")
        return
    event("accepted")
    for path, _ in NUMBERS:
        node = cfg
        for part in path:
            node = getattr(node, part, None)
        assert node is None or math.isfinite(node), (path, node)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data):
    _check(data)


@FUZZ
@given(
    st.text(alphabet=st.sampled_from("[]=.\"'\n #abcdefgikmnoprstuvw_0123456789e+-"), max_size=120)
)
def test_toml_shaped_text(text):
    _check(text)


SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(
        [
            "0.0.0.0",
            "::",
            "not-an-ip",
            "rtsp://192.0.2.1/x",
            "/tmp/x",
            "",
            "cam1",
            "192.0.2.100/24",
            "oldest",
            "sim",
            "eth0",
            "a\x00b",
            "../x",
        ]
    ),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=4), SCALARS, max_size=2),
)


def _plausible(schema: dict) -> st.SearchStrategy:
    """A value of the key's own type, mostly in range, so that whole configs get through too."""
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("type") == "integer":
        return st.integers(lo, hi)
    if schema.get("type") == "number":
        return st.floats(lo, hi, allow_nan=False)
    if schema.get("type") == "boolean":
        return st.booleans()
    return st.just(schema["default"]) if schema.get("default") is not None else VALUES


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(map(_toml, v)) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + "}"


def _document(raw: dict, cameras: list[dict]) -> str:
    """Valid TOML: one table per section, then the [[camera]] entries."""
    out: list[str] = []
    for section, keys in raw.items():
        out.append(f"[{section}]")
        out += [f"{k} = {_toml(v)}" for k, v in keys.items()]
    for cam in cameras:
        out.append("[[camera]]")
        out += [f"{k} = {_toml(v)}" for k, v in cam.items()]
    return "\n".join(out) + "\n"


@st.composite
def documents(draw) -> str:
    """Mostly values of the right type at real keys (one in four anything at all), so that both
    outcomes come up often."""

    def value(plausible: st.SearchStrategy):
        return draw(VALUES if draw(st.integers(0, 3)) == 0 else plausible)

    raw: dict[str, dict] = {}
    paths = draw(st.lists(st.sampled_from(list(KEYS)), max_size=6))
    if draw(st.integers(0, 3)) and any(p[0] == "pair" for p in paths):
        raw["pair"] = dict(PAIR)
    for path in paths:
        raw.setdefault(".".join(path[:-1]), {})[path[-1]] = value(_plausible(KEYS[path]))
    cameras = [
        {
            "name": value(st.sampled_from(["cam1", "cam-2", "c_3"])),
            "url": value(st.just("rtsp://192.0.2.1/x")),
            "enabled": value(st.booleans()),
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    return _document(raw, cameras)


@FUZZ
@given(documents())
def test_valid_toml_with_random_values_at_real_keys(text):
    _check(text)


EXAMPLE = (Path(__file__).parent.parent / "rootfs/etc/nvr/nvr.toml").read_bytes()


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(EXAMPLE)), st.binary(max_size=4)), max_size=4),
    st.integers(0, len(EXAMPLE)),
)
def test_damaged_example_config(edits, cut):
    """The documented example with a few bytes overwritten and cut short (a torn write)."""
    data = bytearray(EXAMPLE[:cut])
    for at, junk in edits:
        data[at : at + len(junk)] = junk
    _check(bytes(data))
