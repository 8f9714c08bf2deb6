from __future__ import annotations

from pathlib import Path

import pytest

from alab.config import RunConfig, config_from_dict, load_config
from alab.errors import AlabError


def test_defaults_then_file_then_flags(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('strategy = "max_entropy"\nrounds = 7\n[backend]\nepochs = 3\n')
    config = load_config(recipe, {"rounds": 2, "seed": None, "backend": "mc_dropout"})
    assert (config.strategy, config.rounds, config.seed) == ("max_entropy", 2, RunConfig.seed)
    assert config.backend.name == "mc_dropout" and config.backend.params == {"epochs": 3}


def test_round_trip_through_toml(tmp_path: Path) -> None:
    config = load_config(None, {"strategy": "variance", "pool_subsample": 100, "backend": "mc_dropout"})
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"rounds": "three"}, "config.rounds must be int"),
        ({"rounds": True}, "config.rounds must be int"),
        ({"colour": "red"}, "unknown key config.colour"),
        ({"query_size": 0}, "query_size must be at least 1"),
        ({"initial": -5}, "initial must be at least 1"),
        ({"rounds": -1}, "rounds must not be negative"),
        ({"device": "tpu"}, "device must be"),
        ({"backend": "mc_dropout"}, "backend must be a table"),
        ({"pool_subsample": 5, "query_size": 10}, "pool_subsample"),
    ],
)
def test_bad_values_are_one_line_errors(document: dict, message: str) -> None:
    with pytest.raises(AlabError, match=message) as err:
        config_from_dict(document)
    assert "\n" not in str(err.value)


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("strategy = \n")
    with pytest.raises(AlabError, match="bad.toml is not valid TOML"):
        load_config(path)


def test_missing_config_file() -> None:
    with pytest.raises(AlabError, match="does not exist"):
        load_config("/nonexistent/recipe.toml")


def test_schedule_tables_and_the_target_settings_round_trip(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'strategy = "badge"\ntarget_classes = [1, 7]\nepig_targets = 50\nepig_target_inputs = "validation"\n'
        '[[schedule]]\nuntil = 40\nstrategy = "typiclust"\n[[schedule]]\nuntil = 60\nstrategy = "probcover"\n'
    )
    config = load_config(recipe)
    assert [(step.until, step.strategy) for step in config.schedule] == [(40, "typiclust"), (60, "probcover")]
    assert (config.target_classes, config.epig_targets, config.epig_target_inputs) == ([1, 7], 50, "validation")
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config
    assert "schedule" not in RunConfig().to_toml()  # none written without a schedule


@pytest.mark.parametrize("fields", [{"target_classes": [[]]}, {"target_classes": [True, 2]}, {"ood": "held_out", "ood_classes": [[5]]}])
def test_class_lists_of_anything_but_integers_are_one_line_errors(fields: dict) -> None:
    # hypothesis found target_classes = [[]] raising TypeError (unhashable list) instead of a usage error
    with pytest.raises(AlabError, match="must be a list of class indices"):
        RunConfig(**fields)
