"""In the image: import the module behind each `kiln-trainer` subcommand named on the command line.

`kiln-trainer <sub> --help` does not import a config-file subcommand's module (they are lazy), so
this is what shows a missing dependency before a pod does.
"""

import importlib
import sys

from kiln_trainer import cli

for sub in sys.argv[1:]:
    flag_commands = getattr(cli, "_FLAG_COMMANDS", {})
    module = flag_commands.get(sub) or cli.build_parser().parse_args([sub, "--config", "-"]).target.split(":")[0]
    importlib.import_module(module)
    print(f"ok {sub} {module}")
