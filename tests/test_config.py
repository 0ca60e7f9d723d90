"""Profiles: loading, overrides, strict validation with helpful errors, asset lookup."""
import re

import pytest

from lverse_core.config import (ASSET_ENV, ConfigError, MissingAssetError, available_profiles, config_from_dict,
                                load_profile, require_asset)


def test_all_profiles_load():
    assert set(available_profiles()) >= {"ci", "smoke", "gpu", "paper"}
    for name in available_profiles():
        cfg = load_profile(name)
        assert cfg.profile == name
        assert cfg.image_grid == cfg.data.image_size // 8


def test_paper_profile_has_paper_sizes():
    cfg = load_profile("paper")
    assert cfg.data.image_size == 256 and cfg.image_grid == 32 and cfg.image_tokens == 1024
    assert cfg.augvae.codebook_size == 8192 and cfg.augvae.z_channels == 256 and cfg.augvae.n_levels == 4
    assert cfg.biart.text_len == 64 and not cfg.biart.compact_vocab
    assert cfg.augvae.dead_code_threshold == 0 and not cfg.augvae.data_init  # as the official code


def test_overrides_dotted_and_sections():
    cfg = load_profile("ci", **{"augvae_train.ml_steps": 7, "seed": 5}, biart={"n_layer": 3})
    assert cfg.augvae_train.ml_steps == 7 and cfg.seed == 5 and cfg.biart.n_layer == 3
    assert load_profile("ci", **{"augvae_train.lr": 1}).augvae_train.lr == 1.0  # int accepted for float


def test_unknown_profile_lists_valid():
    with pytest.raises(ConfigError, match=r"unknown profile 'smok'.*ci.*smoke"):
        load_profile("smok")


def test_unknown_key_names_it_and_lists_valid():
    with pytest.raises(ConfigError, match=r"unknown key 'augvae\.codebok_size'.*codebook_size"):
        load_profile("ci", **{"augvae.codebok_size": 3})
    with pytest.raises(ConfigError, match=r"unknown key 'augvea'.*augvae"):
        load_profile("ci", augvea={"x": 1})


@pytest.mark.parametrize("key,value,msg", [
    ("augvae.codebook_size", "big", "expected an integer"),
    ("augvae.codebook_size", 2.5, "expected an integer"),
    ("augvae.data_init", "yes", "expected true or false"),
    ("augvae.ch_mult", 3, "expected a list"),
    ("augvae.ema_update", "sometimes", "not one of per_level, pooled"),
    ("data.image_size", 60, "multiple of 8"),
    ("sampling.top_p", 1.5, r"\(0, 1\]"),
    ("biart.n_head", 3, "divisible"),
    ("augvae.norm_groups", 7, "does not divide"),
])
def test_bad_values(key, value, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        load_profile("ci", **{key: value})
    assert key.split(".")[0] in str(e.value)


def test_roundtrip_through_dict():
    cfg = load_profile("smoke")
    assert config_from_dict(cfg.to_dict()) == cfg


def test_missing_asset_error_names_it(monkeypatch, tmp_path):
    cfg = load_profile("paper")
    with pytest.raises(MissingAssetError, match=r"coco_karpathy_json.*LVERSE_COCO_KARPATHY_JSON.*Karpathy"):
        require_asset(cfg, "coco_karpathy_json")
    monkeypatch.setenv(ASSET_ENV["inception_fid"], str(tmp_path / "nope.pth"))
    with pytest.raises(MissingAssetError, match="does not exist"):
        require_asset(load_profile("paper"), "inception_fid")
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    monkeypatch.setenv(ASSET_ENV["inception_fid"], str(f))
    assert require_asset(load_profile("paper"), "inception_fid") == f


def test_workdir_moves_outputs(monkeypatch, tmp_path):
    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))
    cfg = load_profile("ci")
    assert cfg.reports_root == tmp_path / "reports" / "ci" and cfg.data_root == tmp_path / "data" / "ci"


@pytest.mark.parametrize("key,value", [
    ("augvae_train.ml_steps", -5),  # used to write an untrained checkpoint marked finished
    ("augvae_train.sl_steps", 0),
    ("biart_train.steps", -1),
    ("eval.t2i_prompts", -1),
    ("eval.human_eval_form_size", 0),
    ("augvae_train.ckpt_every", 0),  # these three used to raise ZeroDivisionError
    ("biart_train.log_every", 0),
    ("biart.n_head", 0),
    ("augvae.decay", 1.0),
    ("biart_train.lr", float("nan")),
    ("biart_train.betas", [0.9, 1.5]),
    ("eval.blur_radii", [0, -1]),
])
def test_numbers_outside_their_declared_range_are_config_errors(key, value):
    with pytest.raises(ConfigError, match=rf"{key}: .* out of range; allowed: [\[(]"):
        load_profile("ci", **{key: value})


