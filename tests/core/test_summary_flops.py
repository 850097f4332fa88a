"""The GFLOPs both hosts' model summaries print (`yolov5_dattn.core.summary_flops`), on small plain models."""
import pytest
import torch
from torch import nn

from yolov5_dattn.core.summary_flops import summary_gflops
from yolov5_dattn.nn.dattention import DAttention


def test_a_convolution_counts_as_thop_does_at_the_padded_size():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False))
    counted = summary_gflops(model, [60, 90], stride=32)
    assert counted.size == [64, 96]
    assert counted.gflops == pytest.approx(2 * 3 * 8 * 9 * 64 * 96 / 1e9)  # thop: 2 x MACs
    assert counted.missed_gflops == 0


def test_the_attention_thop_misses_is_counted_and_grows_with_the_map():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 1), DAttention(16, q_size=[8, 8], n_heads=2, n_groups=1))
    small = summary_gflops(model, 8, channels=3)
    large = summary_gflops(model, 16, channels=3, device="cpu")
    assert small.size == [8, 8] and large.size == [16, 16]
    assert 0 < small.missed_gflops < small.gflops
    # the attention's matmuls grow with HW x Ns, faster than the 4x of the pixel count
    assert large.missed_gflops > 4 * small.missed_gflops
