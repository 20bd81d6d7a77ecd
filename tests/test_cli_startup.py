"""The CLI must start fast: heavy libraries load only inside the commands that need them."""

import json
import subprocess
import sys

HEAVY = ["torch", "open_clip", "faiss", "sklearn", "altair", "transformers", "timm", "pytorch_grad_cam", "cv2"]


def _modules_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_cli_import_pulls_in_no_heavy_library():
    loaded = _modules_after("import embedstore.cli")
    assert not [m for m in HEAVY if m in loaded], [m for m in HEAVY if m in loaded]


def test_help_lists_commands_and_exits_zero():
    out = subprocess.run([sys.executable, "-m", "embedstore", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "inspect" in out.stdout


def test_help_of_every_command_loads_no_heavy_library():
    from embedstore.cli import app
    import typer.main

    names = list(typer.main.get_command(app).commands)
    assert names, "no commands registered"
    code = (
        "import contextlib, io\n"
        "from embedstore.cli import main\n"
        f"for name in {names!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main([name, '--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
    )
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded]
