"""Fused fp32 softmax attention for the CPU (`csrc/attention_cpu.cpp`), used by DAttention when it applies.

Why: DAttention's heads are narrow (8 heads on c2·e channels: 4 to 80 channels per head in the shipped models),
and PyTorch's fused CPU attention kernel spends most of its time outside the matmuls there. The kernel here keeps
each score block in L1 and folds the softmax into the same pass, forward and backward (flash attention: the
backward recomputes the probabilities from the saved log-sum-exp, so memory stays O(L·C)); it is compiled for
every width in `HEAD_DIMS`. `scripts/benchmark_attention.py --configs` times it against
`scaled_dot_product_attention` layer by layer.

How it is built: on first use, with the system C++ compiler (`$CXX`, else `c++`/`g++`), `-O3 -march=native
-fopenmp` (without `-fopenmp` where the compiler has no OpenMP), into `$YOLOV5_DATTN_CACHE` (default
`~/.cache/yolov5_dattn`, created 0700), keyed by the source, the compiler and the CPU; it takes a few seconds
once, and processes starting together build it once (a file lock). `kernel_cache` keeps it: a folder that
another user owns or that group or others can write is not used (one warning; the kernel is built in a private
temp folder instead), the size and SHA-256 recorded by the build must match (a truncated, foreign or garbage file
is rebuilt over with one warning, never loaded), and the bytes checked are the bytes loaded (same descriptor).
It needs no PyTorch headers: plain C entry points called through ctypes, which releases the GIL. The (batch,
head) pairs are spread over `torch.get_num_threads()` threads: OpenMP's, which with libgomp are PyTorch's own pool (see
`_run`), else Python threads.
Without a compiler, or with `YOLOV5_DATTN_CPU_KERNEL=0`, `supports` is False and DAttention uses
`scaled_dot_product_attention`: same results within fp32 rounding.

The two kernels are registered as PyTorch operators (`torch.ops.yolov5_dattn.attention_cpu` and its backward)
with FLOP formulas, so the profiler and `FlopCounterMode` see them like any other op.
"""
import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from . import kernel_cache

__all__ = ("FLAGS", "HEAD_DIMS", "OPENMP", "attention", "build", "cache_dir", "cache_problem", "library", "supports")

LOGGER = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("csrc") / "attention_cpu.cpp"
HEAD_DIMS = (4, 8, 12, 16, 20, 24, 32, 40, 48, 64, 80)  # compiled in the kernel (its DISPATCH): the shipped models' widths
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]
OPENMP = ["-fopenmp"]  # tried first; a compiler without OpenMP builds without it (see _run)