def test_every_field_is_declared_once_with_its_help_and_valid_values():
    # each field of each section carries its help text, and every number (or list of numbers) a declared range
    # (config.ANY where any finite number will do); validation reads nothing else
    import dataclasses
    import typing

    from lverse_core.config import CHOICES, RANGES, Config, field_types, leaves

    def fields(cls, prefix=""):
        for f in dataclasses.fields(cls):
            yield prefix + f.name, f
            if dataclasses.is_dataclass(field_types(cls)[f.name]):
                yield from fields(field_types(cls)[f.name], f"{prefix}{f.name}.")

    undeclared = [key for key, f in fields(Config) if "spec" not in f.metadata or not f.metadata["spec"].help.strip()]
    assert not undeclared, f"fields without a setting(...) declaration and help text: {undeclared}"
    numbers = {key for key, typ, _ in leaves() if typ in (int, float) or typing.get_args(typ) in ((int,), (float,))}
    unranged = {key for key, _, spec in leaves() if key in numbers and spec.range is None}
    assert not unranged, f"numbers without a declared range (use range=ANY for any finite number): {unranged}"
    assert set(RANGES) == numbers  # the views by key are read from the declarations
    assert CHOICES["augvae.ema_update"] == ("per_level", "pooled")


def test_a_field_declared_without_setting_is_named():
    import dataclasses

    from lverse_core.config import leaves

    @dataclasses.dataclass
    class Section:
        x: int = 3

    with pytest.raises(TypeError, match="'x' is declared without setting"):
        list(leaves(Section))


def test_a_setting_refuses_a_declaration_without_help_or_with_a_default_outside_its_choices():
    from lverse_core.config import setting

    with pytest.raises(TypeError, match="help"):
        setting(1, help=" ")
    with pytest.raises(TypeError, match="not one of its choices"):
        setting("c", help="x", choices=("a", "b"))
    a, b = (setting([1, 2], help="x").default_factory() for _ in range(2))
    assert a == b == [1, 2] and a is not b  # a list default is copied for every instance


def test_each_asset_is_described_by_one_record():
    # the env variable, the source quoted in errors and the stand-in path all come from the asset's field
    import dataclasses

    from lverse_core.config import (ASSET_ENV, ASSET_HELP, ASSETS, RESERVED_OVERRIDES, STAND_IN_PATHS,
                                    AssetsConfig)

    declared = {f.name: f.metadata["spec"].asset for f in dataclasses.fields(AssetsConfig)}
    assert {k for k, a in declared.items() if a is None} == {"stand_ins"}  # every path field is an asset
    assert ASSETS == {k: a for k, a in declared.items() if a is not None}
    assert ASSET_ENV == {k: a.env for k, a in ASSETS.items()} and ASSET_HELP == {k: a.source for k, a in ASSETS.items()}
    assert STAND_IN_PATHS == {k: a.stand_in for k, a in ASSETS.items() if a.stand_in}
    assert set(ASSETS) - set(STAND_IN_PATHS) == {"corenlp_dir"}  # SPICE's jars have no stand-in
    assert len(set(ASSET_ENV.values())) == len(ASSETS) and all(v.startswith("LVERSE_") for v in ASSET_ENV.values())
    assert {f"assets.{k}" for k in ASSETS} <= set(RESERVED_OVERRIDES)


def test_an_asset_path_from_its_env_variable_wins_over_the_yaml(monkeypatch, tmp_path):
    from lverse_core.config import ASSETS

    for name, spec in ASSETS.items():
        monkeypatch.setenv(spec.env, str(tmp_path / name))
    cfg = load_profile("paper")
    assert all(getattr(cfg.assets, name) == str(tmp_path / name) for name in ASSETS)


def test_the_old_flat_tables_are_views_of_the_declarations():
    from lverse_core.config import LENGTHS, RANGES, TOGGLES, Range

    assert RANGES["sampling.top_p"] == Range(0, 1, lo_open=True) and str(RANGES["sampling.top_p"]) == "(0, 1]"
    assert LENGTHS == {"augvae.ch_mult": (1, None), "biart_train.betas": (2, 2), "eval.blur_radii": (1, None)}
    assert TOGGLES == ("augvae_train.channels_last",)


