"""Every Python process of a third-party suite's run stands in the same way.

pytest loads asyncore_standin only in the processes it starts itself; a child
started by multiprocessing's spawn or forkserver method (the default from 3.14
on Linux) runs no plugin, and would import the reference modules. This module,
on the same PYTHONPATH, runs at every interpreter's start-up.
"""

import os

if os.environ.get("ASYNCORE_STANDIN") == "fastcore":
    import fastcore

    fastcore.install()
