"""ferflow's MLflow wing: the only code that imports mlflow (an import-linter contract).

- `connect(params)` (`session`): a command's one connection, a `Session` holding one
  client for the runs of the experiment; `registry.connect(params)` opens the registered
  model on it (`Registry`: versions, aliases, tags, the promotion lock).
- `store`: the tracking URI, the client, `RunInfo` and the one reader/writer of run.json,
  provenance (git commit, data version), the model signature, secret redaction.
- `runs`: the parent run of a pipeline run and a nested run per phase, per-epoch and
  evaluation logging, run statuses.
- `models`: logging and loading models (the smoke test's loading too).
- `registry`: `Registry`, one registered model's versions, aliases and tags, promote and
  rollback (inside the lock of `lock`).
- `lock`: the promotion lock (a registered model used as a lease) that every alias move holds.
- `reader`: what `ferflow compare` reads (runs, versions, the confusion matrix artifact).
- `epochs`, `audit`: per-epoch metric logging; `ferflow runs check` (tags vs aliases).

mlflow itself is imported inside the functions that need it: importing a submodule stays
cheap (the CLI checks its arguments before any heavy import).
"""

from ferflow.tracking.session import Session, connect

__all__ = ["Session", "connect"]
