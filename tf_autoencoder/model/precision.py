"""--precision auto: bfloat16 compute where it was measured faster than float32."""
from __future__ import annotations


def resolve_precision(precision: str, on_cpu: bool | None = None) -> str:
    """'auto' -> 'mixed_bfloat16' when the model computes on a CPU with bfloat16
    instructions (AMX or AVX-512 bfloat16), else 'float32'; other values as given.
    on_cpu: whether the model computes on the CPU (None: it does when TensorFlow sees no
    GPU).

    On a GPU, auto is float32: every GPU computes it natively, and bfloat16 has not been
    measured on one for this model (--precision mixed_bfloat16 asks for it).
    """
    if precision != "auto":
        return precision
    if on_cpu is None:
        on_cpu = not gpus()
    return "mixed_bfloat16" if on_cpu and cpu_has_bfloat16() else "float32"


def gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True if the CPU computes bfloat16 natively: AMX or AVX-512 bfloat16 instructions
    (Linux; False elsewhere).

    With either, mixed bfloat16 trained faster than float32 (benchmarks/RESULTS.md);
    without them oneDNN emulates bfloat16 (docs/speed.md).
    """
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
