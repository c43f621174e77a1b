#!/usr/bin/env python3
"""How tall the cards are where a clinician reads them: each card's markdown rendered as the CDS
Hooks sandbox shows it, measured in headless Chromium.

    .venv/bin/python bench/card_render.py [--all] [--width 600] [--viewport 1000] [--chromium /usr/bin/chromium]

The cards come from the app in-process (development settings, full prefetch) for the requests of
tests/card_variants.py: by default the four of the issue-12 table (HIGH T21, LOW T1, indeterminate
T23, provisional T35), with --all every worked case and variant. Each card is laid out like the
sandbox's card (summary, source, detail as GitHub-flavoured markdown via markdown-it-py, suggestion
buttons, links) in a column `--width` px wide; Chromium (--headless, --dump-dom) measures it. Printed
per card: detail characters, px from the card's top to the bottom of its last suggestion button, the
card's whole height, "stacked": px from the top of the hook's first card to this card's last button
(the sandbox lists a hook's cards one under the other), and whether the card's buttons fit the
`--viewport` height (less the sandbox header).
"""

from __future__ import annotations

import argparse
import html
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# The sandbox's own header and the card list's top margin sit above the first card.
SANDBOX_CHROME_PX = 70

CSS = """
body { margin: 0; font-family: "Helvetica Neue", Helvetica, Arial, sans-serif; font-size: 14px; line-height: 1.43; }
.card { box-sizing: border-box; width: %(width)dpx; border: 1px solid #ccc; border-left: 4px solid #f0ad4e;
        border-radius: 4px; padding: 10px 14px; margin: 10px; }
.summary { font-size: 16px; font-weight: bold; margin-bottom: 6px; }
.source { color: #666; font-size: 12px; margin-bottom: 8px; }
.detail table { border-collapse: collapse; margin: 6px 0; }
.detail th, .detail td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; }
.detail p { margin: 0 0 8px 0; } .detail ul { margin: 0 0 8px 0; padding-left: 22px; }
.suggestions button, .links button { display: inline-block; margin: 4px 6px 4px 0; padding: 6px 12px;
        font-size: 14px; border: 1px solid #adadad; border-radius: 4px; background: #fff; }
"""

MEASURE = """
<script>
const out = [];
const firstTop = {};
for (const card of document.querySelectorAll('.card')) {
  const top = card.getBoundingClientRect().top;
  const group = card.dataset.hook;
  if (!(group in firstTop)) firstTop[group] = top;
  const buttons = card.querySelectorAll('.suggestions button');
  const bottom = buttons.length ? buttons[buttons.length - 1].getBoundingClientRect().bottom : null;
  out.push({id: card.id, toButtons: bottom === null ? null : Math.round(bottom - top),
            stacked: bottom === null ? null : Math.round(bottom - firstTop[group]),
            height: Math.round(card.getBoundingClientRect().height)});
}
document.getElementById('out').textContent = JSON.stringify(out);
</script>
"""


def _cards() -> list[tuple[str, list[dict]]]:
    warnings.filterwarnings("ignore")
    from fastapi.testclient import TestClient

    from service.web.app import create_app
    from tests.card_variants import HEADLINE, SIGN, variants
    from tests.conftest import dev_settings

    wanted = ARGS.all
    out = []
    apps: dict[str, TestClient] = {}
    by_name = {v.name: v for v in variants()}
    names = list(by_name) if wanted else list(HEADLINE.values())
    for name in names:
        v = by_name[name]
        key = json.dumps(v.settings, sort_keys=True)
        if key not in apps:
            apps[key] = TestClient(create_app(dev_settings(**v.settings)))
            apps[key].__enter__()
        r = apps[key].post(SIGN, json=v.request)
        if r.status_code != 200:
            raise SystemExit(f"{name}: the hook answered {r.status_code}: {r.text[:300]}")
        label = next((k for k, c in HEADLINE.items() if c == name), name)
        out.append((label, r.json()["cards"]))
    for c in apps.values():
        c.__exit__(None, None, None)
    return out


def _card_html(cid: str, hook: int, card: dict, md) -> str:
    buttons = "".join(f"<button>{html.escape(s['label'])}</button>" for s in card.get("suggestions", []))
    links = "".join(f"<button>{html.escape(x['label'])}</button>" for x in card.get("links", []))
    return (
        f'<div class="card" id="{cid}" data-hook="{hook}"><div class="summary">{html.escape(card["summary"])}</div>'
        f'<div class="source">Source: {html.escape(card["source"]["label"])}</div>'
        f'<div class="detail">{md.render(card.get("detail", ""))}</div>'
        f'<div class="suggestions">{buttons}</div><div class="links">{links}</div></div>'
    )


def main() -> None:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")
    scenarios = _cards()
    body = []
    meta = {}
    for hook, (label, cards) in enumerate(scenarios):
        for card in cards:
            kind = "risk" if "hematotox" in card.get("extension", {}).get("hematotox-cds", {}) else "prophylaxis"
            cid = f"c{len(meta)}"
            meta[cid] = (label, kind, len(card.get("detail", "")))
            body.append(_card_html(cid, hook, card, md))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><style>{CSS % {'width': ARGS.width}}</style></head>"
        f"<body>{''.join(body)}<pre id='out'></pre>{MEASURE}</body></html>"
    )
    with tempfile.TemporaryDirectory(prefix="card-render-") as tmp:
        path = Path(tmp, "cards.html")
        path.write_text(page, "utf-8")
        dom = subprocess.run(
            [
                ARGS.chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={Path(tmp, 'profile')}",
                f"--window-size={ARGS.width + 40},{ARGS.viewport}",
                "--dump-dom",
                path.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    raw = dom.split('<pre id="out">', 1)[1].split("</pre>", 1)[0]
    results = json.loads(html.unescape(raw))
    budget = ARGS.viewport - SANDBOX_CHROME_PX
    head = f"{'case':<26} {'card':<12} {'detail chars':>12} {'px to buttons':>14} {'card px':>8} {'stacked':>8}"
    print(f"{head}  fits {ARGS.viewport}px")
    for r in results:
        label, kind, chars = meta[r["id"]]
        to = r["toButtons"]
        fits = "no buttons" if to is None else ("yes" if to <= budget else "NO")
        stacked = r["stacked"] if r["stacked"] is not None else "—"
        row = f"{label:<26} {kind:<12} {chars:>12} {to if to is not None else '—':>14} {r['height']:>8} {stacked:>8}"
        print(f"{row}  {fits}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--all", action="store_true", help="every worked case and variant, not only the four headline cards")
    p.add_argument("--width", type=int, default=600)
    p.add_argument("--viewport", type=int, default=1000)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    ARGS = p.parse_args()
    main()
