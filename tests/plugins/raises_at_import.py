"""A plugin whose import fails with something other than ImportError, for tests/test_hostile_cli.py."""

raise RuntimeError("this plugin is broken on purpose\nsecond line of the message")
