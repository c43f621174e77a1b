"""FHIR R4 OperationOutcome bodies and the one exception type the app turns into them.

Every error this service returns is an OperationOutcome (CDS Hooks 3.0 recommends it,
and it gives EHR integrators one shape to parse).

Diagnostics are sent to the caller and usually end up in logs on both sides. Callers
must keep them free of access tokens, JWTs and patient values (lab results, names,
identifiers beyond the FHIR ids the caller already sent): describe *what* is wrong
with the request ("context.patientId is missing"), never echo the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# FHIR R4 value sets (http://hl7.org/fhir/R4/valueset-issue-severity.html and
# valueset-issue-type.html), both bound "required": anything else makes an invalid resource.
ISSUE_SEVERITIES = frozenset({"fatal", "error", "warning", "information"})
ISSUE_TYPES = frozenset(
    {
        "invalid",
        "structure",
        "required",
        "value",
        "invariant",
        "security",
        "login",
        "unknown",
        "expired",
        "forbidden",
        "suppressed",
        "processing",
        "not-supported",
        "duplicate",
        "multiple-matches",
        "not-found",
        "deleted",
        "too-long",
        "code-invalid",
        "extension",
        "too-costly",
        "business-rule",
        "conflict",
        "transient",
        "lock-error",
        "no-store",
        "exception",
        "timeout",
        "incomplete",
        "throttled",
        "informational",
    }
)


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue; checked at construction so a bad code fails in tests, not at the client."""

    diagnostics: str
    code: str = "processing"
    severity: str = "error"
    expression: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.code not in ISSUE_TYPES:
            raise ValueError(f"not a FHIR issue-type code: {self.code!r}")
        if self.severity not in ISSUE_SEVERITIES:
            raise ValueError(f"not a FHIR issue-severity code: {self.severity!r}")
        if not isinstance(self.diagnostics, str) or not self.diagnostics.strip():
            raise ValueError("diagnostics must be a non-empty string")
        # Accept any iterable of strings but store a tuple: the dataclass is frozen/hashable.
        expr = tuple(self.expression or ())
        if any(not isinstance(e, str) or not e for e in expr):
            raise ValueError("expression items must be non-empty strings")
        object.__setattr__(self, "expression", expr)

    def to_json(self) -> dict:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:  # FHIR forbids empty arrays, so omit rather than emit []
            issue["expression"] = list(self.expression)
        return issue


def outcome_from_issues(issues: Iterable[Issue]) -> dict:
    issue_list = [i.to_json() for i in issues]
    if not issue_list:
        raise ValueError("an OperationOutcome needs at least one issue")
    return {"resourceType": "OperationOutcome", "issue": issue_list}


def operation_outcome(
    diagnostics: str,
    code: str = "processing",
    severity: str = "error",
    expression: Sequence[str] | None = None,
) -> dict:
    """A single-issue R4 OperationOutcome as a JSON-ready dict."""
    return outcome_from_issues([Issue(diagnostics, code, severity, tuple(expression or ()))])


class CDSHookError(Exception):
    """An error that ends the request with `status` and an OperationOutcome body.

    Positional order is (status, code, diagnostics), as in docs/ARCHITECTURE.md. `code` is
    checked against the FHIR issue-type codes, so swapping code and diagnostics raises
    ValueError at once instead of sending a sentence as a code.
    Extra issues (e.g. one per missing context field) go in `more`.
    """

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        *,
        expression: Sequence[str] | None = None,
        severity: str = "error",
        more: Iterable[Issue] = (),
    ) -> None:
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"CDSHookError status must be a 4xx/5xx HTTP status, got {status!r}")
        first = Issue(diagnostics, code, severity, tuple(expression or ()))
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.issues: tuple[Issue, ...] = (first, *more)

    def outcome(self) -> dict:
        return outcome_from_issues(self.issues)

    def __repr__(self) -> str:
        return f"CDSHookError({self.status}, {self.code!r}, {self.diagnostics!r})"
