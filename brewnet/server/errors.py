"""Errors a request can cause.  Each becomes a 4xx (or 5xx) JSON answer, never a traceback.

- ``ApiError(status, message)`` answers DIGITS' error shape (``{"error": {"message", "type",
  "description"}}``), which brewnet's ``/api/v1`` uses too.
- ``FormErrors({field: [msg, ...]})`` answers DIGITS' form-validation shape, 400
  ``{"errors": {"<field>": ["msg", ...]}}``, so the UI can show each error next to its field.
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


def not_found(what: str = "Job not found") -> ApiError:
    return ApiError(404, what)


def forbidden(what: str) -> ApiError:
    return ApiError(403, what)
