"""Runs the widget's JavaScript unit tests (`node --test tests/js/`) as part of the Python suite."""
import shutil
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (needed for the widget's tests)")
def test_widget_logic_node_tests_pass():
    r = subprocess.run(["node", "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "# fail 0" in r.stdout and "# pass 0" not in r.stdout
