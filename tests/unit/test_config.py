"""params.yaml is loaded strictly: typos, wrong types and out-of-range values name the key."""

from __future__ import annotations

import pytest

from ferflow.config import FER_CLASSES, ParamsError, load_params, parse_params
from tests.conftest import PARAMS_FILE


def test_defaults_are_the_study_settings():
    params = load_params(PARAMS_FILE)

    assert params.base.seed == 12
    assert params.base.image_size == 48
    assert params.base.classes == FER_CLASSES
    assert params.base.class_labels[5] == "Sadness"
    assert params.train.batch_size == 64
    assert params.train.epochs == 30
    assert params.train.early_stopping_patience == 3
    assert params.train.learning_rate == pytest.approx(1e-4)
    assert params.finetune.epochs == 20
    assert params.finetune.learning_rate == pytest.approx(1e-3)
    assert params.ingest.val_fraction == pytest.approx(0.2)
    assert params.model.backbone == "densenet169"


def test_params_yaml_spells_out_every_default():
    """params.yaml holds every hyperparameter: the file equals the model's defaults (the
    task timeouts, whose defaults live in the stage table, are checked below)."""
    loaded = load_params(PARAMS_FILE)
    without_timeouts = loaded.model_copy(update={"flow": loaded.flow.model_copy(update={"timeouts": {}})})

    assert without_timeouts == parse_params({})


def test_the_timeouts_params_yaml_lists_are_the_stage_tables_defaults():
    from ferflow.stages import STAGES

    listed = load_params(PARAMS_FILE).flow.timeouts

    assert listed, "params.yaml shows the task timeouts"
    assert listed == {name: STAGES[name].timeout_s for name in listed}


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.epoch=2", "train.epoch"),
        ("train.epochs=two", "train.epochs"),
        ("train.epochs=-1", "train.epochs"),
        ('train.epochs="2"', "train.epochs"),
        ("finetune.learning_rate=-1", "finetune.learning_rate"),
        ("model.backbone=resnet50", "model.backbone"),
        ("model.dropout=[0.5]", "model.dropout"),
        ("trian.epochs=2", "trian"),
    ],
)
def test_bad_override_names_the_key(override, named):
    with pytest.raises(ParamsError) as err:
        load_params(PARAMS_FILE, [override])

    assert named in str(err.value)


def test_override_applies_and_is_typed():
    params = load_params(PARAMS_FILE, ["train.epochs=2", "train.learning_rate=1e-3"])

    assert params.train.epochs == 2
    assert params.train.learning_rate == pytest.approx(1e-3)


def test_params_are_frozen():
    params = load_params(PARAMS_FILE)

    with pytest.raises(ValueError, match="frozen"):
        params.train.epochs = 3  # type: ignore[misc]


def test_malformed_override_is_explained():
    with pytest.raises(ParamsError, match=r"section\.key=value"):
        load_params(PARAMS_FILE, ["train.epochs"])


def test_missing_params_file_is_explained(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_flat_keys_are_stable_and_digest_changes_with_a_value():
    base = load_params(PARAMS_FILE)
    changed = load_params(PARAMS_FILE, ["train.epochs=3"])

    assert base.flat()["train.epochs"] == 30
    assert base.flat()["model.head_units"] == "256,1024,512"
    assert base.digest() != changed.digest()
    assert base.section_digest("ingest") == changed.section_digest("ingest")


PROFILE = PARAMS_FILE.parent / "profiles" / "from-scratch.yaml"


def test_the_from_scratch_profile_extends_params_yaml():
    params = load_params(PROFILE)
    study = load_params(PARAMS_FILE)

    # what the profile sets
    assert params.model.weights == "none"
    assert params.train.epochs == 0  # phase 1 skipped
    assert params.finetune.train_batchnorm
    assert params.finetune.schedule == "cosine"
    assert params.finetune.optimizer == "adamw"
    assert params.finetune.augment.erasing > 0
    assert params.evaluate.tta_flip
    # what it inherits, key by key inside a section it changes
    assert params.base == study.base
    assert params.model.input_size == study.model.input_size
    assert params.finetune.batchnorm_momentum != study.finetune.batchnorm_momentum
    assert params.registry == study.registry


def test_the_cpu_profile_is_the_from_scratch_one_boxed_in_two_hours():
    params = load_params(PARAMS_FILE.parent / "profiles" / "cpu.yaml")
    scratch = load_params(PROFILE)

    assert params.model.backbone == "densenet-bc-cpu" and params.model.weights == "none"
    assert params.finetune.epochs == "auto"
    assert params.finetune.time_budget_s is not None and params.finetune.time_budget_s <= 2 * 3600 - 600
    assert params.finetune.class_weights == "sqrt"
    # the rest is the from-scratch recipe
    assert params.train == scratch.train and params.evaluate == scratch.evaluate
    assert params.finetune.augment == scratch.finetune.augment
    assert params.finetune.learning_rate == scratch.finetune.learning_rate


def test_a_profile_merges_sections_and_overrides_still_apply(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 7\n  batch_size: 16\n")
    (tmp_path / "profile.yaml").write_text("extends: base.yaml\ntrain:\n  epochs: 3\n")

    params = load_params(tmp_path / "profile.yaml", ["train.learning_rate=0.01"])

    assert (params.train.epochs, params.train.batch_size) == (3, 16)
    assert params.train.learning_rate == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "cycle"),
        ({"a.yaml": "extends: missing.yaml\n"}, "missing.yaml not found"),
        ({"a.yaml": "extends: [b.yaml]\n"}, "`extends` must be the path"),
    ],
)
def test_a_broken_extends_is_a_clear_error(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)

    with pytest.raises(ParamsError, match=message):
        load_params(tmp_path / "a.yaml")


def test_a_binary_params_file_is_a_clear_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")

    with pytest.raises(ParamsError, match=r"params\.yaml: not valid YAML text"):
        load_params(path)


def test_the_runtime_settings_have_their_own_section_and_the_old_place_says_where_they_went(tmp_path):
    # given the runtime settings in `runtime:` (every phase), not in `train:` (phase 1)
    params = load_params(PARAMS_FILE, ["runtime.deterministic=true"])
    assert params.runtime.deterministic and not hasattr(params.train, "deterministic")
    # when an older file still has one under `train:`, then the error names the new key
    old = tmp_path / "old.yaml"
    old.write_text("extends: " + str(PARAMS_FILE) + "\ntrain:\n  mixed_precision: true\n")
    with pytest.raises(ParamsError, match=r"train\.mixed_precision: moved to runtime\.mixed_precision"):
        load_params(old)
    with pytest.raises(ParamsError, match=r"moved to runtime\.xla_flags"):
        load_params(PARAMS_FILE, ["train.xla_flags=--x"])
