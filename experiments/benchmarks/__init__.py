"""Benchmarks: against deepinv (``bench``), per device (``throughput``), against exact
posteriors (``gmm_benchmark``, ``posterior_variance``, ``sampler_accuracy``, ``sample``),
and gathering a sweep's runs (``gather``)."""
