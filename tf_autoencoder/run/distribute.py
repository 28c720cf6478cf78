"""Training on several devices or machines: TensorFlow's tf.distribute strategies.

  none          the default strategy: one device
  mirrored      tf.distribute.MirroredStrategy over every local GPU, or over
                `cpu_replicas` logical devices split from the CPU
  multi_worker  tf.distribute.MultiWorkerMirroredStrategy over the workers TF_CONFIG lists

CPU replicas each run their ops on 1/N of the cores. One device stays the default:
benchmarks/RESULTS.md has what replicas gained end to end (nothing, where measured).

`--batch_size` is the global batch: Keras' fit splits every batch across the replicas
and sums their gradients, and the optimizer's step counter advances once per global
step. Only the chief writes model_dir; the other workers write to a scratch folder
(training.train).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import ConfigError, RunError

if TYPE_CHECKING:  # imported for real only once the input has been checked
    import tensorflow as tf

# The roles MultiWorkerMirroredStrategy trains with; TF_CONFIG may name no other.
WORKER_ROLES = ("chief", "worker")


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class WorkerRole:
    """This process's place in a multi-worker cluster, read from TF_CONFIG."""
    task_type: str  # "chief" or "worker"
    task_index: int
    num_workers: int  # every process that trains: the chief, if any, and the workers
    has_chief_task: bool  # the cluster names a "chief"; else worker 0 is the chief

    @property
    def is_chief(self) -> bool:
        """The chief writes model_dir (TensorFlow's rule, as in should_checkpoint)."""
        if self.has_chief_task:
            return self.task_type == "chief"
        return self.task_index == 0


def read_tf_config(environ=os.environ) -> WorkerRole:
    """Parses TF_CONFIG, without TensorFlow, so that a bad one is refused before it loads.
    Raises ConfigError saying what is wrong."""
    text = environ.get("TF_CONFIG")
    if not text:
        raise ConfigError("--distribute multi_worker needs TF_CONFIG, the JSON that lists the "
                          'cluster\'s workers and this one\'s task: {"cluster": {"worker": '
                          '["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}')
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        task_type, task_index = task["type"], task["index"]
        jobs = {name: list(addresses) for name, addresses in cluster.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"TF_CONFIG is not a cluster and task as JSON ({type(e).__name__}: "
                          f"{e}): see --help and the README") from None
    others = sorted(set(jobs) - set(WORKER_ROLES))
    if others:
        raise ConfigError(f"TF_CONFIG lists {', '.join(others)} tasks: multi_worker training "
                          f"takes only {' and '.join(WORKER_ROLES)} tasks")
    if len(jobs.get("chief", [])) > 1:
        raise ConfigError(f"TF_CONFIG lists {len(jobs['chief'])} chief tasks: give at most one")
    if task_type not in jobs or not isinstance(task_index, int) \
            or not 0 <= task_index < len(jobs[task_type]):
        raise ConfigError(f"TF_CONFIG's task {task_type!r} {task_index!r} is not in its cluster "
                          f"{jobs}")
    return WorkerRole(task_type, task_index, num_workers=sum(len(a) for a in jobs.values()),
                      has_chief_task="chief" in jobs)


