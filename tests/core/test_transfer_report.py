"""The one transfer report both hosts print (`yolov5_dattn.core.transfer_report`), on plain torch modules."""
import torch
from torch import nn

from yolov5_dattn.core.transfer_report import (attention_modules, by_layer, format_table, report_text, summarise,
                                               verdict)
from yolov5_dattn.nn.dattention import DAttention


class Net(nn.Module):
    """A host-like model: `model` is an nn.Sequential of layers, one holding a DAttention, one without tensors."""

    def __init__(self, head_out: int = 4):
        super().__init__()
        attention = nn.Module()
        attention.attention = DAttention(8, q_size=[4, 4], n_heads=2, n_groups=1)
        self.model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Identity(), attention,
                                   nn.Conv2d(8, head_out, 1))


def _intersect(checkpoint, state, exclude=()):
    """What both hosts' `intersect_dicts` keep: same name and shape, not excluded."""
    return {k: v for k, v in checkpoint.items()
            if k in state and v.shape == state[k].shape and not any(x in k for x in exclude)}


def _baseline_checkpoint(net: nn.Module, head_out: int = 4) -> dict:
    """A checkpoint without the attention (a stock model), its head for `head_out` outputs."""
    state = {k: v.clone() for k, v in net.state_dict().items() if ".attention." not in k}
    state["model.4.weight"] = torch.zeros(head_out, 8, 1, 1)
    state["model.4.bias"] = torch.zeros(head_out)
    return state


def test_a_baseline_checkpoint_fills_all_but_the_attention():
    net = Net()
    state, checkpoint = net.state_dict(), _baseline_checkpoint(net)
    report = summarise(checkpoint, state, _intersect(checkpoint, state),
                       attention_prefixes=attention_modules(net))
    attention_keys = [k for k in state if k.startswith("model.3.attention.")]
    assert attention_modules(net) == ["model.3.attention"]
    assert sorted(report.keys["attention"]) == sorted(attention_keys)
    assert len(report.keys["transferred"]) == len(state) - len(attention_keys)
    assert report.total == len(state)
    assert report.values["attention"] == sum(state[k].numel() for k in attention_keys)
    assert report.unused == 0 and not report.checkpoint_attention
    line, warning = verdict(report)
    assert line == f"  non-attention part: fully transferred ({len(state) - len(attention_keys)}/" \
                   f"{len(state) - len(attention_keys)} tensors)"
    assert warning is None
    table = format_table(report, "base.pt")
    assert table.splitlines()[0] == "Transfer from base.pt:"
    assert "fresh DAttention: model.3.attention" in table
    assert any(line.startswith("  layers 0-1, 4: all transferred") for line in by_layer(report, net, checkpoint,
                                                                                          state))


def test_a_head_for_another_class_count_is_named_with_its_shapes():
    net = Net(head_out=4)
    state, checkpoint = net.state_dict(), _baseline_checkpoint(net, head_out=6)
    report = summarise(checkpoint, state, _intersect(checkpoint, state),
                       attention_prefixes=attention_modules(net))
    assert report.keys["shape"] == ["model.4.weight", "model.4.bias"]
    lines = by_layer(report, net, checkpoint, state)
    assert "  layer 4 (Conv2d): 0 transferred" not in lines  # nothing transferred and no attention: grouped
    assert "  layers 4: nothing transferred (2 tensors fresh)" in lines
    text, warning = report_text(report, net, checkpoint, state, "base.pt", attention_modules(net))
    assert "2 start fresh (2 shape differs)" in text
    assert warning is None  # the head is a small share of the values


def test_a_checkpoint_of_another_family_warns_and_counters_do_not_count():
    net = Net()
    state = net.state_dict()
    checkpoint = {"model.1.num_batches_tracked": torch.tensor(5), "other.weight": torch.zeros(3)}
    report = summarise(checkpoint, state, _intersect(checkpoint, state), attention_prefixes=attention_modules(net))
    assert report.keys["transferred"] == ["model.1.num_batches_tracked"]
    assert report.unused == 1
    _, warning = verdict(report)
    assert warning.startswith("nothing transferred")


def test_under_half_of_the_values_transferred_warns_with_the_share():
    net = Net()
    state = net.state_dict()
    checkpoint = {k: v for k, v in state.items() if k.startswith("model.1.")}  # BatchNorm only: 24 of 96 values
    report = summarise(checkpoint, state, _intersect(checkpoint, state), attention_prefixes=attention_modules(net))
    _, warning = verdict(report)
    moved = sum(state[k].numel() for k in report.keys["transferred"])
    others = moved + sum(report.values[r] for r in ("shape", "excluded", "missing"))
    assert warning.startswith(f"only {moved / others:.0%} of the non-attention values transferred")


def test_a_checkpoint_with_the_attention_counts_it_apart():
    net = Net()
    state = net.state_dict()
    checkpoint = {k: v.clone() for k, v in state.items()}
    report = summarise(checkpoint, state, _intersect(checkpoint, state), attention_prefixes=attention_modules(net))
    assert report.checkpoint_attention and not report.keys["attention"]
    text, _ = report_text(report, net, checkpoint, state, "dattn.pt", attention_modules(net))
    n_attention = sum(1 for k in state if k.startswith("model.3.attention."))
    assert f"  DAttention: {n_attention} tensors transferred (the checkpoint has the attention)" in text
    assert f"fully transferred ({len(state) - n_attention}/{len(state) - n_attention} tensors)" in text


def test_without_module_names_the_naming_rule_finds_the_attention_and_exclusions():
    net = Net()
    state = net.state_dict()
    checkpoint = {k: v for k, v in state.items() if ".attention." not in k}
    report = summarise(checkpoint, state, _intersect(checkpoint, state, exclude=("model.4.",)), exclude=("model.4.",))
    assert sorted(report.keys["excluded"]) == ["model.4.bias", "model.4.weight"]
    assert report.attention_modules == ["model.3.attention"]
