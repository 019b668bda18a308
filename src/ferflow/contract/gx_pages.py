"""Great Expectations page classes that make the validation pages readable offline.

GX 1.x renders its Data Docs pages with Bootstrap, jQuery, Font Awesome and Vega from
public CDNs and its logo from S3: without network a page is unstyled and its Status
column (Font Awesome icons) empty. It also says "Status: Failed" for a table whose only
failures are warning-level checks, and under a failed expectation it shows the rule and
a count ("values must belong to this set: False; 1 unexpected value: True").

The classes here, which `gx_runner` names in the Data Docs site config (GX instantiates
them by module and class name), change that:

- `OfflinePageView`: GX's page template without any remote `<script>`/`<link>`/`<img>`;
  GX's stylesheet (its one remote `url()` removed) plus ferflow's `OFFLINE_CSS` inline,
  which also draws the status icons as text glyphs;
- `VerdictValidationPage`: the page header's Status is ferflow's verdict for the table
  (passed / passed with warnings / failed, `ferflow.contract.report.verdict`);
- `FindingsResultsTable`: a failed expectation of a warning-level check gets a warning
  icon instead of the red cross, and under it "ferflow check <id> (<severity>) found:"
  with the check's examples (files, pairs; `meta["found"]` from `explain`).

Importing this module imports great_expectations: only GX (through `gx_runner`) does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from great_expectations.render.components import (
    RenderedBulletListContent,
    RenderedStringTemplateContent,
)
from great_expectations.render.renderer.content_block.validation_results_table_content_block import (
    ValidationResultsTableContentBlockRenderer,
)
from great_expectations.render.renderer.page_renderer import ValidationResultsPageRenderer
from great_expectations.render.view.view import DefaultJinjaPageView
from jinja2 import ChoiceLoader, DictLoader

from ferflow.contract.data_docs import OFFLINE_CSS
from ferflow.contract.report import Verdict, verdict

# GX's page.j2 without the CDN stylesheets, the how-to modal script (jQuery) and the
# newsletter footer; the styles are inline.
PAGE_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <meta name="viewport" content="width=device-width, initial-scale=1.0" />
    <title>{{ page_title | default("Data Docs", true) }}</title>
    <style>{% include 'ferflow_gx_styles.css' %}</style>
    {% include 'favicon.j2' %}
  </head>
  <body>
    {% include 'top_navbar.j2' %}
    <div class="container-fluid pt-4 pb-4 pl-5 pr-5">
      <div class="row">
        {% include 'sidebar.j2' %}
        <div class="col-md-10 col-lg-10 col-xs-12 pl-md-4 pr-md-3">
        {% for section in sections %}
          {% set section_loop = loop -%}
          {% include 'section.j2' %}
        {% endfor %}
        </div>
      </div>
    </div>
  </body>
</html>
"""

# GX's navbar shows a logo from S3: a text link home instead.
NAVBAR_TEMPLATE = """{% if expectation_suite_name %}
  {% set dots = expectation_suite_name.count(".") -%}
{% else %}
  {% set dots = 0 -%}
{% endif %}
{% if "ValidationResults" in renderer_type %}
  {% set home_url = ((dots + 4) * "../") + "index.html" -%}
{% else %}
  {% set home_url = ((dots + 1) * "../") + "index.html" -%}
{% endif %}
<nav class="navbar">
  <div class="navbar-brand"><a href="{{ home_url }}">ferflow Data Docs</a></div>
  {% if page_title %}
    <ol class="breadcrumb">
      <li class="breadcrumb-item"><a href="{{ home_url }}">Home</a></li>
      <li class="breadcrumb-item active" aria-current="page">{{ page_title }}</li>
    </ol>
  {% endif %}
</nav>
"""

# Templates replaced outright: the remote scripts (the pages read fine without them), and
# the "Show all / Failed only" card whose buttons need jQuery.
OVERRIDES = {
    "page.j2": PAGE_TEMPLATE,
    "top_navbar.j2": NAVBAR_TEMPLATE,
    "js_script_imports.j2": "",
    "page_action_card.j2": "",
    "cloud-footer.j2": "",
}

REMOTE_URL = re.compile(r"url\(\s*['\"]?https?://[^)]*\)")


@cache
def _styles() -> str:
    """GX's default Data Docs stylesheet without its remote url(), then ferflow's."""
    gx_css = (
        resources.files("great_expectations")
        .joinpath("render/view/static/styles/data_docs_default_styles.css")
        .read_text(encoding="utf-8")
    )
    return REMOTE_URL.sub("none", gx_css) + OFFLINE_CSS


