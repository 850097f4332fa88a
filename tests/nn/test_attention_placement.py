"""The placement mixin both hosts' Bottleneck_DAttention use, on a plain torch bottleneck (no host)."""
import pickle

import pytest
import torch
from torch import nn

from yolov5_dattn.nn.attention_placement import AttentionPlacement


class Bottleneck(nn.Module):
    """A host's bottleneck as the mixin sees it: cv1, cv2 and `add`."""

    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.cv1, self.cv2, self.add = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1), shortcut

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class Placed(AttentionPlacement, Bottleneck):
    def __init__(self, c: int, fmapsize, shortcut: bool = True, layerscale=None):
        super().__init__(c, shortcut)
        self.place_attention(c, fmapsize, layerscale)


def _pair(**kwargs):
    torch.manual_seed(0)
    block = Placed(16, [6, 6], **kwargs).eval()
    parent = Bottleneck(16, kwargs.get("shortcut", True)).eval()
    parent.load_state_dict({k: v for k, v in block.state_dict().items() if k.startswith(("cv1.", "cv2."))})
    return block, parent


def test_the_recipe_sends_the_conv_output_through_the_attention():
    block, _ = _pair(shortcut=False)
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        assert torch.equal(block(x), block.attention(block.cv2(block.cv1(x))))
    assert not any(k.startswith("layer_scale.") for k in block.state_dict())


@pytest.mark.parametrize("shortcut", [True, False])
def test_layerscale_zero_starts_as_the_parent_bottleneck(shortcut):
    block, parent = _pair(shortcut=shortcut, layerscale=0.0)
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        assert torch.equal(block(x), parent(x))
        block.layer_scale.gamma.fill_(0.5)
        z = block.cv2(block.cv1(x))
        expected = z + 0.5 * block.attention(z)
        assert torch.allclose(block(x), x + expected if shortcut else expected, atol=1e-6)
    assert block.state_dict()["layer_scale.gamma"].shape == (16,)


def test_a_layerscale_key_in_the_mapping_wins_and_bad_inits_are_refused():
    block = Placed(16, {"q_size": [6, 6], "layerscale": 0.25}, layerscale=None)
    assert torch.equal(block.layer_scale.gamma, torch.full((16,), 0.25))
    with pytest.raises(ValueError, match="layerscale must be a finite number"):
        Placed(16, [6, 6], layerscale=float("nan"))


def test_a_pickled_block_without_layer_scale_runs_the_recipe():
    block, _ = _pair(shortcut=True)
    restored = pickle.loads(pickle.dumps(block))
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        assert torch.equal(restored(x), x + block.attention(block.cv2(block.cv1(x))))
