"""The Data Docs entry page: `<report_dir>/data_docs/index.html`, written by ferflow.

Great Expectations' own index lists its validations with JavaScript from public CDNs, so
a browser without network shows it blank. ferflow writes the index itself instead: one
self-contained HTML file (inline CSS, no script, no remote reference) with

- the contract's verdict, the same as `ValidationReport.verdict` and the CLI's;
- what was found: every failed check with its examples (files, pairs, counts) from
  `ferflow.contract.expectations.explain`;
- "Validation Results": one row per GX suite (one per contract table) with its verdict
  and links to GX's validation and expectation suite pages (made offline by
  `ferflow.contract.gx_pages`);
- every check: id, severity, status (passed / warning / failed / off), rule, observed
  value and examples.

Plain Python: no Great Expectations import (this module also renders `OFFLINE_CSS`,
which `gx_pages` puts into GX's pages).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ferflow.contract.report import CheckResult, ValidationReport, Verdict, verdict

INDEX_FILE = "index.html"


@dataclass(frozen=True)
class SuitePages:
    """One contract table's GX suite: its checks' outcomes and its pages (None: not rendered)."""

    table: str
    suite: str
    evaluated: int
    unsuccessful: int
    check_ids: tuple[str, ...] = ()
    validation_page: Path | None = None
    expectations_page: Path | None = None
    failed_severities: tuple[str, ...] = ()

    @property
    def verdict(self) -> Verdict:
        return verdict(self.failed_severities)


# Shared by this index and GX's pages: page layout, tables, status colours, and glyphs for
# the Font Awesome icon classes GX's pages use (the icon font itself is on a CDN).
OFFLINE_CSS = """
:root { --ok: #1e7e34; --warn: #9a6700; --bad: #c82333; --off: #6c757d; --line: #dee2e6;
  --soft: #f6f8fa; --text: #212529; --link: #0b62c4; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--text); background: #fff; }
a { color: var(--link); }
code, pre { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { border: 1px solid var(--line); padding: .35rem .55rem; text-align: left; vertical-align: top; }
th { background: var(--soft); }
.passed, .text-success { color: var(--ok); }
.warning, .text-warning { color: var(--warn); }
.failed, .text-danger { color: var(--bad); }
.off, .text-muted { color: var(--off); }
.text-info { color: var(--link); }
.badge { display: inline-block; padding: .1rem .45rem; border-radius: .6rem; font-size: 85%;
  font-weight: 600; border: 1px solid currentColor; white-space: nowrap; }
.badge-secondary { color: #383d41; background: #e2e3e5; border-color: #d6d8db; font-weight: 500; }
tr.row-warning { background: #fff8e1; }
tr.row-failed { background: #fdecea; }
i.fas, i.fa { font-style: normal; font-weight: 700; }
.fa-check-circle::before { content: "\\2714"; }
.fa-times::before { content: "\\2718"; }
.fa-exclamation-triangle::before { content: "\\26A0"; }
.fa-comment::before { content: "\\2139"; }
/* GX page layout without Bootstrap */
.container-fluid { width: 100%; padding: 0 1rem; }
.row { display: flex; flex-wrap: wrap; }
.col-12, .col-sm-12, .col-xs-12 { flex: 0 0 100%; max-width: 100%; }
.col-6 { flex: 0 0 50%; max-width: 50%; }
@media (min-width: 768px) {
  .col-md-2 { flex: 0 0 18%; max-width: 18%; padding-right: 1rem; }
  .col-md-10 { flex: 0 0 82%; max-width: 82%; }
}
.navbar { display: flex; align-items: center; padding: .5rem 1rem; border-bottom: 1px solid var(--line);
  background: var(--soft); }
.navbar-brand a { font-weight: 700; font-size: 1.15rem; text-decoration: none; color: var(--text); }
.breadcrumb { display: flex; list-style: none; margin: 0 0 0 1rem; padding: 0; gap: .5rem; }
.breadcrumb-item + .breadcrumb-item::before { content: "/"; padding-right: .5rem; color: var(--off); }
.d-flex { display: flex; } .d-none { display: none; }
@media (min-width: 768px) { .d-md-block { display: block; } .d-md-inline-flex { display: inline-flex; } }
.card { border: 1px solid var(--line); border-radius: .3rem; margin-bottom: 1rem; }
.card-header { background: var(--soft); border-bottom: 1px solid var(--line); padding: .4rem .6rem; }
.card-body { padding: .4rem .6rem; }
.nav { list-style: none; margin: 0; padding: 0; }
.nav-link { display: block; padding: .15rem .3rem; text-decoration: none; }
.alert { padding: .5rem .8rem; margin: .8rem 0 .3rem; border-radius: .3rem; border: 1px solid var(--line); }
.alert-secondary { background: #e2e3e5; }
.ge-section { margin-bottom: 1rem; }
.lead { font-size: 1.05rem; color: var(--off); }
.h6, h6 { font-weight: 600; font-size: 1rem; margin: .3rem 0; }
h4 { margin: .5rem 0; } h5 { font-size: 1.1rem; margin: 0; }
.table-sm td, .table-sm th { padding: .2rem .4rem; }
.table-responsive { overflow-x: auto; }
.show-scrollbars { overflow-x: auto; }
/* collapsed blocks ("Show more info...") open on their link: :target needs no script */
.collapse { display: none; } .collapse:target, .collapse.show { display: block; }
.ferflow-found { margin-top: .4rem; }
.ferflow-found ul { margin: .2rem 0 0; padding-left: 1.2rem; }
"""

INDEX_CSS = """
body { max-width: 1400px; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin: .5rem 0; }
h2 { font-size: 1.25rem; margin: 1.6rem 0 .4rem; border-bottom: 1px solid var(--line); }
.summary { color: var(--off); margin: 0 0 .8rem; }
.verdict { padding: .1rem .6rem; border-radius: .4rem; border: 2px solid currentColor; }
ul.problems { padding-left: 1.2rem; }
ul.problems > li { margin-bottom: .5rem; }
td ul { margin: 0; padding-left: 1.1rem; }
td.observed { max-width: 28rem; overflow-wrap: anywhere; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _css_class(status: str) -> str:
    """passed | warning | failed | off; "passed with warnings" reads as warning."""
    return {"passed with warnings": "warning"}.get(status, status)


def _badge(status: str) -> str:
    return f'<span class="badge {_css_class(status)}">{_e(status)}</span>'


def _link(target: Path | None, root: Path, text: str) -> str:
    if target is None or not target.exists():
        return f'<span class="off">{_e(text)}: not rendered</span>'
    href = Path(os.path.relpath(target, root)).as_posix()
    return f'<a href="{_e(href)}">{_e(text)}</a>'


def _examples(examples: Iterable[str]) -> str:
    items = [f"<li><code>{_e(e)}</code></li>" for e in examples]
    return f"<ul>{''.join(items)}</ul>" if items else '<span class="off">-</span>'


def _observed(value: Any) -> str:
    if isinstance(value, str):
        return _e(value)
    return f"<code>{_e(json.dumps(value, default=str))}</code>"


def _check_row(check: CheckResult) -> str:
    return (
        f'<tr id="check-{_e(check.id)}" class="row-{check.status}">'
        f"<td><code>{_e(check.id)}</code></td><td>{_e(check.severity)}</td>"
        f"<td>{_badge(check.status)}</td><td>{_e(check.description)}</td>"
        f'<td class="observed">{_observed(check.observed)}</td><td>{_examples(check.examples)}</td></tr>'
    )


def _problem(check: CheckResult) -> str:
    found = f" Found: {_examples(check.examples)}" if check.examples else ""
    return (
        f'<li class="{check.status}"><a href="#check-{_e(check.id)}"><code>{_e(check.id)}</code></a> '
        f"{_badge(check.status)} {_e(check.description)}; observed "
        f"<code>{_e(json.dumps(check.observed, default=str))}</code>.{found}</li>"
    )


def _suite_row(suite: SuitePages, checks: dict[str, CheckResult], root: Path) -> str:
    own = [checks[c] for c in suite.check_ids if c in checks]
    listed = ", ".join(
        f'<a href="#check-{_e(c.id)}" class="{c.status}">{_e(c.id)}</a> ({_e(c.status)})' for c in own
    )
    return (
        f'<tr class="row-{_css_class(suite.verdict)}">'
        f"<td>{_link(suite.validation_page, root, suite.suite)}</td><td>{_e(suite.table)}</td>"
        f"<td>{_badge(suite.verdict)}</td>"
        f"<td>{suite.evaluated} evaluated, {suite.unsuccessful} unsuccessful</td>"
        f"<td>{listed}</td><td>{_link(suite.expectations_page, root, 'expectation suite')}</td></tr>"
    )


def render_index(report: ValidationReport, suites: Iterable[SuitePages], root: Path) -> str:
    """The index page's HTML; links are relative to `root` (the Data Docs folder)."""
    checks = {c.id: c for c in report.checks}
    problems = report.errors + report.warnings
    problem_list = (
        f'<ul class="problems">{"".join(_problem(c) for c in problems)}</ul>'
        if problems
        else '<p class="passed">Every check passed.</p>'
    )
    suite_rows = "".join(_suite_row(s, checks, root) for s in suites)
    check_rows = "".join(_check_row(c) for c in report.checks)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    title = f'<span class="verdict {_css_class(report.verdict)}">{_e(report.verdict)}</span>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Data Docs: data contract {_e(report.verdict)}</title>
<style>{OFFLINE_CSS}{INDEX_CSS}</style>
</head>
<body>
<h1>Data Docs: data contract {title}</h1>
<p class="summary">Dataset <code>{_e(report.data_dir)}</code>: {len(report.errors)} error(s),
{len(report.warnings)} warning(s), {len(report.checks)} checks. Only an error-level check fails
the contract; a failed warning-level check passes it with a warning. Generated {generated}
by ferflow with Great Expectations.</p>
<h2 id="found">What was found</h2>
{problem_list}
<h2 id="validation-results">Validation Results</h2>
<p class="summary">One Great Expectations suite per contract table; its page shows every
expectation with GX's observed values.</p>
<table>
<thead><tr><th>Suite</th><th>Table</th><th>Status</th><th>Expectations</th><th>Checks</th><th>Rules</th></tr></thead>
<tbody>{suite_rows}</tbody>
</table>
<h2 id="checks">Checks</h2>
<table>
<thead><tr><th>Check</th><th>Severity</th><th>Status</th><th>Rule</th><th>Observed</th><th>Examples</th></tr></thead>
<tbody>{check_rows}</tbody>
</table>
</body>
</html>
"""


def write_index(report: ValidationReport, suites: Iterable[SuitePages], docs_dir: Path) -> Path:
    """Write `docs_dir/index.html` and return its path."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    index = docs_dir / INDEX_FILE
    index.write_text(render_index(report, suites, docs_dir), encoding="utf-8")
    return index
