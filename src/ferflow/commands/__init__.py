"""The `ferflow` commands that are not pipeline stages: synthetic faces and the raw data
under DVC (`data`), evaluating any model on any data, predict, compare, and moving the
champion by hand (`models`). They build on ferflow.stages (Layout, the model loading of the
evaluate stage) and ferflow.tracking; the CLI is their only caller.
"""
