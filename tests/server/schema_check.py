"""Validation of JSON values against the response schemas, as a client reads them."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson

from server.responses import dumps


def as_client_sees(value: Any) -> Any:
    """``value`` after the server's JSON encoding and a client's parse (enums become their words)."""
    return orjson.loads(dumps(value))


def violations(schema: dict[str, Any], value: Any) -> list[str]:
    """Where ``value`` breaks ``schema`` (JSON Schema 2020-12, as OpenAPI 3.1 uses), one line each; empty if none."""
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message[:300]}"
            for error in validator.iter_errors(value)]
