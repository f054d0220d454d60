"""A study's ``settings.method_options``: checked like MethodOptions, absent from settings when not given."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from calibench.errors import CalibenchError
from calibench.study.config import load_study
from calibench.study.units import expand

GOOD = {"name": "t", "methods": ["consistency"], "tasks": ["synth-a"],
        "models": [{"name": "m1", "synthetic": {"skill": 0.6, "sharpness": 1.2}}]}


def _write(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(obj))
    return path


def test_method_options_are_validated_and_key_the_units(tmp_path: Path) -> None:
    plain = load_study(_write(tmp_path, GOOD))
    assert "method_options" not in plain.settings  # unset: the settings (and unit keys) are as before
    given = load_study(_write(tmp_path, {**GOOD, "settings": {"method_options": {"n_samples": 4, "temperature": 0.5}}}))
    assert given.settings["method_options"] == {"n_samples": 4, "temperature": 0.5}
    assert expand(plain)[0].key != expand(given)[0].key  # other samples, other unit
    for bad, msg in (({"n_samples": 0}, "n_samples must be >= 1"), ({"beam": 2}, "unknown option"),
                     ({"verbal_scale": "stars"}, "verbal_scale must be one of")):
        with pytest.raises(CalibenchError, match=msg):
            load_study(_write(tmp_path, {**GOOD, "settings": {"method_options": bad}}))
