"""DAttention, Bottleneck_DAttention, C3_DAttention: parameters, state-dict keys, shapes, gradients."""
import pytest
import torch

from yolov5_dattn import Bottleneck_DAttention, C3_DAttention, DAttention, dattention_kwargs

# every variant the constructor can select; (name, kwargs)
VARIANTS = [
    ("dwc_pe", {}),
    ("table", {"dwc_pe": False}),
    ("fixed_pe", {"dwc_pe": False, "fixed_pe": True}),
    ("log_cpb", {"dwc_pe": False, "log_cpb": True}),
    ("no_pe", {"use_pe": False}),
    ("no_off", {"no_off": True}),
    ("unbounded_offsets", {"offset_range_factor": -1}),
    ("stride2", {"stride": 2}),
    ("stride2_table", {"stride": 2, "dwc_pe": False}),
]


def recipe_keys(pe_keys):
    """State-dict keys of the published recipe's DAttention."""
    keys = {"conv_offset.0.weight", "conv_offset.0.bias", "conv_offset.1.norm.weight", "conv_offset.1.norm.bias",
            "conv_offset.3.weight"}
    keys |= {f"proj_{p}.{t}" for p in ("q", "k", "v", "out") for t in ("weight", "bias")}
    return keys | set(pe_keys)


def test_state_dict_keys_and_shapes_match_recipe():
    C, heads, groups, q = 64, 8, 4, (6, 5)
    sd = DAttention(C, q).state_dict()
    assert set(sd) == recipe_keys({"rpe_table.weight", "rpe_table.bias"})
    gc = C // groups
    assert sd["conv_offset.0.weight"].shape == (gc, 1, 3, 3)  # depthwise, ksize 3
    assert sd["conv_offset.1.norm.weight"].shape == (gc,)
    assert sd["conv_offset.3.weight"].shape == (2, gc, 1, 1)
    for p in "qkv":
        assert sd[f"proj_{p}.weight"].shape == (C, C, 1, 1)
    assert sd["rpe_table.weight"].shape == (C, 1, 3, 3)  # depthwise 3×3 LePE

    table = DAttention(C, q, dwc_pe=False).state_dict()
    assert table["rpe_table"].shape == (heads, 2 * q[0] - 1, 2 * q[1] - 1)
    fixed = DAttention(C, q, dwc_pe=False, fixed_pe=True, stride=1).state_dict()
    assert fixed["rpe_table"].shape == (heads, q[0] * q[1], q[0] * q[1])
    cpb = DAttention(C, q, dwc_pe=False, log_cpb=True).state_dict()
    assert cpb["rpe_table.0.weight"].shape == (32, 2)
    assert cpb["rpe_table.2.weight"].shape == (heads // groups, 32)
    assert "rpe_table.2.bias" not in cpb
    assert not any(k.startswith("rpe_table") for k in DAttention(C, q, use_pe=False).state_dict())

    bottleneck = Bottleneck_DAttention(C, C, [6, 5]).state_dict()
    assert {k for k in bottleneck if k.startswith("attention.")} == {f"attention.{k}" for k in sd}


def test_weights_move_between_instances_strictly():
    a, b = DAttention(32, (4, 4), dwc_pe=False), DAttention(32, (4, 4), dwc_pe=False)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 32, 4, 4)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("name,kwargs", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_every_variant_forward_backward(name, kwargs):
    torch.manual_seed(0)
    m = DAttention(64, (8, 6), **kwargs)
    x = torch.randn(2, 64, 8, 6, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    offset_grad = m.conv_offset[3].weight.grad
    if name == "no_off":
        assert offset_grad is None and not m.conv_offset[3].weight.requires_grad
    else:
        assert offset_grad is not None and torch.isfinite(offset_grad).all() and offset_grad.abs().sum() > 0
    for p in m.parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name,kwargs", [v for v in VARIANTS if "stride2" not in v[0]], ids=lambda v: str(v))
@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (4, 1)])
def test_one_pixel_key_map_is_finite(name, kwargs, hw):
    """YOLOv5 profiles with a 32-px image: P5 is 1×1 and the recipe divided by zero there."""
    m = DAttention(32, (20, 20), **kwargs)
    x = torch.randn(1, 32, *hw, requires_grad=True)
    y = m(x)
    y.sum().backward()
    assert y.shape == x.shape and torch.isfinite(y).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name,kwargs", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_runs_at_sizes_other_than_declared(name, kwargs):
    """YOLOv5 builds at 256 px (P5 8×8) whatever the declared 20×20; rect validation gives 20×21."""
    m = DAttention(32, (20, 20), **kwargs).eval()
    for hw in [(8, 8), (20, 21), (10, 10)]:
        y = m(torch.randn(1, 32, *hw))
        assert y.shape == (1, 32, *hw) and torch.isfinite(y).all()


