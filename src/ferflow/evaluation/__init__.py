"""Evaluation: metrics and report files of a model on a test split (`evaluate`), its
figures (`plots`), the promotion gate (`gate`), two runs side by side (`compare`), the
model card and single-image prediction (`predict`).

Nothing here knows of MLflow, Prefect, DVC or the stages (import-linter).
"""
