"""What can go wrong serving a request, in the server's own words, apart from any transport.

The registry, the repository, the request pipeline and the tensor readers raise these. Each kind says what
happened, not how a protocol spells it: ``server.errors.HTTP_STATUS`` maps each kind to an HTTP status (and
the answer's JSON ``{"error": code, "detail": text}``), ``server.kserve_grpc.GRPC_STATUS`` to a gRPC status.
"""

from __future__ import annotations


class ServingError(Exception):
    """A refused or failed request: a short machine ``code``, a human ``detail``, and for a condition that
    passes, how many seconds a client should wait before it retries."""

    def __init__(self, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.code, self.detail, self.retry_after = code, detail, retry_after


class Unauthenticated(ServingError):
    """The request does not carry the server's API key."""


class NotFound(ServingError):
    """No such model, version or store entry (or one unloaded)."""


class InvalidInput(ServingError):
    """The request itself is malformed: a tensor, a body or a parameter that cannot be read."""


class InvalidParameter(ServingError):
    """A well-formed parameter with a value this model or server does not take."""


class TooLarge(ServingError):
    """The request asks for more than a limit allows, however long it waits."""


class Shed(ServingError):
    """Refused at once to protect the server (full queue, in-flight budget): retry later."""


class Unavailable(ServingError):
    """The model cannot answer now (loading, unhealthy, a failed batch): retry later."""


class ModelBroken(ServingError):
    """The model cannot answer this at all (it failed to load, or produced non-finite outputs)."""


class PastDeadline(ServingError):
    """No answer within the request's deadline."""


class Conflict(ServingError):
    """The server's set-up does not allow this (e.g. behind several HTTP workers)."""


class LoadFailed(ServingError):
    """A model could not be loaded from the store; what served before still serves."""


class ClientGone(ServingError):
    """The client went away while its request waited; nothing is sent."""

    def __init__(self) -> None:
        super().__init__("client_closed_request", "the client closed the connection")
