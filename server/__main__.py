"""``python -m server --store model_store``: serve the store's models with uvicorn."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import uvicorn

from server.allocator import configure_malloc
from server.connections import uvicorn_options
from server.grpc_server import check_grpc_port
from server.logs import configure_logging
from server.main import create_app
from server.registry import read_store
from server.settings import parse_settings


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and env vars, check the store, then serve until interrupted; one-line errors, exit 2."""
    configure_malloc()  # before any thread starts
    try:
        settings = parse_settings(argv)
        configure_logging(settings.log_level)
        if settings.grpc_port:
            check_grpc_port(settings.host, settings.grpc_port)
        if settings.http_workers > 1:
            read_store(settings)  # a bad store is a one-line error here, not in every child
        else:
            app = create_app(settings, show_banner=True)
    except (ValueError, OSError) as exc:  # ManifestError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.http_workers > 1:
        from server.front_end import supervise

        return supervise(settings, list(sys.argv[1:] if argv is None else argv))
    uvicorn.run(app, host=settings.host, port=settings.port, **uvicorn_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
