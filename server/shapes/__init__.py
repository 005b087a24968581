"""The JSON bodies the server answers with, as TypedDicts: plain dicts at run time (orjson encodes them as fast as
before, nothing validates them on the way out), and the source of the response schemas in ``/openapi.json``."""
