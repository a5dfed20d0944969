"""OpenLineage events checked against the JSON schema of the spec version they declare.

The spec files are vendored in ``spec/`` (one per published version, 1-0-0 to 2-0-2, and the
facet schemas). An event names its version in ``schemaURL``
(``https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent``); a version the server
does not hold is checked against the newest one it holds of the same MODEL number (the spec
versions itself as MODEL-REVISION-ADDITION, and within one MODEL a newer schema accepts what an
older one did), and a MODEL it does not know is refused. The facets the server maps (error
message, parent run, input and output statistics, data quality metrics) are checked against
their own schemas too, since their fields become the run's.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any, Final

import jsonschema_rs

__all__ = ["SPEC_VERSIONS", "EventKind", "InvalidEvent", "check_event"]

_VERSION_RE: Final = re.compile(r"/spec/(\d+)-(\d+)-(\d+)/OpenLineage\.json")
_SPEC: Final = resources.files("telemhq_server.lineage") / "spec"
#: The spec versions held in ``spec/``, oldest first.
SPEC_VERSIONS: Final = (
    "1-0-0",
    "1-0-1",
    "1-0-2",
    "1-0-3",
    "1-0-4",
    "1-0-5",
    "2-0-0",
    "2-0-1",
    "2-0-2",
)
#: An event's kind, as its version's schema names it.
EventKind = str


class InvalidEvent(ValueError):
    """An event the spec refuses; the message names the field and what is wrong."""


def _load(path: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((_SPEC / path).read_text("utf-8"))
    return value


@functools.cache
def _registry() -> jsonschema_rs.Registry:
    """Every vendored schema under its ``$id``. Spec versions 1-0-4 to 2-0-1 also name the
    facet schemas relative to themselves (``facets/SchemaDatasetFacet.json``, as
    alternatives to the generic facet): those names resolve to the vendored facet files."""
    cores = {v: _load(f"OpenLineage-{v}.json") for v in SPEC_VERSIONS}
    facet_files = sorted(p.name for p in (_SPEC / "facets").iterdir() if p.name.endswith(".json"))
    facets = {name: _load(f"facets/{name}") for name in facet_files}
    resources = [(doc["$id"], doc) for doc in (*cores.values(), *facets.values())]
    for version, core in cores.items():
        if '"facets/' in json.dumps(core):
            base = f"https://openlineage.io/spec/{version}/facets/"
            resources += [(base + name, doc) for name, doc in facets.items()]
    return jsonschema_rs.Registry(resources)


@functools.cache
def _validator(ref: str) -> jsonschema_rs.Validator:
    """The compiled check of the definition ``ref`` (formats such as date-time and uuid
    included), never fetching anything: every schema it may reach is in the registry."""
    return jsonschema_rs.Draft202012Validator(
        {"$ref": ref}, registry=_registry(), validate_formats=True
    )


def _version(schema_url: Any) -> str:
    """The vendored version that checks events declaring ``schema_url``."""
    match = _VERSION_RE.search(schema_url) if isinstance(schema_url, str) else None
    if match is None:
        raise InvalidEvent(
            "schemaURL: must name an OpenLineage spec version, such as "
            "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent; "
            f"got {json.dumps(schema_url)}"
        )
    declared = "-".join(match.groups())
    if declared in SPEC_VERSIONS:
        return declared
    same_model = [v for v in SPEC_VERSIONS if v.split("-")[0] == match.group(1)]
    if not same_model:
        raise InvalidEvent(
            f"schemaURL: spec version {declared} is not supported; "
            f"supported: {', '.join(SPEC_VERSIONS)}"
        )
    return same_model[-1]


def _kind(event: dict[str, Any], version: str) -> EventKind:
    """RunEvent, DatasetEvent or JobEvent (the last two exist from spec 2-0-0 on)."""
    fragment = str(event.get("schemaURL", "")).partition("#")[2]
    for kind in ("DatasetEvent", "JobEvent", "RunEvent"):
        if fragment.endswith("/" + kind):
            return kind
    if "run" in event or "eventType" in event or version < "2":
        return "RunEvent"
    return "DatasetEvent" if "dataset" in event else "JobEvent"


def _raise_first(validator: jsonschema_rs.Validator, value: Any, prefix: str = "") -> None:
    """Raise :class:`InvalidEvent` for the first thing ``validator`` finds wrong in
    ``value``, if any (its place written ``outputs[0].name``, after ``prefix``)."""
    if validator.is_valid(value):  # the usual case, and cheaper than building the errors
        return
    for error in validator.iter_errors(value):
        path = "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.instance_path
        ).lstrip(".")
        where = ".".join(p for p in (prefix, path) if p) or "event"
        raise InvalidEvent(f"{where}: {error.message}")


#: The facets the server maps, checked against their own schemas: of the run, and of each
#: dataset of a side (the event's key, the dataset's facets key, the facets).
_RUN_FACETS: Final = ("ErrorMessageRunFacet", "ParentRunFacet")
_DATASET_FACETS: Final = (
    ("outputs", "outputFacets", ("OutputStatisticsOutputDatasetFacet",)),
    (
        "inputs",
        "inputFacets",
        ("InputStatisticsInputDatasetFacet", "DataQualityMetricsInputDatasetFacet"),
    ),
)


def _facets_checked(event: dict[str, Any]) -> None:
    run = event.get("run")
    if isinstance(run, dict) and isinstance(run.get("facets"), dict):
        for name in _RUN_FACETS:
            _raise_first(_validator(_facet_ref(name)), run["facets"], "run.facets")
    for side, facets_key, names in _DATASET_FACETS:
        for i, dataset in enumerate(event.get(side) or ()):
            facets = dataset.get(facets_key) if isinstance(dataset, dict) else None
            if isinstance(facets, dict):
                for name in names:
                    _raise_first(_validator(_facet_ref(name)), facets, f"{side}[{i}].{facets_key}")


@functools.cache
def _facet_ref(name: str) -> str:
    return str(_load(f"facets/{name}.json")["$id"])


@functools.cache
def _whole_run_event(ref: str) -> jsonschema_rs.Validator:
    """The RunEvent definition ``ref`` and the mapped facets' schemas in one check, so that a
    valid event (the usual case) costs one call; it accepts only what the checks one by one
    (which name what is wrong) accept."""

    def each(names: tuple[str, ...]) -> dict[str, Any]:
        return {"allOf": [{"$ref": _facet_ref(name)} for name in names]}

    datasets = {
        side: {"items": {"properties": {facets_key: each(names)}}}
        for side, facets_key, names in _DATASET_FACETS
    }
    run = {"properties": {"facets": each(_RUN_FACETS)}}
    schema = {"allOf": [{"$ref": ref}, {"properties": {"run": run, **datasets}}]}
    return jsonschema_rs.Draft202012Validator(schema, registry=_registry(), validate_formats=True)


def check_event(event: Any) -> EventKind:
    """The kind of ``event`` (a parsed JSON document) after checking it against the spec;
    raises :class:`InvalidEvent` naming the first thing wrong."""
    if not isinstance(event, dict):
        raise InvalidEvent("event: must be a JSON object")
    version = _version(event.get("schemaURL"))
    kind = _kind(event, version)
    ref = f"https://openlineage.io/spec/{version}/OpenLineage.json#/$defs/{kind}"
    if kind == "RunEvent" and _whole_run_event(ref).is_valid(event):
        return kind
    _raise_first(_validator(ref), event)
    if kind == "RunEvent":
        _facets_checked(event)
    return kind
