"""Diffusion policies steered by value guidance: environments (:mod:`.envs`), offline data
sets (:mod:`.datasets`, built by the ``offline`` app), linear ARS policies
(:mod:`.random_search`, trained by the ``ars`` app), training (:mod:`.training`), the
methods (:mod:`.methods`), scores (:mod:`.scoring`), reports (:mod:`.report`), saved
policies (:mod:`.saved`), and the ``steering`` app."""
