import os

from hypothesis import HealthCheck, settings

# deadline=None: a 2-core shared machine has noisy timings; max_examples keeps the default run short.
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