def _in_range(st, rng, integer):
    from lverse_core.config import INT_MAX

    if integer:
        lo = None if rng.lo is None else int(rng.lo) + (1 if rng.lo_open else 0)
        hi = INT_MAX if rng.hi is None else min(INT_MAX, int(rng.hi) - (1 if rng.hi_open else 0))
        return st.integers(min_value=lo, max_value=hi)
    return st.floats(min_value=rng.lo, max_value=rng.hi, exclude_min=rng.lo_open and rng.lo is not None,
                     exclude_max=rng.hi_open and rng.hi is not None, allow_nan=False, allow_infinity=False)


def _out_of_range(st, rng, integer):
    from lverse_core.config import INT_MAX

    if integer:
        below = [] if rng.lo is None else [st.integers(max_value=int(rng.lo) - (0 if rng.lo_open else 1))]
        above = st.integers(min_value=INT_MAX + 1 if rng.hi is None else int(rng.hi) + (0 if rng.hi_open else 1))
        return st.one_of(*below, above)
    below = [] if rng.lo is None else [st.floats(max_value=rng.lo, exclude_max=not rng.lo_open)]
    above = [] if rng.hi is None else [st.floats(min_value=rng.hi, exclude_min=not rng.hi_open)]
    return st.one_of(*below, *above, st.sampled_from([float("nan"), float("inf"), -float("inf")]))


@pytest.mark.parametrize("inside", [True, False], ids=["in-range", "out-of-range"])
def test_values_in_their_declared_range_pass_it_and_others_are_refused_naming_the_key(inside):
    # For every declared number: a value the declaration allows never fails its range check (it may still break a
    # check that ties two fields together, e.g. biart.n_head dividing biart.n_embd); any other is a ConfigError
    # naming the key and its allowed range.
    import typing

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from lverse_core.config import leaves

    declared = {key: (typ, spec) for key, typ, spec in leaves() if spec.range is not None}

    @st.composite
    def case(draw):
        key = draw(st.sampled_from(sorted(declared)))
        typ, spec = declared[key]
        item = (typing.get_args(typ) or (typ,))[0]
        v = draw((_in_range if inside else _out_of_range)(st, spec.range, item is int))
        if item is not typ:  # a list: as few items as it may have, the drawn one first, then distinct valid ones
            n = max(1, spec.length[0] if spec.length else 1)
            rest = draw(st.lists(_in_range(st, spec.range, item is int), min_size=n - 1, max_size=n - 1, unique=True)
                        .filter(lambda r: v not in r))
            v = [v, *rest]
        return key, v, spec

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(case())
    def check(c):
        key, value, spec = c
        try:
            cfg = load_profile("ci", **{key: value})
        except ConfigError as e:
            assert not inside or "out of range" not in str(e), (key, value, str(e))
            assert inside or (f"{key}: " in str(e) and "out of range" in str(e)), (key, value, str(e))
            return
        assert inside, (key, value)
        got = cfg
        for part in key.split("."):
            got = getattr(got, part)
        assert got == value

    check()


@pytest.mark.parametrize("name", ["../../../tmp/evil", "/etc/evil", "ci/../ci", "..", "", ".ci", "c i"])
def test_a_profile_name_is_never_a_path(name, tmp_path):
    from lverse_core.config import CONFIG_DIR

    evil = tmp_path / "evil.yaml"  # a readable profile outside configs/, reachable by a relative name
    evil.write_text("profile: evil\\n")
    rel = "../" * len(CONFIG_DIR.parts) + str(tmp_path / "evil").lstrip("/")
    for n in (name, rel):
        with pytest.raises(ConfigError, match="not a plain name"):
            load_profile(n)


def test_a_saved_config_with_a_path_as_profile_is_refused():
    tree = load_profile("ci").to_dict()
    tree["profile"] = "../../elsewhere"  # would put data/, runs/ and reports/ outside the work directory
    with pytest.raises(ConfigError, match="not a plain name"):
        config_from_dict(tree)


def test_a_relative_workdir_means_the_same_folder_to_kernels_started_elsewhere(monkeypatch, tmp_path):
    import os
    import subprocess
    import sys

    from lverse_core.config import REPO_ROOT

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LVERSE_WORKDIR", "rel/work")
    cfg = load_profile("ci")
    assert cfg.reports_root == tmp_path / "rel" / "work" / "reports" / "ci"
    assert os.environ["LVERSE_WORKDIR"] == str(tmp_path / "rel" / "work")  # pinned for child processes
    # a notebook kernel: another process, started in the repo root (as the runner does), same environment
    child = subprocess.run([sys.executable, "-c", "from lverse_core import load_profile; "
                            "print(load_profile('ci').reports_root)"], cwd=REPO_ROOT, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=True)
    assert child.stdout.strip() == str(cfg.reports_root)


