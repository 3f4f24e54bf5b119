"""One module per ``aion-engine`` sub-command.

Each module defines ``HELP`` (one line), ``setup_parser(parser)`` and ``run_cli(args) -> int``;
the Python API it calls lives in the engine's packages so notebooks and the CLI share one path.
Heavy imports happen inside ``run_cli`` so ``aion-engine --help`` starts fast.
"""
