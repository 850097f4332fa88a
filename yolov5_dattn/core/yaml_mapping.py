"""A YAML file that must hold a mapping (a data YAML), read safely, with one-line errors in the host's own words."""
from pathlib import Path
from typing import Type, Union

from yolov5_dattn.errors import UserError

__all__ = ["read_mapping"]


def read_mapping(path: Union[str, Path], label: str, needs: str, error: Type[UserError] = UserError) -> dict:
    """The YAML at `path` as a dict, read with `yaml.safe_load` (no tag constructs an object, nothing runs).

    Args:
        path: the file; label: how the host's user named it ('--data x.yaml', 'data=x.yaml'); needs: what such a
        file must hold, for the message ('a dataset YAML needs path, train, val and names keys'); error: the
        UserError subclass to raise.
    Raises `error` (one line starting with `label`) for invalid YAML (with its line), an empty file or a
    non-mapping."""
    import yaml
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8", errors="ignore"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise error(f"{label} is not valid YAML{where}: fix its syntax") from None
    if not isinstance(loaded, dict):
        what = "empty" if loaded is None else f"a {type(loaded).__name__}, not a mapping"
        raise error(f"{label} is {what}: {needs}")
    return loaded
