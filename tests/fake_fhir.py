"""A small in-memory FHIR R4 server for respx: enough search to stand in for the EHR in HTTP tests.

`FakeFhir(base, resources, token=...)` answers what the service's prefetch templates ask:
`Patient/{id}` reads, `Observation?patient=&code=sys|a,sys|b&_sort=-date&_count=`, `Condition?patient=&_count=` and
`MedicationRequest?patient=&status=a,b&_count=`, with `next` links (`_offset`) and a page size the server may cap
(`max_page_size`, as real servers do). It checks the bearer token like a real server (401 with an
OperationOutcome) and records every request it answered in `requests`.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx


def outcome(code: str, diagnostics: str = "details") -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


def _ref_id(resource: dict) -> str | None:
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return ref.rsplit("/", 1)[-1] if ref else None


def _codes(resource: dict) -> set[str]:
    # `code` searches Observation.code, and the medication CodeableConcept of a MedicationRequest /
    # MedicationAdministration (R4 search parameter `code` = medication.as(CodeableConcept)).
    concept = resource.get("code") or resource.get("medicationCodeableConcept") or {}
    return {f"{c.get('system')}|{c.get('code')}" for c in concept.get("coding") or []}


def _date(resource: dict) -> str:
    return resource.get("effectiveDateTime") or (resource.get("effectivePeriod") or {}).get("start") or ""


class FakeFhir:
    def __init__(
        self, base: str, resources: list[dict], *, token: str | None = None, max_page_size: int | None = None
    ) -> None:
        self.base = base.rstrip("/")
        self.resources = list(resources)
        self.token = token
        self.max_page_size = max_page_size
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json=outcome("login", "bearer token required"))
        path = request.url.path[len(httpx.URL(self.base).path) :].strip("/")
        rtype, _, rid = path.partition("/")
        if rid:
            for r in self.resources:
                if r["resourceType"] == rtype and r.get("id") == rid:
                    return httpx.Response(200, json=r)
            return httpx.Response(404, json=outcome("not-found", f"{rtype}/{rid} is not known"))
        return self._search(rtype, request.url.params)

    def _search(self, rtype: str, params: httpx.QueryParams) -> httpx.Response:
        hits = [r for r in self.resources if r["resourceType"] == rtype]
        if "patient" in params:
            hits = [r for r in hits if _ref_id(r) == params["patient"]]
        if "status" in params:
            hits = [r for r in hits if r.get("status") in params["status"].split(",")]
        if "code" in params:
            wanted = set(params["code"].split(","))
            hits = [r for r in hits if _codes(r) & wanted]
        if params.get("_sort") == "-date":
            hits.sort(key=_date, reverse=True)
        count = int(params.get("_count", 20))
        if self.max_page_size:
            count = min(count, self.max_page_size)
        offset = int(params.get("_offset", 0))
        page = hits[offset : offset + count]
        bundle: dict = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(hits),
            "entry": [
                {"fullUrl": f"{self.base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                for r in page
            ],
            "link": [{"relation": "self", "url": self._url(rtype, params, offset)}],
        }
        if offset + count < len(hits):
            bundle["link"].append({"relation": "next", "url": self._url(rtype, params, offset + count)})
        return httpx.Response(200, json=bundle, headers={"content-type": "application/fhir+json"})

    def _url(self, rtype: str, params: httpx.QueryParams, offset: int) -> str:
        query = [(k, v) for k, v in params.multi_items() if k != "_offset"] + [("_offset", str(offset))]
        return f"{self.base}/{rtype}?{urlencode(query)}"

    def searches(self, rtype: str | None = None) -> list[httpx.Request]:
        return [r for r in self.requests if rtype is None or r.url.path.endswith(f"/{rtype}")]
