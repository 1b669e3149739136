"""ordo's tests.  A package so that store suites can share `tests.proxy_contract`."""

import pytest

# The contract's asserts live outside a test_*.py file; rewrite them too, so a
# failing check shows the values it compared.
pytest.register_assert_rewrite("tests.proxy_contract")
