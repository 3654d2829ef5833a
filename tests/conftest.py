pytest_plugins = [
    "tests.fix_pg",
    "tests.fix_ingestd",
    "tests.fix_customer",
    "tests.fix_pusher",
    "tests.fix_faults",
    "tests.long_runs",
]
