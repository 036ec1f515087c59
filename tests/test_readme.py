"""The README's Python snippet runs exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_snippet():
    snips = _snippets()
    assert snips and "snacs.prune" in snips[0] and "snacs.load" in snips[0]
    assert len(snips[0].strip().splitlines()) <= 14


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_readme_python_snippet_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_snippets()[0], "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "weights pruned" in out and "torch.Size([1, 10])" in out
    assert (tmp_path / "vgg16-slim.pt").is_file()


def test_readme_command_lines_parse():
    """Every `snacs …` line of the README's shell blocks is accepted by the CLI's parser (flags
    renamed or removed would make a user's first copy-paste fail)."""
    import shlex

    from snacs.cli import build_parser

    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = [ln.split("#")[0].strip() for b in blocks for ln in b.splitlines()]
    lines = [ln for ln in lines if ln.startswith("snacs ")]
    assert len(lines) >= 8
    parser = build_parser()
    for ln in lines:
        args = parser.parse_args(shlex.split(ln)[1:])
        assert callable(args.func), ln
    assert any("--target-metric latency" in ln for ln in lines)
