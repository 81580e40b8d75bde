"""The lab's subcommands of ``repadapter``: ``demo``, ``pretrain``, ``data build``, ``bench ...``,
``verify``, ``switch-time`` and ``support-table``.

The library's command line does not import this package: pyproject.toml declares each command
in the entry-point group ``repadapter.commands`` (the name is the command's words joined by dots,
the object adds its parser to the group's subcommands), and `repadapter.cli` loads one only when
that command runs.
"""
