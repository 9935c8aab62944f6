"""`make demo`'s bearer tokens: created on a fresh clone, kept when good, renewed when short,
and not a word on stderr (the token loop of the Makefile's demo recipe, run by bash)."""

import re
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOKENS = ("admin_token", "feedback_token")


def _token_loop(demo: Path) -> str:
    """The recipe's `for t in ...; done` lines as the shell receives them."""
    recipe = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1]
    loop = re.search(r"^\tfor t in .*?^\tdone$", recipe, re.M | re.S)
    assert loop, "the demo recipe has no token loop"
    text = loop.group(0).replace("\\\n", "\n").replace("$$", "$")
    return text.replace("$(DEMO)", str(demo)).replace("$(BIN)", str(Path(sys.executable).parent))


def _run(demo: Path) -> subprocess.CompletedProcess:
    script = _token_loop(demo)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def test_a_fresh_clone_gets_tokens_without_messages(tmp_path):
    demo = tmp_path / ".demo"
    demo.mkdir()
    run = _run(demo)
    assert (run.returncode, run.stderr) == (0, "")
    for name in TOKENS:
        token = (demo / name).read_text().strip()
        assert len(token) >= 32 and stat.S_IMODE((demo / name).stat().st_mode) == 0o600
    kept = {name: (demo / name).read_text() for name in TOKENS}
    (demo / "feedback_token").write_text("short\n")  # too short: renewed, the other kept
    run = _run(demo)
    assert (run.returncode, run.stderr) == (0, "")
    assert (demo / "admin_token").read_text() == kept["admin_token"]
    assert len((demo / "feedback_token").read_text().strip()) >= 32
