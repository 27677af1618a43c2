"""``edgefusion app``: the address a browser opens; one session process per browser session.

Security model (docs/web-app.md):

* the server binds to 127.0.0.1 unless ``--allow-remote`` is given with another ``--host``;
* every request carries the server's secret token: in the printed URL (``?token=...``), then
  in a cookie that the first request sets (HttpOnly, SameSite=Strict); without it, 403;
* each visit to ``/`` starts a new session process (its own scene and private 0700 folder) on a
  loopback port and sends the browser to ``/s/<session id>/``; the launcher relays that path and
  its WebSocket to the process. The session's WebSocket also needs the session's own key, which
  the launcher hands only to that browser, so no other browser (or local user) can reach it;
* a session's folder (uploads, worker jobs, downloads) is removed when its process ends, and
  every folder and process when the launcher stops. Nothing from the browser ever names a file.

TLS is not done here: put a TLS-terminating reverse proxy in front of a server reachable by others.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hmac
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from .uploads import DEFAULT_MAX_UPLOAD_BYTES

TOKEN_COOKIE = "edgefusion_token"
LOOPBACK = "127.0.0.1"
#: Seconds a new session process may take to listen (importing VTK, Slicer and torch dominates).
SESSION_START_TIMEOUT_S = 120
#: How often ended session processes are looked for (their folders are then removed), in seconds.
REAP_INTERVAL_S = 10
#: Relayed WebSocket messages up to this size (wslink splits larger ones into 4 MiB chunks).
MAX_RELAYED_MESSAGE = 64 * 1024**2


@dataclasses.dataclass
class Session:
    """One browser session: its process, loopback port, WebSocket key and private folder."""

    identifier: str
    port: int
    key: str
    folder: Path
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgefusion app", description="Start the EdgeFusion web app.")
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``edgefusion app`` (also used by the CLI's subcommand)."""
    parser.add_argument("--host", default=LOOPBACK, help="address to listen on (default 127.0.0.1; others need --allow-remote)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow an address other than loopback: anyone with the printed URL can use the app; "
                             "put a TLS reverse proxy in front")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_BYTES / 1e6,
                        help="largest file (or unpacked zip) a browser may upload, in MB (default %(default).0f)")
    parser.add_argument("--token", default=None, help=argparse.SUPPRESS)  # tests fix the token; users get a random one


def check_host(host: str, allow_remote: bool) -> None:
    """A non-loopback address needs ``--allow-remote`` (InputError otherwise)."""
    import ipaddress

    from EdgeFusionLib.errors import InputError

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise InputError(f"listening on {host} lets other machines reach the app; add --allow-remote to mean it "
                         "(and put a TLS reverse proxy in front)")


