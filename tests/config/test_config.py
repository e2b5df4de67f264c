"""The typed config: errors name the key, overrides apply, YAML round-trips losslessly."""

from __future__ import annotations

import pytest
import yaml

from eigenmap.config import (Config, ConfigError, apply_overrides, from_dict, load_config, resolve,
                             save_config, to_dict, to_yaml)


def test_unknown_key_fails_naming_the_key_and_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.widht'.*accepted keys under model: arch"):
        from_dict({"model": {"widht": 3}})


def test_unknown_section_fails_naming_it():
    with pytest.raises(ConfigError, match=r"unknown config key 'modle'"):
        from_dict({"modle": {}})


def test_wrong_type_fails_naming_the_key_and_the_expected_type():
    with pytest.raises(ConfigError, match=r"'data\.batch_size_per_worker'.*expected int"):
        from_dict({"data": {"batch_size_per_worker": "big"}})
    with pytest.raises(ConfigError, match=r"'train\.progress_bar'.*expected bool"):
        from_dict({"train": {"progress_bar": 1}})


def test_bad_choice_lists_the_accepted_values():
    with pytest.raises(ConfigError, match=r"'model\.arch'.*one of 'resnet18', 'resnet34', 'resnet50'"):
        from_dict({"model": {"arch": "vit"}})


def test_out_of_range_value_fails_naming_the_key_and_the_range():
    with pytest.raises(ConfigError, match=r"'loss\.ema_momentum'.*out of range.*>= 0.0 and < 1.0"):
        from_dict({"loss": {"ema_momentum": 1.5}})
    with pytest.raises(ConfigError, match=r"'dist\.zero_stage'.*<= 3"):
        from_dict({"dist": {"zero_stage": 4}})


def test_inconsistent_values_fail_naming_both_keys():
    with pytest.raises(ConfigError, match=r"data\.scale_min.*data\.scale_max"):
        from_dict({"data": {"scale_min": 0.9, "scale_max": 0.2}})


def test_an_alpha_ramp_on_a_loss_other_than_neuralef_fails_naming_the_key():
    with pytest.raises(ConfigError, match=r"'loss\.alpha_final' \(0\.1\) applies to loss\.name=neuralef only, not 'simclr'"):
        from_dict({"loss": {"name": "simclr", "alpha_final": 0.1}})
    assert from_dict({"loss": {"alpha_final": 0.1}}).loss.alpha_final == 0.1


def test_a_ramp_start_without_a_final_alpha_fails_naming_both_keys():
    with pytest.raises(ConfigError, match=r"'loss\.alpha_ramp_start' \(0\.5\).*'loss\.alpha_final' is unset"):
        from_dict({"loss": {"alpha_ramp_start": 0.5}})
    with pytest.raises(ConfigError, match=r"loss\.alpha_ramp_start"):
        from_dict({"loss": {"alpha_final": 0.1, "alpha_ramp_start": 1.0}})
    assert from_dict({"loss": {"alpha_final": 0.1, "alpha_ramp_start": 0.5}}).loss.alpha_ramp_start == 0.5


def test_nan_is_rejected():
    with pytest.raises(ConfigError, match=r"'loss\.alpha'.*finite"):
        from_dict({"loss": {"alpha": float("nan")}})


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert from_dict({"loss": {"t": 5}}).loss.t == 5.0
    with pytest.raises(ConfigError, match="model.projector_out_dim"):
        from_dict({"model": {"projector_out_dim": 2.5}})


def test_overrides_set_nested_values_parsed_as_yaml():
    cfg = from_dict(apply_overrides({}, ["model.arch=resnet18", "loss.stop_grad=false",
                                         "data.mean=[0.5, 0.5, 0.5]", "optim.grad_clip=null"]))
    assert cfg.model.arch == "resnet18" and cfg.loss.stop_grad is False
    assert cfg.data.mean == (0.5, 0.5, 0.5) and cfg.optim.grad_clip is None


def test_override_of_unknown_key_fails():
    with pytest.raises(ConfigError, match=r"'loss\.alhpa'"):
        from_dict(apply_overrides({}, ["loss.alhpa=0.1"]))
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["loss.alpha"])


def test_yaml_round_trip_is_lossless(tmp_path):
    cfg = from_dict({"model": {"arch": "resnet34", "projector_out_dim": 128},
                     "data": {"view2": {"solarize_prob": 0.3}}, "optim": {"grad_clip": 1.0}})
    path = tmp_path / "cfg.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert to_yaml(again) == to_yaml(cfg)
    assert yaml.safe_load(path.read_text()) == to_dict(cfg)


def test_defaults_follow_the_paper_recipe():
    cfg = Config()
    assert (cfg.loss.t, cfg.loss.alpha, cfg.loss.ema_momentum) == (10.0, 0.0025, 0.99)
    assert (cfg.data.view1.blur_prob, cfg.data.view1.solarize_prob) == (1.0, 0.0)
    assert (cfg.data.view2.blur_prob, cfg.data.view2.solarize_prob) == (0.1, 0.2)


def test_resolve_makes_the_scaled_learning_rate_visible():
    cfg = resolve(from_dict({"dist": {"num_workers": 8}, "data": {"batch_size_per_worker": 256},
                             "optim": {"base_lr": 0.3}}))
    assert cfg.derived.global_batch_size == 2048
    assert cfg.derived.lr == pytest.approx(2.4)
    assert "lr: 2.4" in to_yaml(cfg)
    assert cfg.optim.lr is None  # the user's key stays as the user left it
    explicit = resolve(from_dict({"optim": {"lr": 0.5}}))
    assert explicit.derived.lr == 0.5 and explicit.optim.lr == 0.5


def test_resolve_twice_is_resolve_once():
    cfg = from_dict({"dist": {"num_workers": 4}, "data": {"batch_size_per_worker": 64}, "optim": {"base_lr": 0.3}})
    once = resolve(cfg)
    assert resolve(once) == once
    assert to_yaml(resolve(once)) == to_yaml(once)


def test_a_changed_batch_re_derives_the_learning_rate_of_a_resolved_config():
    once = resolve(from_dict({"dist": {"num_workers": 1}, "data": {"batch_size_per_worker": 256}}))
    assert once.derived.lr == pytest.approx(0.3)
    once.data.batch_size_per_worker = 512
    again = resolve(once)
    assert again.derived.global_batch_size == 512
    assert again.derived.lr == pytest.approx(0.6)


def test_an_unknown_key_lists_the_accepted_keys_of_its_section():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.probe_lr'; accepted keys under optim: .*online_head_lr"):
        from_dict({"optim": {"probe_lr": 0.1}})
    with pytest.raises(ConfigError, match="online_head_lr"):
        from_dict(apply_overrides({}, ["optim.probe_lr=0.1"]))
    assert from_dict({"eval": {"probe_lr": 0.2}}).eval.probe_lr == 0.2  # the linear probe's own key


def test_missing_file_and_bad_yaml_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
