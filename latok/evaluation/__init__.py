"""Measuring latok: TokenBench metrics (``metrics``, ``lpips``), datasets, the rate-distortion
evaluation (``evaluate``), the allocator benchmark (``bench``, ``baselines``), visualisations
(``viz``) and command reports (``reports``)."""
