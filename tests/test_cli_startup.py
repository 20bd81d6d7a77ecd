"""The CLI must start fast: heavy libraries load only inside the commands that need them."""

import json
import subprocess
import sys

HEAVY = ["torch", "open_clip", "faiss", "sklearn", "altair", "transformers", "timm", "pytorch_grad_cam", "cv2"]


def _output_and_modules_after(code: str) -> tuple[str, set[str]]:
    """Runs `code` in a fresh interpreter: (what it printed, the modules loaded by then)."""
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    *printed, modules = out.stdout.strip().split("\n")
    return "\n".join(printed), set(json.loads(modules))


def test_cli_import_pulls_in_no_heavy_library():
    _, loaded = _output_and_modules_after("import embedstore.cli")
    assert not [m for m in HEAVY if m in loaded], [m for m in HEAVY if m in loaded]


def test_help_lists_commands_and_exits_zero():
    out = subprocess.run([sys.executable, "-m", "embedstore", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "inspect" in out.stdout


def test_help_of_every_command_exits_zero_and_loads_no_heavy_library():
    from embedstore.cli import app
    import typer.main

    names = list(typer.main.get_command(app).commands)
    assert names, "no commands registered"
    code = (
        "import contextlib, io, json\n"
        "from embedstore.cli import main\n"
        "helps = {}\n"
        f"for name in {names!r}:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            main([name, '--help'])\n"
        "            code = 'returned without exiting'\n"
        "        except SystemExit as e:\n"
        "            code = e.code\n"
        "    helps[name] = [code, out.getvalue()]\n"
        "print(json.dumps(helps))\n"
    )
    out, loaded = _output_and_modules_after(code)
    helps = json.loads(out)
    assert {name: code for name, (code, _) in helps.items()} == {name: 0 for name in names}
    for name, (_, text) in helps.items():
        assert f"Usage: embedstore {name}" in text and "--help" in text, (name, text)
    assert not [m for m in HEAVY if m in loaded]
