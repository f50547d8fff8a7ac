"""TensorFlow's CPU thread pools, set for a worker process before TensorFlow starts its runtime."""
import tensorflow as tf


def set_threads(n: int) -> int:
    """Intra-op (Eigen) and inter-op pools; TF fixes both when its context starts, and raises if set later."""
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)
    return tf.config.threading.get_intra_op_parallelism_threads()
