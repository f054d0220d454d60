"""Study files: every shipped study plans; bad files fail with the file and field path named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from calibench.errors import CalibenchError
from calibench.study.config import load_study
from calibench.study.units import expand

STUDIES = sorted((Path(__file__).resolve().parents[1] / "studies").glob("*.yaml"))

GOOD = {
    "name": "t",
    "methods": ["choice"],
    "tasks": ["synth-a"],
    "models": [{"name": "m1", "synthetic": {"skill": 0.6, "sharpness": 1.2}}],
}


def _write(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(obj) if not isinstance(obj, str) else obj)
    return path


def test_shipped_studies_exist() -> None:
    names = {p.stem for p in STUDIES}
    assert {"real-small", "pythia-scale", "pythia-dynamics", "llama-instruct", "oh-hwang", "synthetic-demo"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_shipped_study_plans(path: Path) -> None:
    study = load_study(path)
    units = expand(study, task_resolver=None)   # no task loading: hub tasks are resolved at run time
    assert units, path
    assert len({u.label for u in units}) == len(units)
    # dependency order: every dependency comes before the unit that needs it
    position = {u.key: i for i, u in enumerate(units) if u.kind == "train"}
    for i, u in enumerate(units):
        assert all(position[d] < i for d in u.deps)


def test_oh_hwang_grid_matches_the_paper() -> None:
    study = load_study(next(p for p in STUDIES if p.stem == "oh-hwang"))
    assert len(study.models) == 14
    assert len(study.tasks) == 10
    assert {t.methods for t in study.tasks} == {("continuation-sum", "continuation-min", "choice")}
    assert set(study.metrics) == {"ece", "sce"}
    assert sum(1 for m in study.models if m.base) == 7
    assert len(expand(study, task_resolver=None)) == 140


def test_pythia_scale_has_eight_sizes_in_order() -> None:
    study = load_study(next(p for p in STUDIES if p.stem == "pythia-scale"))
    params = [m.params for m in study.models]
    assert len(params) == 8 and params == sorted(params)


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"name": None}, "study.yaml: name: is required"),
        ({"models": [{"name": "m1"}]}, "study.yaml: models[0]: needs exactly one of"),
        ({"models": [{"name": "m1", "synthetic": {}}, {"name": "m2", "pretrained": "x", "revision": ["a"]}]},
         "study.yaml: models[1].revision: must be a string"),
        ({"models": [{"name": "m1", "synthetic": {}}, {"name": "m2", "synthetic": {}}, {"name": "m3", "pretrained": "x",
                                                                                        "revision": 3.5}]},
         "study.yaml: models[2].revision: must be a string"),
        ({"models": [{"name": "m1", "synthetic": {"skill": 1.5}}]}, "study.yaml: models[0].synthetic.skill: must be in (0, 1)"),
        ({"methods": ["choise"]}, "study.yaml: methods[0]: unknown method 'choise'"),
        ({"tasks": [{"name": "a", "methods": ["token", "token"]}]}, "study.yaml: tasks[0].methods[1]: method 'token' is listed twice"),
        ({"settings": {"seed": -1}}, "study.yaml: settings.seed: must be an integer >= 0"),
        ({"settings": {"sed": 1}}, "study.yaml: settings.sed: unknown field"),
        ({"models": [{"name": "m1", "synthetic": {}, "stage": "sft2"}]}, "study.yaml: models[0].stage: must be one of"),
        ({"models": [{"name": "m1", "synthetic": {}, "base": "m0"}]}, "study.yaml: models[0].base: 'm0' is not a model"),
        ({"models": [{"name": "m1", "train": "nope", "revisions": ["epoch1"]}]}, "study.yaml: models[0].train: 'nope'"),
        ({"train": [{"name": "t1", "recipe": "sft", "after": ["t0"]}]}, "study.yaml: train[0].after[0]: 't0'"),
        ({"train": [{"name": "t1", "recipe": "ppo"}]}, "study.yaml: train[0].recipe: must be one of"),
        ({"metrics": ["ece", "ecee"]}, "study.yaml: metrics[1]: unknown metric 'ecee'"),
        ({"models": [{"name": "m1", "synthetic": {}, "params": "lots"}]}, "study.yaml: models[0].params: must be a parameter count"),
        ({"models": [{"name": "bad name", "synthetic": {}}]}, "study.yaml: models[0].name: must be a name"),
        ({"resources": {"num_gpus": -1}}, "study.yaml: resources.num_gpus: must be a number >= 0"),
    ],
)
def test_bad_study_names_the_field(tmp_path: Path, patch: dict, expected: str) -> None:
    raw = {**GOOD, **patch}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(CalibenchError) as err:
        load_study(_write(tmp_path, raw))
    assert expected in str(err.value)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(CalibenchError, match=r"study.yaml:4: invalid YAML"):
        load_study(_write(tmp_path, "name: x\ntasks: [a]\nmodels: [{name: m\n  - broken: ]\n"))


def test_params_accept_suffixes(tmp_path: Path) -> None:
    raw = {**GOOD, "models": [{"name": "a", "synthetic": {}, "params": "70M"},
                              {"name": "b", "synthetic": {}, "params": "1.4B"},
                              {"name": "c", "synthetic": {}, "params": "1.0e7"}]}
    assert [m.params for m in load_study(_write(tmp_path, raw)).models] == [7e7, 1.4e9, 1e7]


def test_keys_pin_inputs_but_not_labels(tmp_path: Path) -> None:
    base = expand(load_study(_write(tmp_path, GOOD)))
    relabelled = expand(load_study(_write(tmp_path, {**GOOD, "models": [{**GOOD["models"][0], "stage": "sft",
                                                                         "params": 5}]})))
    more_methods = expand(load_study(_write(tmp_path, {**GOOD, "methods": ["choice", "continuation-sum"]})))
    other_seed = expand(load_study(_write(tmp_path, {**GOOD, "settings": {"seed": 1}})))
    other_device = expand(load_study(_write(tmp_path, {**GOOD, "settings": {"threads": 2}})))
    assert base[0].key == relabelled[0].key == other_device[0].key
    assert len({base[0].key, more_methods[0].key, other_seed[0].key}) == 3


def test_batch_size_is_in_the_unit_key(tmp_path: Path) -> None:
    """Padding to a batch's longest item changes confidences in the last bits, so batch size pins a key."""
    base = expand(load_study(_write(tmp_path, GOOD)))
    other_batch = expand(load_study(_write(tmp_path, {**GOOD, "settings": {"batch_size": 2}})))
    pickles = expand(load_study(_write(tmp_path, {**GOOD, "settings": {"allow_pickle": True}})))
    assert base[0].key != other_batch[0].key
    assert base[0].key == pickles[0].key


