pytest_plugins = ["tests.fix_pg", "tests.fix_ingestd", "tests.fix_pusher"]
