"""Domain errors of the hub.

Every refusal the hub makes is a :class:`ChatError` carrying a stable,
dotted ``code`` that clients act on, and the fields that explain it.  The text
for people is never stored on the exception: it is looked up from the code in
:mod:`chat.i18n`, in French (the default) or English (R22).

The tree::

    ChatError
    ├── BadRequest            malformed frames and fields            (400)
    ├── Unauthenticated       missing, forged, expired, revoked token (401)
    ├── Forbidden             a rule or a membership says no          (403)
    │   └── RuleViolation     R1–R10 refusals from chat.policies
    ├── NotFound              unknown or invisible object             (404)
    ├── Conflict              state does not allow it                 (409)
    ├── TooLarge              an upload above the R7 limit            (413)
    ├── RateLimited           too fast; carries ``retry_after``       (429)
    ├── ServiceUnavailable    the database cannot be reached now;     (503)
    │                         carries ``retry_after``
    └── ConfigError           bad configuration at start-up (never sent to a client)
"""

from __future__ import annotations

from typing import Any


class ChatError(Exception):
    """Root of every refusal. ``code`` is stable; ``fields`` fill the message."""

    status: int = 400
    code: str = "error"

    def __init__(self, code: str | None = None, **fields: Any) -> None:
        if code is not None:
            self.code = code
        self.fields = fields
        super().__init__(f"{self.code} {fields}" if fields else self.code)

    def to_dict(self, language: str = "fr") -> dict[str, Any]:
        """The error as a client sees it: code, text in ``language``, fields."""
        from chat.i18n import error_text

        body: dict[str, Any] = {"code": self.code, "message": error_text(self.code, language, self.fields)}
        if self.fields:
            body["fields"] = self.fields
        return body


class BadRequest(ChatError):
    status = 400
    code = "request.invalid"


class Unauthenticated(ChatError):
    status = 401
    code = "auth.invalid_token"


class Forbidden(ChatError):
    status = 403
    code = "forbidden"


class RuleViolation(Forbidden):
    """A numbered product rule (R1…R22) refuses the action."""


class NotFound(ChatError):
    status = 404
    code = "not_found"


class Conflict(ChatError):
    status = 409
    code = "conflict"


class TooLarge(ChatError):
    status = 413
    code = "attachment.too_large"


class RateLimited(ChatError):
    status = 429
    code = "rate_limited"

    def __init__(self, retry_after: float, code: str | None = None) -> None:
        super().__init__(code, retry_after=round(max(retry_after, 0.001), 3))


class ServiceUnavailable(ChatError):
    """The database cannot be reached (chat.storage.health): nothing was done,
    and the same request can be sent again after ``retry_after`` seconds."""

    status = 503
    code = "service.unavailable"

    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after=retry_after)


class ConfigError(ChatError):
    """A configuration variable is missing or wrong; stops the start-up."""

    code = "config.invalid"