def test_local_model_key_follows_the_weights(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights-v1")
    raw = {**GOOD, "models": [{"name": "m", "pretrained": str(model)}]}
    resolver = lambda task, settings: "hash-of-" + task.name  # noqa: E731
    k1 = expand(load_study(_write(tmp_path, raw)), task_resolver=resolver)[0].key
    (model / "model.safetensors").write_bytes(b"weights-v2")
    k2 = expand(load_study(_write(tmp_path, raw)), task_resolver=resolver)[0].key
    assert k1 != k2


def test_cli_plan_bad_file_is_one_line_exit_2(tmp_path: Path) -> None:
    path = _write(tmp_path, {**GOOD, "models": [{"name": "m1", "synthetic": {}, "revision": [1]}]})
    proc = subprocess.run([sys.executable, "-m", "calibench.cli", "study", "plan", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "models[0].revision" in proc.stderr


def test_cli_plan_prints_units(tmp_path: Path) -> None:
    path = _write(tmp_path, {**GOOD, "tasks": ["synth-a", "synth-b"]})
    proc = subprocess.run([sys.executable, "-m", "calibench.cli", "study", "plan", str(path)],
                          capture_output=True, text=True, env={**__import__("os").environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "2 units" in proc.stdout and "m1 / synth-a" in proc.stdout and "m1 / synth-b" in proc.stdout


@pytest.mark.parametrize("preset", ["quick", "default"])
def test_lifecycle_study_plans(tmp_path: Path, preset: str) -> None:
    from calibench.study.lifecycle import write_lifecycle_study

    study = load_study(write_lifecycle_study(tmp_path, preset))
    units = expand(study)
    train = [u for u in units if u.kind == "train"]
    assert [u.spec["recipe"] for u in train][:2] == ["world", "pretrain"]
    assert {u.spec["recipe"] for u in train} == {"world", "pretrain", "sft", "reward", "rl", "dpo"}
    evals = [u for u in units if u.kind == "eval"]
    assert all(u.key != "?" and u.spec["world_key"] == train[0].key for u in evals)
    stages = {u.spec["labels"]["stage"] for u in evals}
    assert stages == {"pretrained", "sft", "rl", "dpo"}
    assert {u.spec["task"] for u in evals} == {"lab-clm", "lab-facts", "lab-mc"}


def test_method_and_metric_names_are_the_registries() -> None:
    from calibench.methods import METHODS
    from calibench.metrics import METRICS
    from calibench.study.schema import METHOD_NAMES, METRIC_NAMES

    assert tuple(METHODS) == METHOD_NAMES
    assert tuple(METRICS) == METRIC_NAMES
    assert "smooth_ece" in METRIC_NAMES and "p-true" in METHOD_NAMES


def test_methods_all_means_every_registered_method(tmp_path: Path) -> None:
    from calibench.methods import METHODS

    study = load_study(_write(tmp_path, {**GOOD, "methods": "all"}))
    assert study.tasks[0].methods == tuple(METHODS)


def test_metrics_default_and_order(tmp_path: Path) -> None:
    assert load_study(_write(tmp_path, GOOD)).metrics == ("accuracy", "ece", "ace", "sce", "brier", "nll", "auroc")
    assert load_study(_write(tmp_path, {**GOOD, "metrics": ["mce", "ece", "mce"]})).metrics == ("mce", "ece")


@pytest.mark.parametrize("device", ["mps", "cuda:x", "gpu", 3])
def test_study_device_follows_the_eval_rule(tmp_path: Path, device: object) -> None:
    from calibench.models.devices import device_problem

    problem = device_problem(device)
    assert problem is not None and problem.startswith("must be cpu, cuda, cuda:N or auto, got ")
    with pytest.raises(CalibenchError) as err:
        load_study(_write(tmp_path, {**GOOD, "settings": {"device": device}}))
    assert str(err.value) == f"study.yaml: settings.device: {problem}"


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "auto"])
def test_study_accepts_the_eval_devices(tmp_path: Path, device: str) -> None:
    from calibench.models.devices import device_problem

    assert device_problem(device) is None
    assert load_study(_write(tmp_path, {**GOOD, "settings": {"device": device}})).settings["device"] == device


def test_cli_eval_refuses_mps_like_a_study(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "calibench.cli", "eval", "--model-args", "pretrained=x",
                           "--tasks", "world-mc", "--out", str(tmp_path / "o"), "--device", "mps"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--device must be cpu, cuda, cuda:N or auto, got 'mps'" in proc.stderr


def test_unknown_field_lists_the_schema_keys(tmp_path: Path) -> None:
    with pytest.raises(CalibenchError) as err:
        load_study(_write(tmp_path, {**GOOD, "models": [{"name": "m1", "synthetic": {"skil": 0.5}}]}))
    assert str(err.value) == ("study.yaml: models[0].synthetic.skil: unknown field "
                              "(allowed: seed, sharpness, skill)")


def test_synthetic_defaults_keep_their_types(tmp_path: Path) -> None:
    """Unit keys hash these values: a default seed stays the int 0, a given one becomes a float."""
    models = load_study(_write(tmp_path, {**GOOD, "models": [{"name": "a", "synthetic": {}},
                                                             {"name": "b", "synthetic": {"seed": 2}}]})).models
    assert models[0].synthetic == {"skill": 0.6, "sharpness": 1.0, "seed": 0}
    assert isinstance(models[0].synthetic["seed"], int)
    assert models[1].synthetic["seed"] == 2.0 and isinstance(models[1].synthetic["seed"], float)