class OfflinePageView(DefaultJinjaPageView):
    """GX's page view with ferflow's offline templates looked up first."""

    def __init__(self, custom_styles_directory: Any = None, custom_views_directory: Any = None) -> None:
        super().__init__(custom_styles_directory, custom_views_directory)
        mine = DictLoader({**OVERRIDES, "ferflow_gx_styles.css": _styles()})
        self.env.loader = ChoiceLoader([mine] + ([self.env.loader] if self.env.loader else []))


def _severity(result: Any) -> str:
    """ferflow's severity of a result's check (meta), else GX's (critical reads as error)."""
    config = result.expectation_config
    meta = (config.meta if config is not None else None) or {}
    if meta.get("severity") in ("error", "warning"):
        return str(meta["severity"])
    gx_severity = getattr(config, "severity", "critical")
    return "warning" if str(getattr(gx_severity, "value", gx_severity)) in ("warning", "info") else "error"


def suite_verdict(validation_results: Any) -> Verdict:
    """The verdict over one suite's results: the rule `ValidationReport.verdict` uses."""
    return verdict(_severity(r) for r in validation_results.results if not r.success)


STATUS = {
    "passed": ("Passed", "fa-check-circle text-success"),
    "passed with warnings": ("Passed with warnings", "fa-exclamation-triangle text-warning"),
    "failed": ("Failed", "fa-times text-danger"),
}


class VerdictValidationPage(ValidationResultsPageRenderer):
    """GX's validation page whose Status is ferflow's verdict, its tables `FindingsResultsTable`."""

    def __init__(
        self,
        column_section_renderer: dict[str, Any] | None = None,
        run_info_at_end: bool = False,
        data_context: Any = None,
    ) -> None:
        if column_section_renderer is None:
            column_section_renderer = {
                "module_name": "great_expectations.render.renderer.column_section_renderer",
                "class_name": "ValidationResultsColumnSectionRenderer",
                "table_renderer": {"module_name": __name__, "class_name": "FindingsResultsTable"},
            }
        super().__init__(column_section_renderer, run_info_at_end, data_context)

    @classmethod
    def _render_validation_header(cls, validation_results: Any) -> Any:
        header = super()._render_validation_header(validation_results)
        word, icon = STATUS[suite_verdict(validation_results)]
        params = header.subheader.string_template["params"]
        params["success"] = word
        params["html_success_icon"] = f'<i class="fas {icon}" aria-hidden="true"></i>'
        return header


def _warning_icon() -> RenderedStringTemplateContent:
    return RenderedStringTemplateContent(
        content_block_type="string_template",
        string_template={
            "template": "$icon",
            "params": {"icon": "", "markdown_status_icon": "⚠"},
            "styling": {
                "params": {
                    "icon": {"tag": "i", "classes": ["fas", "fa-exclamation-triangle", "text-warning"]}
                }
            },
        },
    )


def _findings(check_id: str, severity: str, found: list[str]) -> RenderedBulletListContent:
    header = RenderedStringTemplateContent(
        content_block_type="string_template",
        string_template={
            "template": "ferflow check $check ($severity) found:",
            "params": {"check": check_id, "severity": severity},
            "tag": "strong",
            "styling": {"classes": ["text-warning" if severity == "warning" else "text-danger"]},
        },
    )
    items = [
        RenderedStringTemplateContent(
            content_block_type="string_template",
            string_template={"template": "$item", "params": {"item": item}, "tag": "code"},
        )
        for item in found
    ]
    return RenderedBulletListContent(bullet_list=items, header=header, styling={"classes": ["ferflow-found"]})


class FindingsResultsTable(ValidationResultsTableContentBlockRenderer):
    """GX's results table; failed rows show ferflow's severity and what the check found."""

    @classmethod
    def _get_content_block_fn(
        cls, expectation_type: str, expectation_config: Any = None
    ) -> Callable[..., Any] | None:
        row_fn = super()._get_content_block_fn(
            expectation_type=expectation_type, expectation_config=expectation_config
        )
        if row_fn is None:
            return None

        def row_with_findings(*args: Any, **kwargs: Any) -> Any:
            rows = row_fn(*args, **kwargs)
            result = kwargs.get("result")
            if result is None or result.success or result.expectation_config is None:
                return rows
            meta = result.expectation_config.meta or {}
            severity = _severity(result)
            status, cell, *rest = rows[0]
            if severity == "warning":
                status = _warning_icon()
            if meta.get("found"):
                cell = [*(cell if isinstance(cell, list) else [cell])]
                cell.append(_findings(str(meta.get("check_id", "?")), severity, list(meta["found"])))
            rows[0] = [status, cell, *rest]
            return rows

        return row_with_findings
