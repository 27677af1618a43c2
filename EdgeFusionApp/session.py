"""One browser session in its own process: ``python -m EdgeFusionApp.session`` (started by the launcher).

The process serves the web app on a loopback port for the launcher to relay, accepts only the
WebSocket clients that present the session's key (read from a file the launcher wrote, never
from the command line, which other local users can see), and stops once its browser has gone
(trame's timeout). The launcher owns the session's folder and removes it when the process ends.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Seconds without a connected browser after which the session ends.
IDLE_TIMEOUT_S = 300


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m EdgeFusionApp.session")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--work-folder", type=Path, required=True)
    parser.add_argument("--max-upload-bytes", type=int, required=True)
    parser.add_argument("--idle-timeout", type=int, default=IDLE_TIMEOUT_S)
    return parser.parse_known_args(argv)[0]


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    from trame.app import get_server

    from .webapp import EdgeFusionWebApp

    server = get_server("edgefusion", client_type="vue3")
    # trame reads '--authKeyFile' (the session key) from the command line it was started with.
    app = EdgeFusionWebApp(server, work_folder=arguments.work_folder, max_upload_bytes=arguments.max_upload_bytes)
    app.server.start(port=arguments.port, host="127.0.0.1", open_browser=False, show_connection_info=False,
                     timeout=arguments.idle_timeout, disable_logging=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
