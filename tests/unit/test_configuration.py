"""Configuration is read once, at the edge, and every variable is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.secrets import SECRET_NAMES
from common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def readme_table_names() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section))


def test_every_setting_is_in_the_readme_configuration_table():
    documented = readme_table_names()
    missing = {f.alias for f in Settings.model_fields.values()} - documented
    assert not missing, f"undocumented settings: {sorted(missing)}"


def test_every_secret_is_named_in_the_readme():
    documented = readme_table_names()
    assert set(SECRET_NAMES) <= documented, sorted(set(SECRET_NAMES) - documented)


def test_only_the_entry_points_read_the_environment():
    offenders = [str(p.relative_to(ROOT)) for folder in ("common", "functions") for p in (ROOT / folder).rglob("*.py")
                 if re.search(r"os\.environ|os\.getenv", p.read_text())]
    assert offenders == []


@pytest.mark.parametrize("api_base", ["https://api-t1.fyers.in/api/v3", "https://api.fyers.in/api/v3/",
                                      "https://API-T1.FYERS.IN/api/v3"])
def test_a_shifted_clock_is_refused_with_any_real_fyers_host(api_base):
    from common.errors import ConfigError
    from common.settings import load_settings

    with pytest.raises(ConfigError, match="CLOCK_SHIFT_SECONDS"):
        load_settings({"CLOCK_SHIFT_SECONDS": "3600", "FYERS_API_BASE": api_base})


def test_a_shifted_clock_runs_against_a_simulator():
    from common.settings import load_settings

    settings = load_settings({"CLOCK_SHIFT_SECONDS": "3600", "FYERS_API_BASE": "http://127.0.0.1:9000/api/v3"})
    assert settings.clock_shift_seconds == 3600