def test_offsets_are_bounded_by_range_factor():
    m = DAttention(32, (8, 8), offset_range_factor=2)
    with torch.no_grad():
        m.conv_offset[3].weight.fill_(10.0)  # saturate tanh
        pos, ref = m.sampling_positions(m.proj_q(torch.randn(1, 32, 8, 8)))
    shift = (pos - ref).abs()
    cell = 1.0 / (8 - 1)
    assert shift.max() <= 2 * cell + 1e-6 and shift.max() > 1.9 * cell
    assert ref.shape == (4, 8, 8, 2)  # (B·groups, Hk, Wk, (y, x))


def test_unbounded_offsets_are_clamped_to_the_map():
    m = DAttention(32, (8, 8), offset_range_factor=-1)
    with torch.no_grad():
        m.conv_offset[3].weight.fill_(50.0)
        pos, _ = m.sampling_positions(m.proj_q(torch.randn(1, 32, 8, 8)))
    assert pos.min() >= -1.0 and pos.max() <= 1.0 and (pos.abs() == 1.0).any()


def test_zero_offsets_sample_the_reference_grid_exactly():
    """With offsets forced to zero, stride 1 keys are the input read at the reference points."""
    m = DAttention(16, (5, 5), n_heads=4, n_groups=2)
    with torch.no_grad():
        m.conv_offset[3].weight.zero_()
        x = torch.randn(1, 16, 5, 5)
        pos, ref = m.sampling_positions(m.proj_q(x))
    torch.testing.assert_close(pos, ref)
    # reference points are DAT's half-pixel-shifted cell centres, normalised with align_corners=True
    torch.testing.assert_close(ref[0, :, 0, 0], torch.linspace(0.5, 4.5, 5) / 4 * 2 - 1)  # y down rows
    torch.testing.assert_close(ref[0, 0, :, 1], torch.linspace(0.5, 4.5, 5) / 4 * 2 - 1)  # x along columns


def test_bad_channel_split_is_one_clear_error():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        DAttention(60, (4, 4), n_heads=8)


def test_fmapsize_forms():
    assert dattention_kwargs([20, 20]) == {"q_size": [20, 20]}
    assert dattention_kwargs({"q_size": [4, 4], "fixed_pe": True}) == {"q_size": [4, 4], "fixed_pe": True}
    assert dattention_kwargs([{"q_size": [4, 4]}]) == {"q_size": [4, 4]}
    with pytest.raises(ValueError, match="q_size"):
        dattention_kwargs({"fixed_pe": True})
    with pytest.raises(ValueError, match="fmapsize"):
        dattention_kwargs(None)


def test_c3_dattention_structure():
    m = C3_DAttention(64, 128, n=2, fmapsize={"q_size": [4, 4], "dwc_pe": False})
    assert len(m.m) == 2 and all(isinstance(b, Bottleneck_DAttention) for b in m.m)
    assert all(b.attention.nc == 64 and b.attention.pe_kind == "table" for b in m.m)
    assert all(not b.add for b in m.m)  # shortcut defaults to False, as the recipe
    assert m(torch.randn(1, 64, 4, 4)).shape == (1, 128, 4, 4)
    assert Bottleneck_DAttention(64, 64, [4, 4], shortcut=True).add
