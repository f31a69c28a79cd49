"""Code shared by every process (API, worker, trainer). Never imports TensorFlow."""
