"""Collection rules for the whole tree (the tests' fixtures live in tests/conftest.py).

``ntmdist/integrations/sbi.py`` needs the ``sbi`` package, an optional extra: where it is not
installed, its doctest is not collected (``tests/test_integrations_sbi.py`` says so by skipping
its sbi tests and checks the error that names the extra)."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("sbi") else ["ntmdist/integrations/sbi.py"]
