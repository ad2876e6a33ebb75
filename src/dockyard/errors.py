"""The one error tree of dockyard.

Every error a user can cause or see is a subclass of ``DockyardError``; the API maps
each class to one HTTP status in ``dockyard.api.errors`` and the CLI prints its message.
Infrastructure exceptions (SQLAlchemy, OS, HTTP clients) are translated into these at
the edge of the backend that raised them.

    DockyardError
    ├── BadRequest            400  malformed JSON, bad query parameters
    ├── Unauthenticated       401  no or bad credentials
    ├── Forbidden             403  a capability token used for the wrong method
    ├── NotFound              404  missing, or someone else's (never told apart)
    ├── Conflict              409  write-once source uploaded twice, app name taken
    ├── PayloadTooLarge       413  body over its cap
    ├── UnsupportedMediaType  415  upload that is not a gzip archive
    ├── ValidationFailed      422  field errors: {"field": ["message", ...]}
    ├── RateLimited           429  too many requests for one token
    └── PipelineError              a deployment step failed; never an HTTP error
        ├── FetchError             source_url could not be fetched (blocked or failed)
        ├── ArchiveError           the archive is unsafe or malformed
        ├── BuildError             a buildpack failed, none matched, or the sandbox is missing
        ├── BootError              the release did not start (crashed or timed out)
        └── HookError              the postdeploy hook failed: the release never served
"""

from __future__ import annotations


class DockyardError(Exception):
    """Base of every error dockyard reports to a user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(DockyardError):
    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


class Unauthenticated(DockyardError):
    pass


class Forbidden(DockyardError):
    def __init__(self, message: str, code: str = "forbidden") -> None:
        super().__init__(message)
        self.code = code


class NotFound(DockyardError):
    def __init__(self, resource: str) -> None:
        super().__init__(f"{resource} not found")
        self.resource = resource


class Conflict(DockyardError):
    pass


class PayloadTooLarge(DockyardError):
    pass


class UnsupportedMediaType(DockyardError):
    pass


class ValidationFailed(DockyardError):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        if not errors:
            raise ValueError("a validation failure needs at least one field error")
        first_field, messages = next(iter(errors.items()))
        super().__init__(f"{first_field} {messages[0]}")
        self.errors = errors


class RateLimited(DockyardError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = "rate_limited"


class PipelineError(DockyardError):
    """A deployment step failed; the message is written to the deployment log as is."""


class FetchError(PipelineError):
    pass


class ArchiveError(PipelineError):
    pass


class BuildError(PipelineError):
    pass


class BootError(PipelineError):
    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class HookError(PipelineError):
    """The postdeploy hook (``scalingo.json``'s ``scripts``) failed or could not run."""
