"""Devices and numerics: which device a run uses, how precise its arithmetic is, and a record of both.

One policy for every model family and for training:

- ``--device auto`` (the default) takes the first CUDA device, else Apple's MPS, else the
  CPU. A device that is not there (``cuda`` on a machine without CUDA, ``cuda:1`` on a
  one-GPU machine, ``mps`` off Apple silicon) is a one-line :class:`InputError`, before any
  weights are read.
- ``fp32`` is IEEE float32 everywhere: TF32 is switched off for CUDA matrix products and
  for cuDNN convolutions and RNNs (torch lets cuDNN convolutions use TF32 by default, which
  moves LAION-CLAP's STFT log-mel by up to about 1 dB). ``fp16`` and ``bf16`` run the
  towers under :func:`torch.autocast` with the weights kept in float32: matrix products and
  convolutions compute in half precision, while the audio front ends (STFT, mel, log) run
  in float32 with autocast disabled, and the vectors leave the model in float32. The ops
  autocast leaves in float32 keep TF32 off too, so the only reduced precision in a run is
  the one ``--precision`` names.
- cuDNN is asked for deterministic kernels and no autotuning (``cudnn.benchmark`` off),
  so the same batches give the same vectors run after run, which ``--resume`` relies on.

:func:`run_numerics` applies these settings and returns them; :func:`device_identity`
describes the hardware and the libraries a run's vectors came from, for the provenance.
torch is imported when a function is called, not at import.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

from embedstore.errors import EmbedstoreError, InputError

AUTO = "auto"
DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
PRECISION_POLICY = ("autocast: fp32 weights; matrix products and convolutions in the named "
                    "precision; audio front ends and output vectors in float32; TF32 off")


class DeviceOutOfMemory(EmbedstoreError):
    """The device ran out of memory for one batch; a smaller batch size may fit."""


def resolve_device(spec: str | None = AUTO):
    """The torch device for ``spec``, checked against what this machine has.

    Parameters
    ----------
    spec : str or None
        ``"auto"`` (or None), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    torch.device
        With an explicit index for CUDA (``cuda`` means the current device).

    Raises
    ------
    InputError
        An unknown name, or a device this machine does not have.
    """
    import torch

    spec = AUTO if spec is None else str(spec).strip().lower()
    if spec == AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {spec!r}; use {DEVICE_HELP}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        return _checked_cuda(device, spec)
    if device.type == "mps":
        if not _mps_available():
            raise InputError(f"--device {spec}: Apple's MPS is not available on this machine; "
                             "use --device cpu or auto")
        return torch.device("mps")
    raise InputError(f"--device {spec}: {device.type} devices are not supported; use {DEVICE_HELP}")


def _checked_cuda(device, spec: str):
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA device found"
        raise InputError(f"--device {spec}: CUDA is not available here ({build}); "
                         "use --device cpu or auto")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= count:
        names = ", ".join(f"cuda:{i}" for i in range(count))
        raise InputError(f"--device {spec}: this machine has {count} CUDA device"
                         f"{'s' if count != 1 else ''} ({names})")
    return torch.device("cuda", index)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def run_numerics(precision: str) -> dict:
    """Apply the precision policy's global torch settings and return them as recorded.

    TF32 is off for CUDA matmuls and cuDNN in every precision (see the module docstring);
    cuDNN picks deterministic kernels without autotuning. These are process-wide torch
    settings: a run sets them before its first forward pass.
    """
    import torch

    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9: the per-backend API
        backends.cuda.matmul.fp32_precision = "ieee"
        backends.cudnn.conv.fp32_precision = "ieee"
        backends.cudnn.rnn.fp32_precision = "ieee"
    else:  # older torch: the legacy switches (mixing the two APIs is an error in newer torch)
        backends.cuda.matmul.allow_tf32 = False
        backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    backends.cudnn.benchmark = False
    backends.cudnn.deterministic = True
    return numerics_flags(precision)


def numerics_flags(precision: str | None = None) -> dict:
    """The numeric settings torch runs with now (as :func:`run_numerics` records them)."""
    import torch

    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision"):
        tf32_matmul = backends.cuda.matmul.fp32_precision == "tf32"
        tf32_conv = backends.cudnn.conv.fp32_precision == "tf32"
    else:
        tf32_matmul, tf32_conv = bool(backends.cuda.matmul.allow_tf32), bool(backends.cudnn.allow_tf32)
    flags = {
        "tf32_matmul": tf32_matmul,
        "tf32_cudnn": tf32_conv,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": bool(backends.cudnn.benchmark),
        "cudnn_deterministic": bool(backends.cudnn.deterministic),
    }
    if precision is not None:
        flags = {"precision": precision, "policy": PRECISION_POLICY, **flags}
    return flags


def autocast(device, precision: str):
    """The policy's autocast context for a forward pass: none in fp32."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype)