class Launcher:
    """The relay: token check, one session process per visit, HTTP and WebSocket forwarding."""

    def __init__(self, token: str, max_upload_bytes: int, folder: Path):
        self.token = token
        self.max_upload_bytes = max_upload_bytes
        self.folder = folder  # private (0700): every session's folder lies inside
        self.sessions: dict[str, Session] = {}

    # ---------------------------------------------------------------- sessions

    async def start_session(self) -> Session:
        identifier = secrets.token_urlsafe(16)
        folder = Path(tempfile.mkdtemp(prefix="session-", dir=self.folder))
        key = secrets.token_urlsafe(24)
        key_file = folder / "key"
        key_file.write_text(key, encoding="utf-8")
        key_file.chmod(0o600)
        port = free_port()
        command = [sys.executable, "-m", "EdgeFusionApp.session", "--port", str(port), "--work-folder", str(folder / "work"),
                   "--max-upload-bytes", str(self.max_upload_bytes), "--authKeyFile", str(key_file)]
        (folder / "work").mkdir(mode=0o700)
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, cwd=folder)
        session = Session(identifier, port, key, folder, process)
        try:
            await self._wait_until_listening(session)
        except BaseException:
            session.stop()
            raise
        self.sessions[identifier] = session
        return session

    @staticmethod
    async def _wait_until_listening(session: Session) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SESSION_START_TIMEOUT_S
        while loop.time() < deadline:
            if session.process.poll() is not None:
                raise RuntimeError(f"the session process stopped at start (exit code {session.process.returncode})")
            try:
                _, writer = await asyncio.open_connection(LOOPBACK, session.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.2)
        raise TimeoutError(f"the session process did not start within {SESSION_START_TIMEOUT_S} s")

    def live_session(self, identifier: str) -> Session | None:
        session = self.sessions.get(identifier)
        if session is not None and session.process.poll() is not None:  # ended (browser gone): clean up
            session.stop()
            del self.sessions[identifier]
            return None
        return session

    def reap(self) -> None:
        """Forget the sessions whose process has ended (its browser left), removing their folders."""
        for identifier in list(self.sessions):
            self.live_session(identifier)

    async def _reaper(self, app):
        """While the server runs, reap ended sessions every ``REAP_INTERVAL_S`` (an aiohttp cleanup context)."""

        async def reap_forever():
            while True:
                await asyncio.sleep(REAP_INTERVAL_S)
                self.reap()

        task = asyncio.get_running_loop().create_task(reap_forever())
        yield
        task.cancel()

    def stop(self) -> None:
        for session in self.sessions.values():
            session.stop()
        self.sessions.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    # ---------------------------------------------------------------- HTTP

    def authorised(self, request) -> bool:
        offered = request.query.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
        return hmac.compare_digest(offered.encode(), self.token.encode())

    def application(self):
        from aiohttp import web

        @web.middleware
        async def require_token(request, handler):
            if not self.authorised(request):
                return web.Response(status=403, text="EdgeFusion: open the address with its token, as printed when the server started.\n")
            return await handler(request)

        app = web.Application(middlewares=[require_token], client_max_size=MAX_RELAYED_MESSAGE)
        app.router.add_get("/", self.new_session)
        app.router.add_route("*", "/s/{identifier}/{tail:.*}", self.relay)
        app.cleanup_ctx.append(self._reaper)
        return app

    async def new_session(self, request):
        from aiohttp import web

        session = await self.start_session()
        response = web.Response(status=302, headers={"Location": f"/s/{session.identifier}/?secret={session.key}"})
        response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return response

    async def relay(self, request):
        from aiohttp import web

        session = self.live_session(request.match_info["identifier"])
        if session is None:
            return web.Response(status=404, text="EdgeFusion: this session has ended; open the server's address again.\n")
        tail = request.match_info["tail"]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._relay_websocket(request, session, tail)
        return await self._relay_http(request, session, tail)

    async def _relay_http(self, request, session: Session, tail: str):
        import aiohttp
        from aiohttp import web

        query = {name: value for name, value in request.query.items() if name not in ("token", "secret")}
        async with aiohttp.ClientSession() as client:
            async with client.request(request.method, f"http://{LOOPBACK}:{session.port}/{tail}", params=query,
                                      data=await request.read()) as upstream:  # the process's own redirects are followed here
                body = await upstream.read()
                headers = {name: value for name, value in upstream.headers.items()
                           if name.lower() in ("content-type", "cache-control", "last-modified", "etag")}
                return web.Response(status=upstream.status, body=body, headers=headers)

    async def _relay_websocket(self, request, session: Session, tail: str):
        import aiohttp
        from aiohttp import web

        browser = web.WebSocketResponse(max_msg_size=MAX_RELAYED_MESSAGE)
        await browser.prepare(request)
        async with aiohttp.ClientSession() as client:
            async with client.ws_connect(f"ws://{LOOPBACK}:{session.port}/{tail}", max_msg_size=MAX_RELAYED_MESSAGE) as upstream:

                async def pump(source, destination):
                    async for message in source:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            await destination.send_str(message.data)
                        elif message.type == aiohttp.WSMsgType.BINARY:
                            await destination.send_bytes(message.data)
                        else:
                            break
                    await destination.close()

                await asyncio.gather(pump(browser, upstream), pump(upstream, browser), return_exceptions=True)
        return browser


def serve(host: str = LOOPBACK, port: int = 0, allow_remote: bool = False, max_upload_mb: float = DEFAULT_MAX_UPLOAD_BYTES / 1e6,
          token: str | None = None, announce=print) -> None:
    """Run the launcher until interrupted; ``announce`` receives the URL to open."""
    from aiohttp import web

    check_host(host, allow_remote)
    token = token or secrets.token_urlsafe(24)
    port = port or free_port(host)
    folder = Path(tempfile.mkdtemp(prefix="EdgeFusionApp-"))  # 0700: patient images stay private
    launcher = Launcher(token, int(max_upload_mb * 1e6), folder)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/?token={token}"

    async def listen():
        runner = web.AppRunner(launcher.application(), access_log=None, handle_signals=True, shutdown_timeout=5)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        announce(f"EdgeFusion web app: {url}", flush=True)  # only once it listens: tests and scripts wait for this line
        announce("Open this address in a browser; stop the server with Ctrl+C.", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(listen())
    except KeyboardInterrupt:
        pass
    finally:
        launcher.stop()


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    return run(arguments)


def run(arguments: argparse.Namespace) -> int:
    """Start from parsed arguments (``edgefusion app`` and ``python -m EdgeFusionApp``)."""
    serve(arguments.host, arguments.port, arguments.allow_remote, arguments.max_upload_mb, arguments.token)
    return 0
