"""The README's Python blocks run, as written, one after the other, followed by those
of the API tour (docs/tour.md, which continues the README's example), in a fresh
directory (so their examples cannot rot)."""

import pathlib
import re
import subprocess
import sys


README = pathlib.Path(__file__).parents[1] / "README.md"
TOUR = pathlib.Path(__file__).parents[1] / "docs" / "tour.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_blocks_run(tmp_path):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 1
    blocks += python_blocks(TOUR.read_text())
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(blocks))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "a" / "zarr.json").exists()
    assert (tmp_path / "runs" / "a.nc").exists()
