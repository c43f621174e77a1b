"""`report.html`: one self-contained page (plots inlined as SVG, no network), aggregates only.

Everything shown comes from the summary (`summary.json`), so the page and the file never disagree.
The page is our own layout with the standard library's escaping; matplotlib draws the figures.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

plt.rcParams["svg.hashsalt"] = "hematotox-cds"  # stable ids: the same data gives the same page
plt.rcParams["svg.fonttype"] = "none"

COLORS = {"quick": "#4c9f70", "intermittent": "#e0a030", "aplastic": "#c0392b", "unclassified": "#999999"}


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    # The RDF block only names the generator; without it the page holds no URL but the SVG namespace.
    start, end = text.find("<metadata>"), text.find("</metadata>")
    return text[:start] + text[end + len("</metadata>") :] if 0 <= start < end else text


def _e(x: object) -> str:
    return html.escape("—" if x is None else str(x))


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.0001" if p < 0.0001 else f"{p:.4f}"


def _fig1a(s: dict[str, Any]) -> str:
    by = s["fig1a"]["byScore"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    scores = [str(i) for i in range(8)]
    bottom = [0.0] * 8
    for ph in ("quick", "intermittent", "aplastic", "unclassified"):
        vals = []
        for sc in scores:
            n = sum(by[sc].values())
            vals.append(by[sc][ph] / n if n else 0.0)
        ax.bar(scores, vals, bottom=bottom, color=COLORS[ph], label=ph)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    for i, sc in enumerate(scores):
        ax.text(i, 1.02, f"n={sum(by[sc].values())}", ha="center", fontsize=7)
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("CAR-HEMATOTOX score at LD")
    ax.set_ylabel("share of courses")
    ax.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, -0.42))
    return _svg(fig)


def _fig1b(s: dict[str, Any]) -> str:
    b = s["fig1b"]
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    for i, g in enumerate(("low", "high")):
        med = b[g]["median"]
        if med is None:
            continue
        lo, hi = b[g]["ci95"]
        ax.bar(i, med, color="#7f8fa6" if g == "low" else "#c0392b", width=0.6)
        if lo is not None and hi is not None:
            ax.errorbar(i, med, yerr=[[med - lo], [hi - med]], color="black", capsize=4)
        ax.text(i + 0.32, med, f"{med:g}", ha="left", va="center", fontsize=8)  # beside the whisker
    ax.set_xticks([0, 1], [f"HT low (n={b['low']['n']})", f"HT high (n={b['high']['n']})"])
    ax.set_ylabel("median days ANC < 500/µL (d0–60)")
    return _svg(fig)


def _fig1c(s: dict[str, Any]) -> str:
    c = s["fig1c"]
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    if c["points"]:
        xs = [p[0] for p in c["points"]]
        ys = [p[1] for p in c["points"]]
        sizes = [12 + 10 * p[2] for p in c["points"]]  # area by how many courses share the point
        ax.scatter(xs, ys, s=sizes, alpha=0.6, color="#34495e")
    if c["slopeDaysPerPoint"] is not None:
        ax.plot([0, 7], [c["intercept"], c["intercept"] + 7 * c["slopeDaysPerPoint"]], color="#c0392b")
    ax.set_xlim(-0.5, 7.5)
    ax.set_xlabel("CAR-HEMATOTOX score at LD")
    ax.set_ylabel("days ANC < 500/µL (d0–60)")
    return _svg(fig)


def _fig1d(s: dict[str, Any]) -> str:
    d = s["fig1d"]
    fig, ax = plt.subplots(figsize=(3.4, 3.2))
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle="--")
    if d["roc"] is not None:
        ax.plot(d["roc"]["fpr"], d["roc"]["tpr"], marker="o", color="#c0392b")
        ax.text(0.55, 0.1, f"AUC {d['auc']:.2f}", fontsize=9)
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    return _svg(fig)


def _cell(c: dict[str, Any]) -> str:
    return f"{c['yes']} / {c['known']} ({_e(c['pct'])}%)" if c["known"] else "—"


def _table2(s: dict[str, Any]) -> str:
    ref = s["paper"]["table2"]
    out = [
        "<table><tr><th>Measure</th><th>Site HT low</th><th>Site HT high</th><th>p (Fisher)</th>"
        "<th>unknown low / high</th><th>Paper HT low (n=63)</th><th>Paper HT high (n=50)</th><th>Paper p</th></tr>"
    ]
    for r in s["table2"]["rows"]:
        p = ref[r["measure"]]
        paper_low = f"{p['lowN']} ({p['lowPct']}%)" if p["lowN"] is not None else "—"
        paper_high = f"{p['highN']} ({p['highPct']}%)" if p["highN"] is not None else "—"
        out.append(
            f"<tr><td>{_e(r['label'])}</td><td>{_cell(r['low'])}</td><td>{_cell(r['high'])}</td>"
            f"<td>{_p(r['p'])}</td><td>{r['low']['unknown']} / {r['high']['unknown']}</td>"
            f"<td>{_e(paper_low)}</td><td>{_e(paper_high)}</td><td>{_e(p['p'])}</td></tr>"
        )
    ph = s["table2"]["phenotype"]
    pp = s["paper"]["phenotypes"]
    for name in ("quick", "intermittent", "aplastic"):
        low, high = ph["low"][name], ph["high"][name]
        out.append(
            f"<tr><td>Phenotype: {name}</td><td>{low['n']} / {ph['low']['n']} ({_e(low['pct'])}%)</td>"
            f"<td>{high['n']} / {ph['high']['n']} ({_e(high['pct'])}%)</td>"
            f"<td>{_p(ph['p']) if name == 'quick' else ''}</td><td></td>"
            f"<td>{pp['low'][name]['n']} ({pp['low'][name]['pct']}%)</td>"
            f"<td>{pp['high'][name]['n']} ({pp['high'][name]['pct']}%)</td>"
            f"<td>{_e(pp['p']) if name == 'quick' else ''}</td></tr>"
        )
    out.append("</table>")
    apart = {g: ph[g]["countedApart"] for g in ("low", "high")}
    out.append(
        "<p class=note>Phenotype p: chi-square of independence over quick / intermittent / aplastic × HT group. "
        f"Counted apart — unclassified: low {apart['low']['unclassified']}, high {apart['high']['unclassified']}; "
        f"undetermined: low {apart['low']['undetermined']}, high {apart['high']['undetermined']}. "
        "Courses with indeterminate HT (excluded from every by-group row): "
        f"{s['cohort']['htGroups']['indeterminate']}.</p>"
    )
    return "".join(out)


def _excluded(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(d.items())) or "none"


def _problems(s: dict[str, Any]) -> str:
    counts = {k: v for k, v in s["problems"]["counts"].items() if v}
    if not counts:
        return "<p>No input problems.</p>"
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{v}</td><td>{_e(', '.join(s['problems']['examples'].get(k, [])))}"
        f"{' …' if v > len(s['problems']['examples'].get(k, [])) else ''}</td></tr>"
        for k, v in counts.items()
    )
    return (
        "<table><tr><th>Kind</th><th>Count</th><th>First places (file:line)</th></tr>"
        f"{rows}</table><p class=note>Every problem, with file and line: problems.csv.</p>"
    )


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;font-size:14px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f3f3f3}.note{color:#555;font-size:12px}.figs{display:flex;flex-wrap:wrap;gap:1.5em}
.fig{max-width:520px}.fig svg{max-width:100%;height:auto}h2{margin-top:1.6em}
"""


