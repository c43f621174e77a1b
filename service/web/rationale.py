"""GET /rationale: the full text behind every compact card line, one click from the card (its link).

The page is the audited table itself (service/clinical/recommendations.py) with each item's full
text, strength and source; it holds no patient data, so it is public like /healthz (outside the JWT
check on /cds-services), and a clinician's browser can open it from the EHR.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from service.clinical.recommendations import STRENGTH_WORDS, TABLE

AUDIENCES = {
    "high": "HT-high",
    "low": "HT-low",
    "all": "All CAR-T patients (any HT group)",
    "diabetes": "Diabetes (DESCAR-T NRM risk factor)",
    "ferritin": "Elevated ferritin at LD (DESCAR-T NRM risk factor)",
}
PATH = "/rationale"


def rationale_html() -> str:
    rows = []
    for r in TABLE:
        label, url = r.source
        strengths = [f"{escape(r.strength)}: {escape(STRENGTH_WORDS[r.strength])}"]
        sources = [f'<a href="{escape(url)}">{escape(label)}</a>']
        for part, strength, (part_label, part_url) in r.also:
            strengths.append(f"{escape(part)}: {escape(strength)}: {escape(STRENGTH_WORDS[strength])}")
            sources.append(f'{escape(part)}: <a href="{escape(part_url)}">{escape(part_label)}</a>')
        rows.append(
            f'<tr id="{escape(r.id)}"><td>{escape(r.id)}</td><td>{escape(AUDIENCES[r.audience])}</td>'
            f"<td><b>{escape(r.title)}</b><br>{escape(r.text)}</td>"
            f"<td>{'<br>'.join(strengths)}</td><td>{'<br>'.join(sources)}</td></tr>"
        )
    key = "".join(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in STRENGTH_WORDS.items())
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>hematotox-cds: recommendations and their sources</title></head><body>"
        "<h1>Recommendations the cards may make</h1>"
        f"<p>Strength codes:</p><ul>{key}</ul>"
        "<p>A site that treats an indeterminate HT group as possible HT-high shows the HT-high items as X.</p>"
        "<table border='1' cellpadding='4'><tr><th>Item</th><th>For</th><th>Recommendation</th>"
        f"<th>Strength</th><th>Source</th></tr>{''.join(rows)}</table></body></html>"
    )


def rationale_router() -> APIRouter:
    router = APIRouter()
    page = rationale_html()  # the table is constant: written once

    @router.get(PATH, include_in_schema=False)
    async def rationale() -> HTMLResponse:
        return HTMLResponse(page)

    return router