# ---- building and loading -----------------------------------------------------------------------------
def _compiler() -> Optional[str]:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU model and its flags (a cache shared between machines stays valid)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        import platform
        return platform.processor() + platform.machine()
    keep = [line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(sorted(set(keep)))


def cache_dir() -> Path:
    """Where the compiled kernel is kept: `$YOLOV5_DATTN_CACHE`, else `$XDG_CACHE_HOME`/~/.cache + yolov5_dattn."""
    if os.environ.get("YOLOV5_DATTN_CACHE"):
        return Path(os.environ["YOLOV5_DATTN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "yolov5_dattn"


def _cached_name(cxx: str) -> str:
    """The cached kernel's file name: keyed by the source, the compiler, the flags and the CPU."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + version.encode() + " ".join(FLAGS + OPENMP).encode()
                         + _cpu_signature().encode()).hexdigest()[:16]
    return f"attention_cpu-{key}.so"


def cache_problem(path: Path) -> Optional[str]:
    """Why the cached kernel at `path` must not be loaded (None: it matches the record its build wrote).

    Loading is what must not happen to a bad file: a truncated shared library crashes the process with SIGBUS
    when its missing pages are touched, and another library there lacks our symbols. The size and checksum
    recorded at build time catch truncation, garbage, an empty file and a foreign library alike. (Who may write
    there is `kernel_cache`'s check of the folder: a record proves a file complete, not who made it.)
    """
    try:
        expected = path.with_name(kernel_cache.record_name(path.name)).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return f"has no build record ({kernel_cache.record_name(path.name)})"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    try:
        actual = kernel_cache.fingerprint_of(fd)
    finally:
        os.close(fd)
    if actual != expected:
        return f"does not match its build record (size and SHA-256: {actual.split()[0]} bytes, expected " \
               f"{expected.split()[0]})"
    return None


def _compile(cxx: str, output: Path) -> None:
    """Compile the kernel to `output`, with OpenMP where the compiler has it; RuntimeError with its last line."""
    proc = subprocess.run([cxx, *FLAGS, *OPENMP, str(SOURCE), "-o", str(output)], capture_output=True, text=True)
    if proc.returncode != 0:
        proc = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", str(output)], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RuntimeError(f"{Path(cxx).name} failed: {last}")


def _open_kernel() -> kernel_cache.Cached:
    """The kernel from the cache, compiled first where it has no good build; see `kernel_cache.open_or_build`."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    cached = kernel_cache.open_or_build(cache_dir(), _cached_name(cxx), lambda out: _compile(cxx, out),
                                        what="CPU attention kernel")
    if cached.rebuilt:
        LOGGER.warning(f"yolov5-dattn: the cached CPU attention kernel {cached.path} {cached.rebuilt}; rebuilt it")
    return cached


def build() -> Path:
    """Compile the kernel unless this source/compiler/CPU has a good cached build; returns the library's path.

    A cached file that fails `cache_problem` (truncated, garbage, empty, another library) is rebuilt over, with
    one warning; a cache folder that others could write is not used (one warning: see `kernel_cache`). Raises
    RuntimeError (with the compiler's last line) when there is no compiler or it fails.
    """
    cached = _open_kernel()
    os.close(cached.fd)
    return cached.path


@lru_cache(maxsize=None)
def library() -> Optional[ctypes.CDLL]:
    """The loaded kernel, built on first call; None (logged once) where it is switched off or cannot be built.

    It is loaded from the descriptor its bytes were checked on, never reopened by name (see `kernel_cache`).
    That descriptor stays open as long as the process (ctypes never unloads a library): dlopen hands back an
    already-loaded library whose name matches, so the name `/proc/self/fd/N` must never come to mean another file.
    """
    if os.environ.get("YOLOV5_DATTN_CPU_KERNEL", "1") == "0":
        return None
    try:
        cached = _open_kernel()
        try:
            lib = ctypes.CDLL(kernel_cache.fd_path(cached.fd))
        except OSError:
            os.close(cached.fd)
            raise
        forward, backward, openmp = lib.attention_forward, lib.attention_backward, lib.attention_openmp
    except (OSError, RuntimeError, AttributeError) as e:  # AttributeError: a library without our entry points
        LOGGER.warning(f"yolov5-dattn: CPU attention kernel unavailable ({e}); using PyTorch's "
                       "scaled_dot_product_attention (slower: see scripts/benchmark_attention.py --configs)")
        return None
    ptr, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    forward.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, f32, i64, i64, i64]
    backward.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, f32, i64, i64, i64]
    forward.restype = backward.restype = openmp.restype = ctypes.c_int
    return lib


# ---- running on all threads ----------------------------------------------------------------------------
_pool_lock = threading.Lock()
_pools = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool per (process, size): a pool inherited through fork (DataLoader workers) has no threads."""
    key = (os.getpid(), workers)
    with _pool_lock:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(workers, thread_name_prefix="dattn-attention")
        return _pools[key]


def _run(fn, pairs: int, *args) -> None:
    """Call `fn(*args, first, last, threads)` over the pairs [0, pairs) on `torch.get_num_threads()` threads.

    Built with OpenMP, one call does it on OpenMP's threads: PyTorch's own pool, whose threads are still spinning
    from the matmul before (Python threads would compete with them for the cores). Otherwise our Python threads
    each take a few pairs at a time: on a shared machine one core often runs slower than the other, and a static
    half each would make the fast one wait.
    """
    workers = max(1, min(torch.get_num_threads(), pairs))
    if workers == 1 or library().attention_openmp():
        codes = [fn(*args, 0, pairs, workers)]
    else:
        step = max(1, pairs // (4 * workers))
        codes = list(_pool(workers).map(lambda first: fn(*args, first, min(first + step, pairs), 1),
                                        range(0, pairs, step)))
    if any(c == 1 for c in codes):
        raise MemoryError("yolov5-dattn CPU attention: out of memory for its key/value buffers")
    if any(c != 0 for c in codes):
        raise RuntimeError(f"yolov5-dattn CPU attention: kernel returned {codes}")


def _strides(q: Tensor, k: Tensor, v: Tensor, grad_out: Optional[Tensor] = None):
    """(row, batch) strides of q, k and v, then (row, batch, channel) of grad_out: the kernel's `strides`."""
    go = (grad_out.stride(1), grad_out.stride(0), grad_out.stride(2)) if grad_out is not None else (0, 0, 0)
    return (ctypes.c_int64 * 9)(q.stride(1), q.stride(0), k.stride(1), k.stride(0), v.stride(1), v.stride(0), *go)


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


# ---- the operators -----------------------------------------------------------------------------------------
# Defined with torch.library.Library, not torch.library.custom_op: the latter imports torch._dynamo on its first
# call, a slow import in every process. Autograd is an autograd.Function around the two operators.
_LIBRARY = torch.library.Library("yolov5_dattn", "DEF")
_LIBRARY.define("attention_cpu(Tensor q, Tensor k, Tensor v, int heads) -> (Tensor, Tensor)")
_LIBRARY.define("attention_cpu_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
                "int heads) -> (Tensor, Tensor, Tensor)")


def _check_arguments(op: str, heads: int, q: Tensor, k: Tensor, v: Tensor, **more: Tensor) -> None:
    """Raise RuntimeError, naming the argument, for any call the kernel cannot take: it gets raw pointers and
    reads q (B, M, C), k and v (B, N, C) through their row and batch strides with channels adjacent, so any other
    shape, dtype, device or channel stride would read outside the tensors. `more` are the backward's: grad_out
    (B, M, C, any strides), out (B, M, C) and lse (B, heads, M), both contiguous.
    """
    def fail(why: str) -> None:
        raise RuntimeError(f"yolov5_dattn.{op}: {why}")

    tensors = {"q": q, "k": k, "v": v, **more}
    for name, t in tensors.items():
        if t.device.type != "cpu" or t.dtype != torch.float32 or t.layout != torch.strided:
            fail(f"{name} must be a dense float32 CPU tensor, got {t.dtype} on {t.device} ({t.layout})")
    for name in ("q", "k", "v", "out", "grad_out"):
        t = tensors.get(name)
        if t is not None and t.dim() != 3:
            fail(f"{name} must be 3-d tokens (B, L, C), got shape {tuple(t.shape)}")
    B, M, C = q.shape
    if not isinstance(heads, int) or heads <= 0 or C % heads:
        fail(f"heads={heads} must be a positive divisor of q's {C} channels")
    if C // heads not in HEAD_DIMS:
        fail(f"heads={heads} gives {C // heads} channels per head (q has {C}), not one of HEAD_DIMS {HEAD_DIMS}")
    N = k.shape[1]
    if N == 0:
        fail("k and v must hold at least one token (N > 0)")
    expected = {"k": (B, N, C), "v": (B, N, C), "grad_out": (B, M, C), "out": (B, M, C), "lse": (B, heads, M)}
    for name, t in tensors.items():
        if name in expected and tuple(t.shape) != expected[name]:
            fail(f"{name} has shape {tuple(t.shape)}, expected {expected[name]} (q is {(B, M, C)}, "
                 f"k is (B, N, C) with N = {N}, heads={heads})")
    for name in ("q", "k", "v"):
        if tensors[name].stride(2) != 1 and tensors[name].numel() > 0:
            fail(f"{name}'s channels must be adjacent (stride 1), got strides {tensors[name].stride()}")
    for name in ("out", "lse"):
        if name in tensors and not tensors[name].is_contiguous():
            fail(f"{name} must be contiguous, got strides {tensors[name].stride()}")
    if library() is None:
        fail("the compiled kernel is not available here (see the warning logged); use "
             "torch.nn.functional.scaled_dot_product_attention")


def _attention_cpu(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tuple[Tensor, Tensor]:
    """softmax(q kᵀ / √d) v per head, on the token layout.

    Args:
        q: (B, M, C); k, v: (B, N, C) fp32, channels contiguous (rows may be strided); heads: C = heads · d.
    Returns:
        out (B, M, C) contiguous, and the base-2 log-sum-exp of each query's scores (B, heads, M) for backward.
    Raises RuntimeError naming the argument for any other call (see `_check_arguments`).
    """
    _check_arguments("attention_cpu", heads, q, k, v)
    B, M, C = q.shape
    out, lse = q.new_empty(B, M, C), q.new_empty(B, heads, M)
    d = C // heads
    _run(library().attention_forward, B * heads, _ptr(q), _ptr(k), _ptr(v), _strides(q, k, v), _ptr(out), _ptr(lse),
         heads, d, M, k.shape[1], d ** -0.5)
    return out, lse


def _attention_cpu_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                            heads: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of `attention_cpu` for q (B, M, C), k and v (B, N, C), all contiguous.

    grad_out (B, M, C) may have any strides: DAttention's arrives as the transpose of an NCHW map, and the kernel
    reads it in place rather than paying for a copy. Raises RuntimeError naming the argument for any other call.
    """
    _check_arguments("attention_cpu_backward", heads, q, k, v, grad_out=grad_out, out=out, lse=lse)
    B, M, C = q.shape
    N = k.shape[1]
    gq, gk, gv = q.new_empty(B, M, C), k.new_empty(B, N, C), v.new_empty(B, N, C)
    d = C // heads
    _run(library().attention_backward, B * heads, _ptr(q), _ptr(k), _ptr(v), _strides(q, k, v, grad_out), _ptr(out),
         _ptr(grad_out), _ptr(lse), _ptr(gq), _ptr(gk), _ptr(gv), heads, d, M, N, d ** -0.5)
    return gq, gk, gv


_LIBRARY.impl("attention_cpu", _attention_cpu, "CPU")
_LIBRARY.impl("attention_cpu_backward", _attention_cpu_backward, "CPU")


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, heads):
        out, lse = torch.ops.yolov5_dattn.attention_cpu(q, k, v, heads)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.heads = heads
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        return (*torch.ops.yolov5_dattn.attention_cpu_backward(grad_out, q, k, v, out, lse, ctx.heads), None)


# the same convention as flops.sdpa_flops: QKᵀ and AV, 2·M·N·C each; backward twice that (the recomputed QKᵀ is
# an implementation cost, not counted)
@register_flop_formula(torch.ops.yolov5_dattn.attention_cpu)
def _forward_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    B, M, C = q_shape
    return 4 * B * M * k_shape[1] * C


@register_flop_formula(torch.ops.yolov5_dattn.attention_cpu_backward)
def _backward_flops(grad_out_shape, q_shape, k_shape, *args, out_shape=None, **kwargs) -> int:
    B, M, C = q_shape
    return 8 * B * M * k_shape[1] * C


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)  # torch >= 2.3


# ---- for DAttention ----------------------------------------------------------------------------------------------
def supports(q: Tensor, k: Tensor, v: Tensor, heads: int) -> bool:
    """Whether `attention(q, k, v, heads)` runs here: CPU fp32 tokens (B, L, C), d = C / heads in HEAD_DIMS,
    channels contiguous, kernel available, and no graph being captured (torch.compile/export, TorchScript and
    ONNX export keep PyTorch's kernel, which they know how to represent)."""
    tensors: List[Tensor] = [q, k, v]
    capturing = (_is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()
                 or torch.onnx.is_in_onnx_export())
    return (not capturing
            and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() == 3 and t.stride(-1) == 1
                    for t in tensors)
            and q.shape[-1] % heads == 0 and q.shape[-1] // heads in HEAD_DIMS and k.shape[1] > 0 and q.shape[1] > 0
            and library() is not None)


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Multi-head softmax attention on tokens: q (B, M, C), k and v (B, N, C) -> (B, M, C). See `supports`."""
    return _Attention.apply(q, k, v, heads)
