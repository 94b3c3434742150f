"""Errors a request can cause.  Each becomes a 4xx (or 5xx) JSON answer, never a traceback.

- ``ApiError(status, message)`` answers DIGITS' error shape (``{"error": {"message", "type",
  "description"}}``), which brewnet's ``/api/v1`` uses too.
- ``FormErrors({field: [msg, ...]})`` answers DIGITS' form-validation shape, 400
  ``{"errors": {"<field>": ["msg", ...]}}``, so the UI can show each error next to its field.
- Job errors, what the scheduler and the job files raise without knowing HTTP: ``JobNotFound``
  (answered 404), ``JobStateError`` (the job's state forbids it: 409) and ``JobRequestError``
  (the job cannot do what was asked: 400).  Their HTTP status is mapped here, once.
"""
from __future__ import annotations

from http import HTTPStatus


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, field: str | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.field = field

    @property
    def type(self) -> str:
        try:
            return HTTPStatus(self.status).phrase.replace(" ", "")
        except ValueError:
            return "Error"

    def to_json(self) -> dict:
        phrase = HTTPStatus(self.status).phrase if self.status in HTTPStatus._value2member_map_ else "Error"
        body = {"error": {"message": f"{self.status} {phrase}: {self.message}", "type": self.type,
                          "description": self.message}}
        if self.field:
            body["error"]["field"] = self.field
        return body


class FormErrors(ApiError):
    def __init__(self, errors: dict[str, list[str]]):
        self.errors = {k: list(v) for k, v in errors.items()}
        first = next(iter(self.errors.items()), ("form", ["invalid"]))
        super().__init__(400, f"{first[0]}: {first[1][0]}", field=first[0])

    def to_json(self) -> dict:
        return {"errors": self.errors}


class JobError(ApiError):
    """A job operation that cannot be done; ``http_status`` is how a request answers it."""
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(self.http_status, message, field=field)


class JobNotFound(JobError):
    """No such job (or an id not shaped like one)."""
    http_status = 404

    def __init__(self, message: str = "Job not found"):
        super().__init__(message)


class JobStateError(JobError):
    """The job's state does not allow the operation (a finished job submitted, a running one resumed)."""
    http_status = 409


class JobRequestError(JobError):
    """The job cannot do what was asked (resume a dataset, resume without a snapshot)."""
    http_status = 400


def not_found(what: str = "Job not found") -> ApiError:
    return ApiError(404, what)


def forbidden(what: str) -> ApiError:
    return ApiError(403, what)
