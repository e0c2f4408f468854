"""Argon2 at a test's cost.

The server license's secrets are argon2 hashes with Django's parameters (100 MiB, two
passes): about 0.16 s a hash or a check, which the suite paid some thousands of times. The
tests keep the algorithm, the hash format and every check, at the smallest cost argon2
allows; tests/licensing/test_secret_cost.py checks the production parameters.
"""

from django.contrib.auth.hashers import Argon2PasswordHasher


class CheapArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 1
    memory_cost = 8  # KiB, argon2's minimum for one lane
    parallelism = 1
