pytest_plugins = ["tests.fix_pg"]