def full_precision(device):
    """A context that turns autocast off (front ends run in float32 inside an autocast pass)."""
    import torch

    return torch.autocast(torch.device(device).type, enabled=False)


def device_identity(device) -> dict:
    """What the vectors were computed on: the device and the numeric libraries that drive it.

    ``type`` and ``name`` identify the hardware (``--resume`` compares them); the versions
    say which kernels it could use.
    """
    import torch

    device = torch.device(device)
    identity = {"type": device.type, "name": _cpu_name()}
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        props = torch.cuda.get_device_properties(index)
        identity.update(
            index=index, name=props.name, uuid=str(getattr(props, "uuid", "")) or None,
            capability=f"{props.major}.{props.minor}", memory_bytes=int(props.total_memory),
            driver=_nvidia_driver(), cuda=torch.version.cuda,
            cuda_driver_api=_cuda_driver_api(),
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    elif device.type == "mps":
        identity.update(name=f"Apple MPS ({platform.machine()})", macos=platform.mac_ver()[0] or None)
    return identity


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version, from /proc (Linux) or NVML when installed."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        for word in text.split():
            if word.count(".") >= 1 and word.replace(".", "").isdigit():
                return word
    except OSError:
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # NVML absent or not initialisable: the version is simply unknown
        return None


def _cuda_driver_api() -> int | None:
    import torch

    getter = getattr(torch._C, "_cuda_getDriverVersion", None)
    try:
        return int(getter()) if getter else None
    except Exception:  # no driver loaded
        return None


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is torch's out-of-memory error (CUDA, MPS or the CPU allocator)."""
    import torch

    if isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def out_of_memory(device, batch_size: int, what: str = "--batch-size", resume_hint: str = "") -> DeviceOutOfMemory:
    """The one-line error for a batch that did not fit."""
    smaller = max(1, batch_size // 2)
    return DeviceOutOfMemory(f"out of memory on {device} with {what} {batch_size}; "
                             f"try {what} {smaller}{resume_hint}")


def same_hardware(saved: dict | None, current: dict) -> tuple[list[str], list[str]]:
    """Compare two :func:`device_identity` records.

    Returns
    -------
    refused, warned : list of str
        Differences that make vectors incomparable (device type, accelerator model), and
        differences that may change rounding only (CPU model, driver, CUDA, cuDNN).
    """
    saved = saved or {}
    refused, warned = [], []
    if saved.get("type") != current.get("type"):
        refused.append(f"device type {saved.get('type')!r}, now {current.get('type')!r}")
    elif current.get("type") != "cpu" and saved.get("name") != current.get("name"):
        refused.append(f"device {saved.get('name')!r}, now {current.get('name')!r}")
    elif saved.get("name") != current.get("name"):
        warned.append(f"CPU {saved.get('name')!r}, now {current.get('name')!r}")
    for key in ("capability", "driver", "cuda", "cudnn"):
        if not refused and saved.get(key) != current.get(key):
            warned.append(f"{key} {saved.get(key)!r}, now {current.get(key)!r}")
    return refused, warned


def synchronize(device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
