"""TrainSettings: validation, hashing, and coverage of device profiles."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from toolchain.adapter import Grid, TrainSettings
from toolchain.build.training import training_settings
from toolchain.profiles import load_profiles
from toolchain.quant.core import Scheme


def test_default_grids_cover_the_shipped_profiles(profiles_dir):
    covering = training_settings(load_profiles([profiles_dir]))
    assert {g.key for g in covering.grids} <= {g.key for g in TrainSettings().grids}
    assert set(covering.bits) <= set(TrainSettings().bits)


def test_covering_collects_schemes_and_block_sizes(profiles_dir):
    profiles = {p.name: p for p in load_profiles([profiles_dir])}
    s = training_settings([profiles["rpi5"], profiles["aggressive_2bit"]], steps=5)
    assert s.steps == 5 and s.bits == [2, 3, 4, 5, 6, 8]
    assert {g.key for g in s.grids} == {"symm-pc", "symm-b32", "symm-b64", "symm-b128", "asym-pc"}


def test_digest_tracks_every_field_and_float_digest_only_the_float_stage():
    a = TrainSettings()
    assert a.digest() == TrainSettings().digest()
    assert a.digest() != TrainSettings(alpha=3.0).digest()
    assert a.float_digest() == TrainSettings(alpha=3.0, steps=7).float_digest()
    assert a.float_digest() != TrainSettings(float_steps=7).float_digest()
    assert a.float_digest() == TrainSettings(train_max_length=64).float_digest()  # the float stage trains at max_length


@pytest.mark.parametrize(
    ("kwargs", "tokens"),
    [({}, 96), ({"train_max_length": None}, 128), ({"max_length": 32}, 32), ({"train_max_length": 200}, 128)],
)
def test_training_length_never_exceeds_the_evaluation_length(kwargs, tokens):
    assert TrainSettings(**kwargs).effective_train_length == tokens


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": [2, 9]}, "bits: 9 is not in 2..8"),
        ({"batch_size": 1, "configs_per_step": 2}, "batch_size 1 < configs_per_step 2"),
        ({"grids": [Grid(), Grid(scheme=Scheme.SYMMETRIC)]}, "duplicates"),
        ({"unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_refused_by_field(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        TrainSettings(**kwargs)


def test_a_version_1_record_means_a_float_fine_tune_without_decay() -> None:
    """Runs recorded before float_decay existed trained without it: reading one must not claim the decay."""
    recorded = TrainSettings().model_dump(mode="json") | {"version": 1}
    del recorded["float_decay"], recorded["mapper"]
    old = TrainSettings.model_validate(recorded)
    assert old.float_decay is False and old.mapper is True
    assert old != TrainSettings() and old.float_digest() != TrainSettings().float_digest()
