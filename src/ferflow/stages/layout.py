"""`Layout`: where the stages read and write. Every path under data/, models/ and reports/
that a stage uses comes from here, composed from the names in ferflow.files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ferflow import files
from ferflow.config import Params, load_params
from ferflow.errors import FerflowError
from ferflow.files import write_json


@dataclass(frozen=True)
class Layout:
    """The folders of one workspace; relative paths resolve against the working directory."""

    raw: Path
    prepared: Path
    models: Path = Path("models")
    reports: Path = Path("reports")
    root: Path = Path(".")

    @classmethod
    def from_params(cls, params: Params, root: str | Path = ".") -> Layout:
        """The default layout of params.yaml (data.raw, data.prepared, models/, reports/)."""
        root = Path(root)
        return cls(
            raw=root / params.data.raw,
            prepared=root / params.data.prepared,
            models=root / "models",
            reports=root / "reports",
            root=root,
        )

    def with_raw(self, raw: str | Path) -> Layout:
        return replace(self, raw=Path(raw))

    def moved(
        self,
        prepared: str | Path | None = None,
        models: str | Path | None = None,
        reports: str | Path | None = None,
    ) -> Layout:
        """This layout with some folders elsewhere (the CLI's --data, --models, --out)."""
        return replace(
            self,
            prepared=Path(prepared) if prepared else self.prepared,
            models=Path(models) if models else self.models,
            reports=Path(reports) if reports else self.reports,
        )

    # --- models/ ---------------------------------------------------------------------

    @property
    def head_model(self) -> Path:
        return self.models / files.HEAD_FILE

    @property
    def model_file(self) -> Path:
        return self.models / files.MODEL_FILE

    @property
    def history_file(self) -> Path:
        return self.models / files.HISTORY_FILE

    @property
    def run_file(self) -> Path:
        return self.models / files.RUN_FILE

    def backup(self, stage: str) -> Path:
        return self.models / files.BACKUP_DIR / stage

    # --- reports/ --------------------------------------------------------------------

    @property
    def validation_file(self) -> Path:
        return self.reports / files.VALIDATION_FILE

    @property
    def training_rows_file(self) -> Path:
        return self.reports / files.TRAINING_ROWS_FILE

    @property
    def metrics_file(self) -> Path:
        return self.reports / files.METRICS_FILE

    @property
    def evaluation_file(self) -> Path:
        return self.reports / files.EVALUATION_FILE

    @property
    def confusion_file(self) -> Path:
        return self.reports / files.CONFUSION_JSON

    @property
    def plots_dir(self) -> Path:
        return self.reports / files.PLOTS_DIR

    @property
    def promotion_file(self) -> Path:
        return self.reports / files.PROMOTION_FILE

    @property
    def model_card_file(self) -> Path:
        return self.reports / files.MODEL_CARD_FILE

    def path(self, name: str) -> Path:
        """`raw` -> self.raw; `models/run.json` -> self.models / run.json (STAGES' notation)."""
        head, _, rest = name.partition("/")
        base = Path(getattr(self, head))
        return base / rest if rest else base


def load_run_params(params_file: str | Path, overrides: list[str], root: str | Path) -> tuple[Params, Layout]:
    """params.yaml (+ overrides) and the layout under `root`; a relative params file is
    relative to `root`."""
    root_path = Path(root).resolve()
    params_path = Path(params_file)
    if not params_path.is_absolute():
        params_path = root_path / params_path
    params = load_params(params_path, overrides)
    return params, Layout.from_params(params, root_path)


# --- models/history.json ------------------------------------------------------------


def read_history(path: Path) -> list[dict[str, Any]]:
    """The per-epoch records of history.json ({"epochs": [...]}); [] when there is none."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text())["epochs"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise FerflowError(f"{path} is not a ferflow history file ({err}); re-run `ferflow train`") from err


def write_history(path: Path, records: list[dict[str, Any]], lineage: dict[str, Any] | None = None) -> Path:
    """history.json; `lineage`: per phase, the run, params digest and data digest of its epochs."""
    content: dict[str, Any] = {"epochs": records}
    if lineage:
        content["lineage"] = lineage
    return write_json(path, content, sort_keys=False)


def history_lineage(path: Path) -> dict[str, Any]:
    """The per-phase lineage history.json records ({} when none is recorded)."""
    try:
        found = json.loads(Path(path).read_text()).get("lineage")
    except (OSError, ValueError, AttributeError):
        return {}
    return found if isinstance(found, dict) else {}
