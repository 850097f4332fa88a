"""The offline stand-ins both hosts install (`yolov5_dattn.core.offline`): fonts from disk, no pip."""
from pathlib import Path

from yolov5_dattn.core.offline import DEFAULT_FONT, local_font, never_installs


def test_a_font_given_as_a_file_or_in_the_config_dir_is_used(tmp_path):
    given, config = tmp_path / "mine.ttf", tmp_path / "config"
    given.write_bytes(b"font")
    config.mkdir()
    (config / "Arial.ttf").write_bytes(b"font")
    assert local_font(given, config) == given
    assert local_font("Arial.ttf", config) == config / "Arial.ttf"
    assert local_font(str(tmp_path / "elsewhere" / "Arial.ttf"), config) == config / "Arial.ttf"


def test_a_font_nowhere_on_disk_falls_back_to_a_real_font_file(tmp_path):
    path = local_font("surely-no-such-font-Xq9.ttf", tmp_path)
    assert path is not None and path.name == DEFAULT_FONT and path.is_file()


def test_the_requirement_check_is_the_hosts_without_pip():
    calls = []

    def host_check(requirements=Path("requirements.txt"), exclude=(), install=True, cmds="", constrain=()):
        calls.append((requirements, exclude, install, cmds, constrain))
        return False  # something is missing

    check = never_installs(host_check)
    assert check(("onnx>=1.12",), cmds="-U", constrain=("numpy<3",)) is False
    assert check() is False
    assert calls == [(("onnx>=1.12",), (), False, "-U", ("numpy<3",)),
                     (Path("requirements.txt"), (), False, "", ())]


def test_without_a_host_check_nothing_is_checked():
    assert never_installs()(("surely-not-installed-package>=99",), install=True) is True
