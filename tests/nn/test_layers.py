"""The layers of the package: the math (`yolov5_dattn.nn`) stands alone, without any detection framework."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "yolov5_dattn"

# an interpreter in which yolov5 and ultralytics cannot be imported, whatever is installed
BLOCK_HOSTS = """
import importlib.abc, sys
class NoHosts(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('yolov5', 'ultralytics', 'models', 'utils'):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, NoHosts())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_HOSTS + code], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)


def test_dattention_builds_and_runs_without_any_host():
    result = _run("""
import torch
from yolov5_dattn.nn import DAttention, dattention_kwargs
from yolov5_dattn.nn.reference import ReferenceDAttention
torch.manual_seed(0)
m = DAttention(64, **dattention_kwargs([10, 12])).eval()
x = torch.randn(2, 64, 10, 12, requires_grad=True)
y = m(x)
y.sum().backward()
ref = ReferenceDAttention(64, q_size=[10, 12]).eval()
ref.load_state_dict(m.state_dict())
print(tuple(y.shape), tuple(x.grad.shape), float((ref(x) - y).abs().max()))
print(sorted(n for n in sys.modules if n.split('.')[0] in ('yolov5', 'ultralytics')))
""")
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip().splitlines()
    assert out[-2].startswith("(2, 64, 10, 12) (2, 64, 10, 12) ")
    assert float(out[-2].split()[-1]) < 1e-4
    assert out[-1] == "[]"


def test_package_import_without_yolov5_keeps_the_math_and_names_what_is_missing():
    result = _run("""
import yolov5_dattn
print(yolov5_dattn.DAttention.__module__)
try:
    yolov5_dattn.C3_DAttention
except ModuleNotFoundError as e:
    print('missing', e.name)
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["yolov5_dattn.nn.dattention", "missing", "yolov5"]


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")


@pytest.mark.parametrize("path", sorted((PACKAGE / "nn").glob("*.py")), ids=lambda p: p.name)
def test_the_math_imports_no_host_and_no_other_layer(path):
    allowed_roots = {"torch", "einops", "numpy", "yolov5_dattn"} | set(sys.stdlib_module_names)
    for name in _imports(path):
        if name.startswith("."):
            continue  # within nn/
        assert name.split(".")[0] in allowed_roots, f"{path.name} imports {name}"
        if name.startswith("yolov5_dattn"):
            assert name.startswith("yolov5_dattn.nn"), f"{path.name} imports {name} from another layer"
