"""Requests drawn from the server's own OpenAPI document, and answers checked against it.

:func:`value_for` turns a JSON schema of the document into a Hypothesis strategy (the keywords
the document uses: ``$ref``, ``type``, ``enum``, ``const``, ``oneOf``, ``properties``/
``required``/``additionalProperties``, ``items``/``maxItems``, ``minimum``/``maximum``,
``maxLength``, ``pattern``), mixed with hostile JSON (NUL characters, lone big integers, deep
nesting, wrong types). :func:`problems` checks an answer against a schema of the document and
lists what breaks it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hypothesis import strategies as st

__all__ = ["hostile_json", "problems", "value_for"]

_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),  # JSON-encodable
    max_size=30,
)
#: Strings a sender may try: NUL, control and astral characters, long ones.
hostile_text = st.one_of(
    _TEXT,
    st.sampled_from(["\x00", "a\x00b", "\U0001f600", "\u202e", "' OR 1=1 --", "../../etc"]),
    st.text(max_size=3).map(lambda s: s * 100),
)
hostile_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
hostile_json: st.SearchStrategy[Any] = st.recursive(
    hostile_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)
    ),
    max_leaves=12,
)


def _resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


def value_for(schema: dict[str, Any], doc: dict[str, Any], hostile: float = 0.2) -> Any:
    """A strategy for values of ``schema``; about ``hostile`` of them are anything at all."""
    valid = _valid(schema, doc)
    if hostile <= 0:
        return valid
    return st.one_of(valid, valid, valid, hostile_json)


def _valid(schema: dict[str, Any], doc: dict[str, Any]) -> st.SearchStrategy[Any]:
    schema = _resolve(schema, doc)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "oneOf" in schema:
        return st.one_of(*(_valid(s, doc) for s in schema["oneOf"]))
    kinds = schema.get("type", "object")
    if isinstance(kinds, list):
        return st.one_of(*(_valid({**schema, "type": k}, doc) for k in kinds))
    if kinds == "object":
        props = schema.get("properties", {})
        required = schema.get("required", [])
        optional = {k: v for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(
            {k: value_for(props[k], doc) for k in required if k in props},
            optional={k: value_for(v, doc) for k, v in optional.items()},
        )
    if kinds == "array":
        return st.lists(
            value_for(schema.get("items", {}), doc), max_size=min(schema.get("maxItems", 4), 4)
        )
    if kinds == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s: len(s) <= schema.get("maxLength", 10_000)
            )
        return st.text(max_size=schema.get("maxLength", 40))
    if kinds == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kinds == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False)
    if kinds == "boolean":
        return st.booleans()
    return st.none()


_JSON_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _JSON_TYPES[kind])


def problems(value: Any, schema: dict[str, Any], doc: dict[str, Any], at: str = "$") -> list[str]:
    """What in ``value`` breaks ``schema`` (empty: it conforms)."""
    schema = _resolve(schema, doc)
    found: list[str] = []
    if "const" in schema and value != schema["const"]:
        return [f"{at}: {value!r} is not {schema['const']!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at}: {value!r} not in {schema['enum']}"]
    if "oneOf" in schema:
        fits = sum(not problems(value, s, doc, at) for s in schema["oneOf"])
        return [] if fits == 1 else [f"{at}: matches {fits} of the oneOf schemas, not 1"]
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is(value, k) for k in kinds):
            return [f"{at}: {type(value).__name__} is not {kinds}"]
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"{at}: {name!r} is missing")
        props = schema.get("properties", {})
        for name, item in value.items():
            if name in props:
                found += problems(item, props[name], doc, f"{at}.{name}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{at}: unexpected {name!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += problems(item, schema["items"], doc, f"{at}[{i}]")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{at}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{at}: {value} > {schema['maximum']}")
        if isinstance(value, float) and not math.isfinite(value):
            found.append(f"{at}: {value} is not a JSON number")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            found.append(f"{at}: longer than {schema['maxLength']}")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            found.append(f"{at}: {value!r} does not match {schema['pattern']}")
    return found
