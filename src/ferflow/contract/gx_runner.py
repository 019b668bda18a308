"""Run the contract's expectations with Great Expectations 1.x and render its pages.

An ephemeral (in-memory) GX context per run: one pandas data source, one DataFrame asset
+ expectation suite + validation definition per contract table. GX renders one
validation page and one expectation suite page per table under `<report_dir>/data_docs/`
with ferflow's page classes (`ferflow.contract.gx_pages`: no CDN, ferflow's verdict, what
each failed check found); GX's own index (JavaScript from CDNs) is not built, ferflow
writes `index.html` (`ferflow.contract.data_docs`). An in-memory context keeps each run's
docs to that run and skips GX's YAML project files, which cost seconds per run.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ferflow.contract import gx_pages
from ferflow.contract.data_docs import SuitePages

log = logging.getLogger(__name__)

DATA_SOURCE = "ferflow"
SUITE_PREFIX = "ferflow_contract"
DOCS_SITE = "ferflow"
PAGES = gx_pages.__name__  # GX loads its page classes by module name
OFFLINE_VIEW = {"module_name": PAGES, "class_name": "OfflinePageView"}


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict, reduced to plain JSON-able values."""

    check_id: str
    expectation: str
    success: bool
    observed: Any
    table: str = ""
    severity: str = "error"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.expectation, "success": self.success, "observed": self.observed}


def _import_gx() -> Any:
    # GX would otherwise try to post usage statistics: there is no network in CI.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    # GX logs every data-source save at INFO; only its warnings matter to a ferflow user.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    return gx


def _context(docs_dir: Path) -> Any:
    """An in-memory GX context whose only Data Docs site is static HTML under `docs_dir`,
    rendered offline by `ferflow.contract.gx_pages` (no profiling section: ferflow has none)."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "site_section_builders": {
                    "expectations": {"view": OFFLINE_VIEW},
                    "validations": {
                        "renderer": {"module_name": PAGES, "class_name": "VerdictValidationPage"},
                        "view": OFFLINE_VIEW,
                    },
                    "profiling": "None",
                },
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so results serialise to JSON."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _observed(result: dict[str, Any]) -> Any:
    if "observed_value" in result:
        return _plain(result["observed_value"])
    keys = ("element_count", "unexpected_count", "partial_unexpected_list")
    return _plain({k: result[k] for k in keys if k in result})


def run_expectations(
    frames: dict[str, pd.DataFrame], expectations: dict[str, list[Any]], docs_dir: Path, max_examples: int
) -> tuple[list[ExpectationOutcome], list[SuitePages]]:
    """Validate each table against its expectations and render its pages.

    Returns the outcomes, and per table its suite's pages (validation result, expectation
    suite) for the index, which the caller writes (`ferflow.contract.data_docs`).
    """
    gx = _import_gx()
    context = _context(docs_dir)
    source = context.data_sources.add_pandas(DATA_SOURCE)
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": max_examples}
    outcomes: list[ExpectationOutcome] = []
    for table, table_expectations in expectations.items():
        if not table_expectations:
            continue
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{SUITE_PREFIX}_{table}"))
        for expectation in table_expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{SUITE_PREFIX}_{table}", data=batch, suite=suite)
        )
        results = definition.run(batch_parameters={"dataframe": frames[table]}, result_format=result_format)
        for item in results.results:
            config = item.expectation_config
            outcomes.append(
                ExpectationOutcome(
                    check_id=config.meta["check_id"],
                    expectation=config.type,
                    success=bool(item.success),
                    observed=_observed(item.result),
                    table=table,
                    severity=config.meta.get("severity", "error"),
                )
            )
    # Rebuild from scratch: pages of an earlier run in the same folder would mislead a reader.
    shutil.rmtree(docs_dir, ignore_errors=True)
    context.build_data_docs(build_index=False)
    return outcomes, _suite_pages(outcomes, expectations, docs_dir)


def _suite_pages(
    outcomes: list[ExpectationOutcome], expectations: dict[str, list[Any]], docs_dir: Path
) -> list[SuitePages]:
    pages = []
    for table, table_expectations in expectations.items():
        if not table_expectations:
            continue
        suite = f"{SUITE_PREFIX}_{table}"
        mine = [o for o in outcomes if o.table == table]
        validation_pages = sorted((docs_dir / "validations" / suite).rglob("*.html"))
        expectations_page = docs_dir / "expectations" / f"{suite}.html"
        pages.append(
            SuitePages(
                table=table,
                suite=suite,
                evaluated=len(mine),
                unsuccessful=sum(not o.success for o in mine),
                check_ids=tuple(dict.fromkeys(o.check_id for o in mine)),
                validation_page=validation_pages[-1] if validation_pages else None,
                expectations_page=expectations_page if expectations_page.is_file() else None,
                failed_severities=tuple(o.severity for o in mine if not o.success),
            )
        )
    return pages