def make_strategy(config: Config) -> "tf.distribute.Strategy":
    """The strategy `config.distribute` names. Call it before TensorFlow runs anything:
    logical devices and the cluster can only be set up at start-up. Raises RunError, in
    one line, when TensorFlow cannot set it up (e.g. a TF_CONFIG port already in use)."""
    import tensorflow as tf

    if config.distribute == "none":
        return tf.distribute.get_strategy()
    try:
        if config.distribute == "multi_worker":
            return _multi_worker_strategy()
        if config.cpu_replicas:
            return _cpu_replicas_strategy(config.cpu_replicas)
        return _mirrored_strategy()
    except (RuntimeError, ValueError, tf.errors.OpError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunError(f"cannot set up --distribute {config.distribute}: {first_line}") from None


def _cpu_replicas_strategy(replicas: int) -> "tf.distribute.Strategy":
    """MirroredStrategy over `replicas` logical devices split from the CPU. Each op gets
    an equal share of the cores (at least one thread), so the replicas run side by side
    instead of queueing for the same threads."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    tf.config.threading.set_intra_op_parallelism_threads(max(1, cpu_cores() // replicas))
    return _mirrored_strategy([device.name for device in tf.config.list_logical_devices("CPU")])


def _mirrored_strategy(devices: list[str] | None = None) -> "tf.distribute.Strategy":
    """MirroredStrategy over `devices` (default: every GPU), taking one `reduce` call
    of Keras 3 that it fails: each `evaluate` averages its first batch over the replicas,
    only to learn the shapes it builds the model with. A batch split unevenly (the last,
    partial batch of a split smaller than one batch) gives the replicas tensors of
    different shapes, which cannot be averaged; that call gets the first replica's
    tensors, which have the shapes it needs."""
    import tensorflow as tf

    class KerasMirroredStrategy(tf.distribute.MirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            def uneven(v):
                shapes = {tuple(t.shape) for t in self.experimental_local_results(v)}
                return len(shapes) > 1

            if axis is None and any(uneven(v) for v in tf.nest.flatten(value)):
                return tf.nest.map_structure(
                    lambda v: self.experimental_local_results(v)[0], value)
            return super().reduce(reduce_op, value, axis)

    return KerasMirroredStrategy(devices)


def _multi_worker_strategy() -> "tf.distribute.Strategy":
    """MultiWorkerMirroredStrategy, taking two kinds of `reduce` call that Keras 3's fit
    makes and TensorFlow refuses with several workers (keras-team/keras#20585): a
    nested value (the first batch, to build the model) and a scalar with axis=0 (every
    loss and metric), which it reduces across the replicas alone."""
    import tensorflow as tf

    class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            def reduce_one(v):
                rank = self.experimental_local_results(v)[0].shape.rank
                return super(KerasMultiWorkerMirroredStrategy, self).reduce(
                    reduce_op, v, axis=None if rank == 0 else axis)

            return tf.nest.map_structure(reduce_one, value)

    return KerasMultiWorkerMirroredStrategy()


def describe(strategy: "tf.distribute.Strategy") -> str:
    """One line: the strategy, its replicas (on CPUs, their threads per op) and, for
    several workers, this one's task; "one device" for TensorFlow's default strategy."""
    import tensorflow as tf

    if not isinstance(strategy, (tf.distribute.MirroredStrategy,
                                 tf.distribute.MultiWorkerMirroredStrategy)):
        return "one device"  # the default strategy, which has no worker_devices to list
    devices = strategy.extended.worker_devices
    name = "MultiWorkerMirroredStrategy" if is_multi_worker(strategy) else "MirroredStrategy"
    text = (f"{name}, {strategy.num_replicas_in_sync} replicas in sync "
            f"({', '.join(devices)} here)")
    if all("CPU" in device for device in devices):
        threads = tf.config.threading.get_intra_op_parallelism_threads() or cpu_cores()
        text += f", {threads} thread{'s' if threads > 1 else ''} per op"
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.task_type:
        role = "the chief" if is_chief(strategy) else "not the chief: writes nothing to model_dir"
        text += f"; this is {resolver.task_type} {resolver.task_id}, {role}"
    return text


def is_multi_worker(strategy: "tf.distribute.Strategy") -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: "tf.distribute.Strategy") -> bool:
    """Whether this process writes the run's outputs (always, without several workers)."""
    return strategy.extended.should_checkpoint


def chief_value(strategy: "tf.distribute.Strategy", value: int) -> int:
    """The chief's `value` on every worker (its own without several workers): a variable
    created in a MultiWorkerMirroredStrategy's scope starts from the chief's initial value
    on every worker. Every worker must call it, in the same order."""
    import tensorflow as tf

    with strategy.scope():
        shared = tf.Variable(value, dtype=tf.int64, trainable=False)
    return int(shared.numpy())


def check_workers_agree(strategy: "tf.distribute.Strategy", value: int, what: str,
                        advice: str) -> None:
    """Raises RunError on every worker, with one line naming `what` and giving `advice`,
    unless every worker passes the same `value`. Every worker must call it, in the same
    order."""
    import tensorflow as tf

    if not is_multi_worker(strategy):
        return
    chief = chief_value(strategy, value)

    @tf.function
    def replicas_that_differ():
        differs = tf.constant(float(value != chief))  # collectives reduce floats anywhere
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, differs)

    if int(strategy.experimental_local_results(strategy.run(replicas_that_differ))[0]):
        raise RunError(f"the workers see different {what} (the chief: {chief}, this worker: "
                      f"{value}): {advice}")
