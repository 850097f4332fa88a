"""`yolov5-dattn clone-setup` on hook files it must not or cannot simply write: both files are checked before
either is written (a non-UTF-8 file, a symbolic link out of the clone: one `error:` line, exit 2, the clone
unchanged), they are replaced atomically and together, and `--undo` finds its lines whatever line endings the
user's lines have since. Each case runs on a fresh copy of the v7.0 snapshot (../shared/yolov5-clones) where
there is one, else on a folder with the files clone-setup looks at."""
import errno
import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from conftest import REPO

from yolov5_dattn import atomic
from yolov5_dattn.cli import main
from yolov5_dattn.hosts.yolov5 import clone as clone_setup

SNAPSHOT = REPO.parent / "shared" / "yolov5-clones" / "yolov5-v7.0.tar.gz"


def tree_digest(root: Path) -> dict:
    """{relative path: sha256} of every file under `root`, links by their target (the clone's state)."""
    return {str(p.relative_to(root)): (f"-> {os.readlink(p)}" if p.is_symlink() else
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


@pytest.fixture
def clone(tmp_path) -> Path:
    """A fresh YOLOv5 clone (the v7.0 snapshot unpacked, or the files clone-setup reads)."""
    root = tmp_path / "yolov5"
    root.mkdir()
    if SNAPSHOT.is_file():
        with tarfile.open(SNAPSHOT) as tar:
            tar.extractall(root, filter="data")
    else:
        for name, text in [("train.py", "print('train')\n"), ("models/yolo.py", "# yolo\n"),
                           ("models/__init__.py", ""), ("utils/__init__.py", "# utils\nimport os\n")]:
            (root / name).parent.mkdir(exist_ok=True)
            (root / name).write_text(text)
    return root


def cli(capsys, *args) -> tuple:
    """(exit status, stdout lines, stderr lines) of `yolov5-dattn clone-setup <args>` in this process."""
    status = main(["clone-setup", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


@pytest.mark.parametrize("bad", clone_setup.HOOK_FILES)
def test_a_hook_file_that_is_not_utf8_is_refused_before_either_is_written(bad, clone, capsys):
    (clone / bad).write_bytes((clone / bad).read_bytes() + b"# caf\xe9 (latin-1)\n")
    before = tree_digest(clone)
    status, out, err = cli(capsys, clone)
    assert status == 2 and out == []
    assert len(err) == 1 and err[0].startswith(f"error: {clone / bad}: not UTF-8 text (byte 0xe9 at offset "), err
    assert tree_digest(clone) == before  # the other hook file is untouched too, and no temp file is left


@pytest.mark.parametrize("link", ["models/__init__.py", "models"])
@pytest.mark.parametrize("command", ["setup", "undo"])
def test_a_symbolic_link_is_refused_and_nothing_outside_the_clone_is_written(link, command, clone, tmp_path,
                                                                             capsys):
    if command == "undo":
        assert len(clone_setup.setup(clone)) == 2
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / Path(link).name
    (clone / link).rename(target)
    (clone / link).symlink_to(target)
    before, before_outside = tree_digest(clone), tree_digest(outside)
    status, out, err = cli(capsys, clone, *(["--undo"] if command == "undo" else []))
    assert status == 2 and out == []
    assert err == [f"error: {clone / link}: is a symbolic link (to {target}): clone-setup writes only regular "
                   f"files inside the clone; replace the link by a copy of what it points to and run again"]
    assert tree_digest(clone) == before and tree_digest(outside) == before_outside


@pytest.mark.parametrize("edit", ["a CRLF line added", "a CRLF line inserted at the top", "all lines CRLF",
                                  "an LF line added to a CRLF file"])
def test_undo_keeps_the_users_line_endings_and_removes_only_its_own_lines(edit, clone, capsys):
    hook = clone / "models" / "__init__.py"
    original = b"a = 1\r\nb = 2\r\n" if edit.endswith("CRLF file") else b"import os\nx = 1\n"
    hook.write_bytes(original)
    assert cli(capsys, clone)[0] == 0
    written = hook.read_bytes()
    if edit == "a CRLF line added":
        edited, expected = written + b"extra = 1\r\n", original + b"extra = 1\r\n"
    elif edit == "a CRLF line inserted at the top":
        edited, expected = b"# mine\r\n" + written, b"# mine\r\n" + original
    elif edit == "all lines CRLF":  # an editor, or git's autocrlf, converted the file
        edited, expected = written.replace(b"\n", b"\r\n"), original.replace(b"\n", b"\r\n")
    else:
        edited, expected = written + b"extra = 1\n", original + b"extra = 1\n"
    hook.write_bytes(edited)
    status, out, err = cli(capsys, clone, "--undo")
    assert status == 0 and err == [] and out == [f"removed the hook from {hook}",
                                                 f"removed the hook from {clone / 'utils' / '__init__.py'}"]
    assert hook.read_bytes() == expected
    assert clone_setup.is_set_up(clone) == {name: False for name in clone_setup.HOOK_FILES}


def test_undo_still_refuses_its_own_lines_edited(clone, capsys):
    assert cli(capsys, clone)[0] == 0
    hook = clone / "utils" / "__init__.py"
    hook.write_bytes(hook.read_bytes().replace(b"install(__name__)", b"install(__name__)  # mine"))
    before = tree_digest(clone)
    status, out, err = cli(capsys, clone, "--undo")
    assert status == 2 and len(err) == 1 and err[0].startswith(f"error: {hook}: the yolov5-dattn lines were edited")
    assert tree_digest(clone) == before  # models/__init__.py keeps its hook too: neither is written


def test_setup_replaces_the_files_rather_than_writing_into_them(clone, tmp_path):
    """A new file renamed over the old one: a hard link to the old file (another view of it, e.g. a backup)
    still holds the old bytes, and the file keeps its permissions."""
    hook = clone / "utils" / "__init__.py"
    hook.chmod(0o640)
    old = hook.read_bytes()
    os.link(hook, tmp_path / "old-view")
    assert clone_setup.setup(clone) == [clone / "models" / "__init__.py", hook]
    assert (tmp_path / "old-view").read_bytes() == old
    assert hook.read_bytes() == old + clone_setup.BLOCK.encode().replace(b"\n", b"\r\n" if b"\r\n" in old else b"\n")
    assert hook.stat().st_mode & 0o777 == 0o640


def test_a_full_disk_while_writing_leaves_the_clone_as_it_was(clone, monkeypatch, capsys):
    """The second file's write fails (ENOSPC): the first, already renamed into place, is put back."""
    before = tree_digest(clone)
    real, calls = atomic.replace_with, []

    def replace_with(tmp, path):
        calls.append(Path(path))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(tmp, path)

    monkeypatch.setattr(atomic, "replace_with", replace_with)
    status, out, err = cli(capsys, clone)
    assert calls[:2] == [clone / name for name in clone_setup.HOOK_FILES]
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"error: {clone / 'utils' / '__init__.py'}: cannot be written (No space left on device)")
    assert tree_digest(clone) == before  # models/__init__.py restored, no temp file left
