"""The one kernel switch (yolov5_dattn/nn/kernel_switch.py): each choice decides what DAttention runs, every
choice computes the same output, the environment variable is read, and a bad name is refused."""
import os
import subprocess
import sys

import pytest
import torch

from kernel_choice import chosen_kernels
from yolov5_dattn.nn import (DAttention, attention_kernel, attention_kernel_set_to, cpu_attention,
                             set_attention_kernel)
from yolov5_dattn.nn.kernel_switch import CHOICES, ENV


def run(module, x):
    with chosen_kernels() as chosen, torch.no_grad():
        y = module(x)
    return set(chosen), y


@pytest.fixture
def module_and_input():
    torch.manual_seed(0)
    module = DAttention(64, (8, 8), n_heads=4, n_groups=2).eval()  # 16 channels per head: a width ours serves
    return module, torch.randn(2, 64, 8, 8)


@pytest.mark.parametrize("choice", CHOICES)
def test_each_choice_decides_the_kernel_and_all_agree(choice, module_and_input):
    module, x = module_and_input
    with attention_kernel_set_to("explicit"):
        _, expected = run(module, x)
    with attention_kernel_set_to(choice):
        chosen, y = run(module, x)
    ours = "ours" if cpu_attention.library() is not None else "sdpa"
    assert chosen == {"auto": {ours}, "ours": {ours}, "sdpa": {"sdpa"}, "explicit": {"explicit"}}[choice]
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)


def test_record_still_gets_the_weights_whatever_the_switch(module_and_input):
    module, x = module_and_input
    module.record = True
    with attention_kernel_set_to("sdpa"):
        chosen, _ = run(module, x)
    assert chosen == {"explicit"} and module.recorded["attn"].shape == (2, 4, 64, 64)


def test_the_block_restores_the_previous_choice():
    before = attention_kernel()
    with pytest.raises(ZeroDivisionError), attention_kernel_set_to("explicit"):
        assert attention_kernel() == "explicit"
        1 / 0
    assert attention_kernel() == before


def test_a_bad_name_is_refused_and_changes_nothing():
    before = attention_kernel()
    with pytest.raises(ValueError, match="choose one of auto, ours, sdpa, explicit"):
        set_attention_kernel("flash")
    assert attention_kernel() == before


@pytest.mark.parametrize("env,expected", [({ENV: "explicit"}, "explicit"), ({ENV: "SDPA"}, "sdpa"),
                                          ({"YOLOV5_DATTN_CPU_KERNEL": "0"}, "sdpa"), ({}, "auto")])
def test_the_environment_sets_the_choice_in_a_fresh_process(env, expected):
    clean = {k: v for k, v in os.environ.items() if k not in (ENV, "YOLOV5_DATTN_CPU_KERNEL")}
    out = subprocess.run([sys.executable, "-c", "from yolov5_dattn.nn import attention_kernel; print(attention_kernel())"],
                         env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
