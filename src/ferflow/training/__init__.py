"""Training: the model and its backbones, the two phases (`train.fit_head`,
`train.fine_tune`), and what they run on: in-step augmentation, schedules, batches, the
callbacks, backups and resuming, the time budget, the runtime (seeds, precision, XLA).

Imports Keras; nothing here knows of MLflow, Prefect, DVC or the stages (import-linter).
"""
