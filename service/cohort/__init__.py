"""Cohort validation (clinical-spec §10): the service's own rules over a FHIR Bulk Data export.

`hematotox-cds cohort EXPORT_DIR --out OUT_DIR` reads NDJSON, groups the resources by patient on disk,
scores every patient's first CAR-T course on all cores with the functions of ``service.clinical``
(§1–§3 at LD, §9 after infusion; nothing is re-implemented here) and writes ``courses.csv``,
``summary.json``, ``problems.csv`` and ``report.html``. It imports ``service.clinical`` only.
"""
