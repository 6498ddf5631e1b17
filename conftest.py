pytest_plugins = ["mechclaims.plugin"]
