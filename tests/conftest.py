from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test with a message when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: ../shared/data/{'/'.join(parts)}")
    return p


def run_cli(capsys, *args):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from splatdistill.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    """A user error: exit code 2, exactly one line on stderr, no traceback, naming ``needles``."""
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Processed-image caches go to a per-session temporary folder, never the user's home."""
    monkeypatch.setenv("SPLATDISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def demo_scene_dir(tmp_path_factory):
    """A small built-in demo dataset shared by the tests of one session."""
    from splatdistill.data.demo_scene import make_demo_scene

    out = tmp_path_factory.getbasetemp() / "demo_scene"
    return make_demo_scene(out, resolution=64, train_views=24, test_views=6, seed=0)
