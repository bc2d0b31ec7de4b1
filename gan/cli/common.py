"""What every `gan` command shares: the console, the one-line error exit, `Settings` loading.

What it is not: no commands (`gan.cli.main`, `gan.cli.apps`), no library logic.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from gan.core.settings import Settings, SettingsError


def stdout() -> Console:
    # soft_wrap: messages stay one line each (greppable), whatever the terminal width.
    return Console(highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: <message>` in red on stderr; return the Exit to raise (code 2: bad usage)."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def load_settings() -> Settings:
    """`Settings.load()`, or a clear one-line error naming the variable and exit code 2."""
    try:
        return Settings.load()
    except SettingsError as e:
        raise fail(str(e), code=2) from None


def check_device(device: str, option: str = "--device") -> None:
    """A CUDA device asked for on a machine without one: one line and exit 2, not a traceback
    from deep inside torch."""
    if not device.startswith("cuda"):
        return
    import torch  # lazy: `gan --help` and CPU-only commands do not pay torch's import

    if not torch.cuda.is_available():
        raise fail(f"{option} {device}: no CUDA device is available on this machine (torch "
                   f"{torch.__version__}); use --device cpu", code=2)
    index = device.partition(":")[2]
    if index.isdigit() and int(index) >= torch.cuda.device_count():
        raise fail(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA "
                   "device(s)", code=2)
