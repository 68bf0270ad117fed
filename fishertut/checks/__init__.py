"""Every rule on the arguments, the model and the batches of the public functions, each in one place.

* :mod:`~fishertut.checks.arguments`: plain arguments (counts, fractions, labels, ``path``, ``process_group``,
  ``generator``, the estimator and how it combines with ``targets``, ``samples_per_input`` and ``minibatch``);
* :mod:`~fishertut.checks.models`: the model (device, dtype, finite parameters, eval mode) and that autograd
  reaches every trainable parameter it uses;
* :mod:`~fishertut.checks.batches`: each batch and what the model makes of it (dtype, device, finite values,
  the output's kind, rows independent of the batch, probabilities where logits are expected);
* :mod:`~fishertut.checks.values`: value checks read from an accelerator once per pass;
* :mod:`~fishertut.checks.results`: no result holds NaN or infinity.

Every error names the argument or module at fault, what was expected, and what to do instead.
"""
