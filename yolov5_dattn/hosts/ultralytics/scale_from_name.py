"""A model YAML builds from any folder: ultralytics drops the scale letter from the file name only.

ultralytics reads a model's scale from its file name (`yolo11n-c3k2-dattn.yaml` is `yolo11-c3k2-dattn.yaml` at
scale n). To find the scale-less file, `tasks.yaml_model_load` runs `re.sub(r"(\\d+)([nslmx])(.+)?$", ...)` on
the whole path, and the first digit followed by n, s, m, l or x anywhere in it is taken for the scale: in
`/tmp/tmp.ab3mcd/yolo11n-c3k2-dattn.yaml` the `3m` of the folder, so the file looked up is
`/tmp/tmp.ab3cd/yolo11n-c3k2-dattn.yaml` and the build fails with "does not exist" (the same for `proj2s/`,
`/data/v5m/`). About one random folder name in nine holds such a pair.

The fix edits that one line of `yaml_model_load` (`patching.replace_line`: the host's file and line numbers are
kept) so that the substitution runs on the file name and the folder is kept as it is. The scale itself is read
by `guess_model_scale` from the file's stem already. The change is part of the `registry` step of `install()`:
models must build, whether or not our policy is in use.
"""
from yolov5_dattn import patching

__all__ = ["WHY", "apply"]

WHY = ("ultralytics' yaml_model_load drops the scale letter from the whole path, so a folder such as tmp.ab3mcd "
       "or proj2s is mangled and the model YAML is not found")

# the line of tasks.yaml_model_load (ultralytics 8.x) and the same substitution on the file name only
_WHOLE_PATH = 'unified_path = re.sub(r"(\\d+)([nslmx])(.+)?$", r"\\1\\3", str(path))'
_NAME_ONLY = 'unified_path = path.with_name(re.sub(r"(\\d+)([nslmx])(.+)?$", r"\\1\\3", path.name))'


def apply() -> bool:
    """Make `tasks.yaml_model_load` (and the modules that imported it by name) drop the scale letter from the file
    name only (idempotent). Returns False when this ultralytics' yaml_model_load has no such line, and nothing
    is changed."""
    import ultralytics.engine.model
    import ultralytics.nn
    from ultralytics.nn import tasks
    original = tasks.yaml_model_load
    if patching.is_patched(tasks, "yaml_model_load", WHY):
        return True
    fixed = patching.replace_line(original, _WHOLE_PATH, _NAME_ONLY)
    if fixed is None:
        return False
    with patching.applying("registry"):
        # also where ultralytics imported it by name: Model._new builds every YAML model through engine.model's
        patching.patch(tasks, "yaml_model_load", fixed, also=[ultralytics.engine.model, ultralytics.nn], why=WHY)
    return True
