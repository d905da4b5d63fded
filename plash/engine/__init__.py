"""The trio build engine: plans a build as a DAG of layer jobs and runs it.

Every module that imports httpx is in this package, so this runs first:
httpx's __init__ imports its command-line client (httpx._main), which in
turn imports click, pygments, rich.syntax, rich.progress and rich.table
whenever they are installed, as they are beside plash. plash never runs that
client, and those imports cost about 60 ms on each command that downloads.
A None in sys.modules makes `import httpx._main` fail with ImportError,
which httpx catches: its `httpx.main` is then a stub saying the CLI is not
installed. (tests/unit/test_architecture.py checks that httpx is imported nowhere
else and still works.)
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None: "do not import", as documented