def test_a_run_with_overrides_gets_its_own_folders_and_says_what_they_hold(tmp_path, monkeypatch):
    import json

    from lverse_core.config import load_run_config, overrides_tag

    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))
    default = load_run_config("ci", {})
    assert default.runs_root == tmp_path / "runs" / "ci" and default.reports_root == tmp_path / "reports" / "ci"
    cfg = load_run_config("ci", {"augvae_train": {"sl_steps": 7}})
    tag = overrides_tag({"augvae_train.sl_steps": 7})
    assert cfg.augvae_train.sl_steps == 7
    assert cfg.runs_root == tmp_path / "runs" / f"ci+{tag}" and cfg.reports_root == tmp_path / "reports" / f"ci+{tag}"
    assert cfg.data_root == default.data_root  # training overrides share the data set
    assert json.loads((cfg.runs_root / "overrides.json").read_text())["overrides"] == {"augvae_train.sl_steps": 7}
    assert load_run_config("ci", {"augvae_train.sl_steps": 7}).runs_root == cfg.runs_root  # same overrides, same run
    seeded = load_run_config("ci", {"seed": 3})
    assert seeded.seed == 3 and seeded.data_root == tmp_path / "data" / f"ci+{overrides_tag({'seed': 3})}"
    with pytest.raises(ConfigError, match="OVERRIDES must be a dict"):
        load_run_config("ci", ["seed", 3])
    with pytest.raises(ConfigError, match="unknown key 'augvae_train.nope'"):
        load_run_config("ci", {"augvae_train.nope": 1})


@pytest.mark.parametrize("overrides,key", [
    ({"profile": "smoke"}, "profile"),  # used to write a ci-sized data set over smoke's
    ({"runs_dir": "../../somewhere"}, "runs_dir"),
    ({"reports_dir": "/tmp/elsewhere"}, "reports_dir"),
    ({"data.root": "data/smoke"}, "data.root"),
    ({"data": {"root": "data/{profile.__class__}"}}, "data.root"),
    ({"assets.coco_root": "/tmp"}, "assets.coco_root"),
    ({"assets": {"wds_shards": "/tmp"}}, "assets.wds_shards"),
])
def test_overrides_may_not_name_the_profile_or_a_folder(workdir, overrides, key):
    from lverse_core.config import load_run_config

    with pytest.raises(ConfigError, match=rf"OVERRIDES: '{re.escape(key)}' (names a folder|cannot be overridden)"):
        load_run_config("ci", overrides)
    assert not (workdir / "runs").exists() and not (workdir / "data").exists()  # refused before anything is written


def test_the_kits_own_folder_overrides_still_work(workdir, tmp_path_factory):
    # the claims' per-seed folders, stand-ins and tests set folders through load_profile / derive, not OVERRIDES
    from lverse_core.config import derive
    from lverse_core.evaluation.claims_experiment import seed_config

    outside = tmp_path_factory.mktemp("outside")
    assert load_profile("ci", runs_dir=str(outside / "r")).runs_root == outside / "r"
    cfg = seed_config(load_profile("ci"), 1)
    assert cfg.runs_root == workdir / "runs" / "ci" / "claims" / "s1"
    assert cfg.data_root == workdir / "data" / "ci+claims-s1"
    assert derive(cfg, **{"runs_dir": str(outside)}).runs_root == outside
    with pytest.raises(ConfigError, match="'profile'"):
        load_profile("ci", profile="smoke")


def test_folder_templates_are_never_formatted(workdir):
    # str.format would raise IndexError / KeyError on these, or look up an attribute
    cfg = load_profile("ci", runs_dir="runs/{0}{profile}{x}{profile.__class__}")
    assert cfg.runs_root == workdir / "runs" / "{0}ci{x}{profile.__class__}"


@pytest.mark.parametrize("yaml_line,key", [
    ("runs_dir: ../../somewhere", "runs_dir"),
    ("reports_dir: /tmp/reports", "reports_dir"),
    ("data:\n  root: data/../../{profile}", "data.root"),
])
def test_a_profile_whose_folders_leave_the_work_directory_is_refused(monkeypatch, tmp_path, yaml_line, key):
    from lverse_core import config

    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path)
    (tmp_path / "mine.yaml").write_text(f"profile: mine\n{yaml_line}\n")
    with pytest.raises(ConfigError, match=rf"mine.yaml: {re.escape(key)} = .* leaves the work directory.*"
                                          rf"LVERSE_WORKDIR"):
        load_profile("mine")
    (tmp_path / "fine.yaml").write_text("profile: fine\nruns_dir: elsewhere/{profile}/runs\n")
    assert load_profile("fine").runs_root == config.workdir() / "elsewhere" / "fine" / "runs"


