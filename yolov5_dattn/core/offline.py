"""Offline stand-ins for the host helpers that reach the network: fonts come from disk, requirement checks never
run pip. Both host adapters install these in place of their host's `check_font` / `check_pil_font` /
`check_requirements` (the offline policy of our commands).
"""
from pathlib import Path
from typing import Callable, Optional, Union

__all__ = ["DEFAULT_FONT", "local_font", "never_installs"]

DEFAULT_FONT = "DejaVuSans.ttf"  # matplotlib ships it (Latin, Greek, Cyrillic): on disk wherever matplotlib is


def _matplotlib_font(name: str) -> Optional[Path]:
    """A font file matplotlib knows whose path contains `name`, else its own DejaVuSans; None without matplotlib."""
    try:
        import matplotlib
        from matplotlib import font_manager
    except ImportError:
        return None
    matches = [Path(f.fname) for f in font_manager.fontManager.ttflist if name in f.fname]
    matches.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / DEFAULT_FONT)
    return next((p for p in matches if p.is_file()), None)


def local_font(font: Union[str, Path] = "Arial.ttf", config_dir: Optional[Path] = None) -> Optional[Path]:
    """A TrueType font for `font` that is on disk already; never downloads.

    In order: `font` itself when it is a file, then its name in the host's `config_dir` (where the host would
    download it), then a font of that name matplotlib knows, then matplotlib's DejaVuSans. None only without
    matplotlib (a host then draws with PIL's default font).
    """
    for candidate in (Path(font), None if config_dir is None else Path(config_dir) / Path(font).name):
        if candidate is not None and candidate.is_file():
            return candidate
    return _matplotlib_font(Path(font).name)


def never_installs(host_check: Optional[Callable] = None) -> Callable:
    """A `check_requirements` that never runs pip.

    With the host's own check (`host_check`), it checks as the host does with `install=False` (reports what is
    missing, returns the host's answer); without one, it checks nothing and answers True (the dependencies are
    the ones declared for our package).
    """
    def check_requirements(requirements=None, exclude=(), install=True, cmds="", **kwargs):
        """The host's requirement check without `pip install` (offline, reproducible runs)."""
        if host_check is None:
            return True
        given = () if requirements is None else (requirements,)
        return host_check(*given, exclude=exclude, install=False, cmds=cmds, **kwargs)

    return check_requirements