def render(s: dict[str, Any]) -> str:
    c, dr = s["cohort"], s["dateRange"]
    b, cc, d = s["fig1b"], s["fig1c"], s["fig1d"]
    pb, pc, pd = s["paper"]["fig1b"], s["paper"]["fig1c"], s["paper"]["fig1d"]
    at2 = d["atHt2"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CAR-HEMATOTOX cohort validation</title>
<style>{_STYLE}</style></head><body>
<h1>CAR-HEMATOTOX cohort validation</h1>
<p>The service's own rules (clinical-spec §1–§3 at LD, §9 after infusion) over this program's export, beside
{_e(s["paper"]["source"])}. Aggregates only. Rule set <b>{_e(s["rulesetVersion"])}</b>; as of {_e(s["asOf"])};
data from LD {_e(dr["firstLdStart"])} (day 0 {_e(dr["firstDay0"])} to {_e(dr["lastDay0"])}) to the last result
{_e(dr["lastResult"])}.</p>
<h2>Cohort</h2>
<table><tr><th>Patients</th><td>{s["inputs"]["patients"]}</td>
<th>Courses (first per patient)</th><td>{c["courses"]}</td>
<th>Without a course</th><td>{s["inputs"]["patientsWithoutCourse"]}</td></tr>
<tr><th>HT low</th><td>{c["htGroups"]["low"]}</td><th>HT high</th><td>{c["htGroups"]["high"]}</td>
<th>HT indeterminate</th><td>{c["htGroups"]["indeterminate"]}</td></tr>
<tr><th>Live at as-of</th><td>{c["live"]}</td><th>With later courses</th><td>{c["laterCourses"]}</td>
<th>LD start source</th><td>{_e(_excluded(c["ldStartSource"]))}</td></tr></table>
<h2>Table 2 analogue: hematotoxicity by HT group</h2>
<p class=note>n (%) of the courses with a known answer in each group (yes / known). Unknown answers and
indeterminate HT are counted apart, never imputed. Severe anemia: Hb &lt; 8 g/dL from labs only (the paper
also counts transfusion).</p>
{_table2(s)}
<h2>Fig. 1 analogues</h2>
<div class=figs>
<div class=fig><h3>A. Phenotype by HT score</h3>{_fig1a(s)}
<p class=note>{s["fig1a"]["n"]} courses with an exact score and a determined phenotype; excluded:
{_e(_excluded(s["fig1a"]["excluded"]))}.</p></div>
<div class=fig><h3>B. Severe neutropenia days by group</h3>{_fig1b(s)}
<p>Site: median {_e(b["low"]["median"])} vs {_e(b["high"]["median"])} days, Mann–Whitney p {_p(b["p"])}.
Paper: {pb["medianLow"]} vs {pb["medianHigh"]} days, p {pb["p"]}.</p>
<p class=note>Whiskers: 95% CI of the median. Excluded: {_e(_excluded(b["excluded"]))}.</p></div>
<div class=fig><h3>C. HT score and severe neutropenia days</h3>{_fig1c(s)}
<p>Site: Spearman r {_e(cc["spearmanR"])} (p {_p(cc["p"])}), slope {_e(cc["slopeDaysPerPoint"])} days per point,
n = {cc["n"]}. Paper: r = +{pc["spearmanR"]} (p {pc["p"]}), slope {pc["slopeDaysPerPoint"]}.</p>
<p class=note>Excluded: {_e(_excluded(cc["excluded"]))}.</p></div>
<div class=fig><h3>D. ROC for severe neutropenia ≥ 14 days</h3>{_fig1d(s)}
<p>Site: AUC {_e(d["auc"])} (p {_p(d["p"])}, {d["nPositive"]} with / {d["nNegative"]} without); at HT ≥ 2
sensitivity {_e(at2["sensitivityPct"])}%, specificity {_e(at2["specificityPct"])}%.
Paper: AUC {pd["auc"]} (p {pd["p"]}), sensitivity {pd["sensitivityPct"]}%, specificity {pd["specificityPct"]}%.</p>
<p class=note>Excluded: {_e(_excluded(d["excluded"]))}.</p></div>
</div>
<h2>Input problems</h2>
{_problems(s)}
<p class=note>{s["inputs"]["lines"]} lines in {s["inputs"]["files"]} files. Decision support for CAR-T
physicians, not a guideline; the score's applicability beyond the products and regimens it was validated for
is unverified (clinical-spec §1.1).</p>
</body></html>
"""


def write_report(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(render(summary), encoding="utf-8")