def test_the_run_tag_is_long_and_checked_against_overrides_json(workdir):
    import json

    from lverse_core.config import load_run_config, overrides_tag

    cfg = load_run_config("ci", {"seed": 3})
    tag = cfg.runs_root.name.split("+", 1)[1]
    assert tag == overrides_tag({"seed": 3}) and len(tag) == 16
    assert load_run_config("ci", {"augvae_train.lr": 1}).runs_root == \
        load_run_config("ci", {"augvae_train": {"lr": 1.0}}).runs_root  # the same validated values, the same run
    record = cfg.runs_root / "overrides.json"
    assert json.loads(record.read_text()) == {"profile": "ci", "overrides": {"seed": 3}, "tag": tag}
    record.write_text(json.dumps({"profile": "ci", "overrides": {"seed": 4}, "tag": tag}))  # a tag collision
    with pytest.raises(ConfigError, match=r"overrides.json records another run .*seed': 4.* than these overrides"):
        load_run_config("ci", {"seed": 3})
    record.write_text("{not json")
    with pytest.raises(ConfigError, match="overrides.json cannot be read"):
        load_run_config("ci", {"seed": 3})


def test_a_deeply_nested_overrides_is_a_config_error():
    from lverse_core.config import load_run_config

    deep: dict = {}
    node = deep
    for _ in range(10_000):  # json.dumps / repr of it would raise RecursionError
        node["x"] = {}
        node = node["x"]
    for over in ({"seed": deep}, {"augvae": deep}, {"eval.blur_radii": [[[[[[[[[[1]]]]]]]]]]}):
        with pytest.raises(ConfigError, match="nested more than 8 levels"):
            load_run_config("ci", over)
    deep_list: list = []
    for _ in range(10_000):
        deep_list = [deep_list]
    with pytest.raises(ConfigError, match=r"seed: expected an integer, got <list too large to show>"):
        load_profile("ci", seed=deep_list)


@pytest.mark.parametrize("key,value,msg", [
    ("sampling.temperature", float("inf"), r"out of range; allowed: \[0, inf\), a finite number"),
    ("augvae_train.lr", float("inf"), "a finite number"),
    ("biart_train.grad_clip", float("-inf"), "a finite number"),
    ("augvae_train.lr", 10**400, "expected a finite number"),  # beyond the largest float
    ("seed", 2**70, r"allowed: \[0, 2147483647\]"),
    ("claims.seeds", [0, 2**40], r"allowed: \[0, 2147483647\] for every item"),
    ("data.image_size", 2**40, r"allowed: \[16, 4096\]"),
    ("augvae_train.ml_steps", 2**63, "integers in a profile are at most 2147483647"),
    pytest.param("seed", 10**5000, "too large to show", id="seed-5000-digits"),  # its repr raises ValueError
])
def test_non_finite_and_overflowing_values_are_config_errors(key, value, msg):
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: .*{msg}"):
        load_profile("ci", **{key: value})


@pytest.mark.parametrize("key,value,msg", [
    ("biart_train.betas", [0.9], "has 1 item.*give exactly 2"),
    ("biart_train.betas", [0.9, 0.95, 0.99], "has 3 item.*give exactly 2"),
    ("augvae.ch_mult", [], "has 0 item.*give at least 1"),
    ("eval.blur_radii", [], "has 0 item.*give at least 1"),
])
def test_list_lengths_are_checked(key, value, msg):
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: .*{msg}"):
        load_profile("ci", **{key: value})


def test_the_settings_listing_shows_each_keys_value_valid_values_and_help(capsys):
    from lverse_core.config.__main__ import main

    assert main(["--profile", "ci", "sampling.top_p", "augvae.ema_update", "biart_train.betas"]) == 0
    out = capsys.readouterr().out
    cfg = load_profile("ci")
    assert f"sampling.top_p = {cfg.sampling.top_p}  (float; (0, 1])\n    nucleus sampling mass; 1.0 = off" in out
    assert 'augvae.ema_update = "per_level"  (str; per_level | pooled)' in out
    assert "biart_train.betas = [0.9, 0.95]  (list[float]; [0, 1), 2 item(s))" in out
    assert "seed =" not in out and "data." not in out  # only the keys asked for
    assert main(["nope"]) == 2 and "no setting starts with nope" in capsys.readouterr().err
    assert main(["--profile", "smok"]) == 2 and "unknown profile 'smok'" in capsys.readouterr().err
