"""--precision auto: bfloat16 compute where the device that trains computes it natively."""
from __future__ import annotations


def resolve_precision(precision: str, on_cpu: bool | None = None) -> str:
    """'auto' -> 'mixed_bfloat16' when the model computes on a CPU with native bfloat16,
    else 'float32'; other values as given. on_cpu: whether the model computes on the CPU
    (None: it does when TensorFlow sees no GPU).

    On a GPU, auto is float32: every GPU computes it natively, and bfloat16 has not been
    measured on one for this model (--precision mixed_bfloat16 asks for it).
    """
    if precision != "auto":
        return precision
    if on_cpu is None:
        on_cpu = not gpus()
    return "mixed_bfloat16" if on_cpu and cpu_has_native_bfloat16() else "float32"


def gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def cpu_has_native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True if the CPU has AMX or AVX-512 bfloat16 instructions (Linux; False elsewhere).

    On such CPUs oneDNN computes bfloat16 convolutions natively; without them bfloat16
    is emulated and slower than float32 (benchmarks/RESULTS.md).
    """
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
